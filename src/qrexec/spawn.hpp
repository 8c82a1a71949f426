// Starting a service or command as a given user with its stdio on pipes.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "qrexec/unique_fd.hpp"

namespace aerie::qrexec {

struct SpawnRequest {
    std::vector<std::string> argv;
    std::vector<std::string> env;      // complete environment, "K=V"
    std::optional<std::string> user;   // switch to this user (needs root); nullopt: stay
    std::string cwd;                   // empty: the user's home, else "/"
    bool null_stdio = false;           // stdin/stdout/stderr to /dev/null, no pipes
    bool inherit_stderr = false;       // the child writes to our stderr (no stderr pipe)
    bool stdio_sockets = false;        // stdin and stdout on socket pairs (as Qubes' services), not pipes
    bool inherit_stdout = false;       // the child writes to our stdout (no stdout pipe)
    std::string argv0;                 // the program's argv[0] if not argv[0] (its path)
};

struct Spawned {
    pid_t pid = -1;
    UniqueFd stdin_w;   // write end of the child's stdin
    UniqueFd stdout_r;  // read end of its stdout
    UniqueFd stderr_r;  // read end of its stderr
};

// Throws std::runtime_error naming what failed (unknown user, fork, pipe).
// An exec failure shows as exit code 127 of the child.
Spawned spawn_process(const SpawnRequest& request);

// The name of the user this process runs as.
std::string current_user_name();

}  // namespace aerie::qrexec
