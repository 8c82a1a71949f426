// Runs the service side of a call on this machine: parses the command line,
// finds the RPC service (executable, Unix socket or /dev/tcp link) or runs a
// plain command, and streams its stdio over the data channel. The agent uses
// it inside a qube; the qrexec daemon uses it for calls that target dom0.
#pragma once

#include <asio.hpp>

#include <functional>
#include <map>
#include <memory>
#include <string>

#include "qrexec/child_reaper.hpp"
#include "qrexec/data_pump.hpp"
#include "qrexec/service_config.hpp"

namespace aerie::qrexec {

class LocalServiceRunner {
public:
    LocalServiceRunner(asio::io_context& io, ChildReaper& reaper,
                       CmdlineUser user_mode = CmdlineUser::Absent);

    // Runs `cmdline` with its stdio on `channel` (the service end of a data
    // channel); done(exit code) when everything is sent. just_exec
    // (MSG_JUST_EXEC): stdio to /dev/null; the channel carries only the
    // exit code of starting it (0 once started, 127/125 as for a call).
    void start(const std::string& cmdline, UniqueFd channel, std::function<void(int)> done,
               bool just_exec = false);

    // The user that "DEFAULT" stands for (when the daemon did not replace it).
    std::string default_user;
    // The service's stderr is this process's own (qrexec-client serving a
    // qube's call to dom0, as Qubes'); the channel carries none.
    bool keep_stderr_local = false;
    // Sent as the service's first output (qrexec-client -p).
    std::string prefix;
    // The shell that runs a plain command (Qubes' dom0 side uses bash).
    std::string shell = "/bin/sh";
    // Services get QREXEC_AGENT_PID (this process), to which they may send
    // SIGUSR1 to use their stdin socket both ways (see use_stdin_socket).
    bool announce_agent_pid = false;
    // A call that failed before its service ran, or whose socket service
    // hung up early, lingers until the caller closes (DataPump::Local::linger,
    // linger_after_hangup): so in a long-lived agent or daemon; a one-call
    // process (qrexec-client) ends at once instead.
    bool lingers = true;

    // SIGUSR1 came from `sender`: the service it belongs to (the sender or
    // its nearest ancestor that is a running service) switches its output
    // to its stdin socket. Unknown senders are ignored.
    void use_stdin_socket(pid_t sender);

private:
    void report_just_exec(UniqueFd channel, int code, std::function<void(int)> done);
    void fail(UniqueFd channel, int code, const std::string& why, std::function<void(int)> done);
    void run_process(const std::vector<std::string>& argv, const std::vector<std::string>& env,
                     const std::string& user, UniqueFd channel, std::function<void(int)> done,
                     bool just_exec);
    void run_socket(UniqueFd sock, const ParsedCmdline& cmd, const RpcConfig& config,
                    bool send_descriptor, UniqueFd channel, std::function<void(int)> done);

    asio::io_context& io_;
    ChildReaper& reaper_;
    CmdlineUser user_mode_;
    std::map<pid_t, std::weak_ptr<DataPump>> running_;  // service processes
};

}  // namespace aerie::qrexec
