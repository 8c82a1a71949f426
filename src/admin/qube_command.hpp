// Runs a command in a running qube the way dom0 does (qrexec-client -d QUBE
// CMDLINE), on aeried's loop without blocking it: the command's stdout is
// collected (bounded), its exit code reported, a timeout kills it. Used for
// qubes.WaitForRunningSystem of preloads and the Qubes Air relays' calls.
#pragma once

#include <asio/io_context.hpp>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>

namespace aerie::admin {

struct QubeCommand {
    std::filesystem::path bin_dir;            // where qrexec-client is
    std::filesystem::path qrexec_socket_dir;  // the qrexec daemons' sockets
    std::string qube;
    std::string cmdline;                      // "USER:COMMAND" or "USER:QUBESRPC SERVICE SOURCE"
    std::chrono::milliseconds timeout{60000};
    size_t max_output = 64 * 1024;            // more is dropped
};

struct QubeCommandResult {
    int exit_code = -1;      // -1: not run, killed by a signal, or timed out
    bool timed_out = false;
    std::string output;      // stdout (stderr goes to aeried's)
    std::string error;       // why it could not run, when it could not
};

// `done` runs on the loop once the command has ended and its output is read.
void run_in_qube(asio::io_context& io, QubeCommand command, std::function<void(QubeCommandResult)> done);

}  // namespace aerie::admin
