// The caller's side of a data channel as qrexec-client-vm runs it (Qubes R4.3
// behaviour): one blocking poll loop that moves the service's stdout to a
// local descriptor, local input to the service's stdin, its stderr to ours,
// and ends with the service's exit code. With a local program, the program's
// exit is watched too, and SIGUSR1 from it switches the input to its stdin
// socket (one socket both ways).
#pragma once

#include <sys/types.h>

#include <string>

#include "qrexec/unique_fd.hpp"

namespace aerie::qrexec {

struct CallerStreams {
    int to_local = -1;           // where the service's stdout goes (written)
    int from_local = -1;         // what goes to the service's stdin (read); may equal to_local
    pid_t local_pid = 0;         // a local program to wait for, 0: none
    bool filter_stdout = false;  // replace bytes that are not printable ASCII with '_'
    bool filter_stderr = false;
    std::string prefix;  // sent as stdin before anything read locally
};

// Installs the SIGCHLD and SIGUSR1 handlers run_caller relies on (before the
// local program is started, so no signal is missed).
void prepare_caller_signals();

// Runs the call over `channel` (HELLO first). Returns, as qrexec-client-vm
// exits: the service's exit code when it is not 0, else the local program's
// (0 without one); -1 when the channel broke before the exit code came.
// Takes ownership of the channel, not of the local descriptors.
int run_caller(UniqueFd channel, const CallerStreams& streams);

// Replaces what Qubes' clients filter on a terminal: bytes outside printable
// ASCII other than tab, newline, carriage return, backspace and bell.
void replace_unprintable(char* data, size_t len);

}  // namespace aerie::qrexec
