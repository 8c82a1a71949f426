#include "qrexec/session_wait.hpp"

#include <unistd.h>

#include "qrexec/log_lines.hpp"
#include "qrexec/service_config.hpp"
#include "qrexec/spawn.hpp"
#include "qrexec/vchan.hpp"

namespace aerie::qrexec {

namespace {
// Calls held at once; past this a call goes on without waiting (logged).
constexpr size_t kMaxHeld = 256;
}  // namespace

bool SessionWait::defer(const std::string& cmdline, const std::string& default_user,
                        std::function<void()> run) {
    auto cmd = parse_cmdline(cmdline, nullptr, CmdlineUser::Required);
    if (!cmd || !cmd->is_qubesrpc) return false;
    auto config = load_rpc_config(cmd->service_and_arg, rpc_config_path_from_env());
    if (!config || !should_wait_for_session(*cmd, *config))
        return false;  // a bad config fails the call later
    if (held_.size() >= kMaxHeld) {
        log_agent_line("too many calls waiting for the session, not waiting for " + cmd->service_and_arg);
        return false;
    }
    // Held before the waiter starts: a qubes.WaitForSession that has ended
    // already when it is watched releases the held calls at once (then
    // `run` has run when this returns).
    held_.push_back(std::move(run));
    if (!waiting_) {
        std::string user = effective_user(*cmd, *config);
        if (user.empty() || user == "DEFAULT") user = default_user;
        waiting_ = true;
        if (!start_waiter(cmd->source, user)) {
            waiting_ = false;
            run = std::move(held_.back());
            held_.pop_back();
            return false;
        }
    }
    return true;
}

bool SessionWait::start_waiter(const std::string& source, const std::string& user) {
    std::string path;
    for (const auto& dir : split_path_list(service_path_from_env())) {
        std::string candidate = dir + "/" + kWaitForSessionService;
        if (::access(candidate.c_str(), F_OK) == 0) {
            path = candidate;
            break;
        }
    }
    if (path.empty()) {
        log_agent_line(std::string("service not found: ") + kWaitForSessionService);
        return false;
    }
    SpawnRequest req;
    req.argv = {path};
    req.argv0 = kWaitForSessionService;
    for (auto& e : current_environment())
        if (e.rfind("QREXEC_REMOTE_DOMAIN=", 0) != 0) req.env.push_back(std::move(e));
    req.env.push_back("QREXEC_REMOTE_DOMAIN=" + source);
    req.cwd = "/";
    req.inherit_stdout = true;
    req.inherit_stderr = true;
    Spawned child;
    try {
        child = spawn_process(req);
    } catch (const std::exception& e) {
        log_agent_line(std::string("cannot run ") + kWaitForSessionService + ": " + e.what());
        return false;
    }
    std::string line = user + "\n";
    write_all(child.stdin_w.get(), line.data(), line.size());
    child.stdin_w.reset();
    reaper_.watch(child.pid, [this](int) { release(); });
    return true;
}

void SessionWait::release() {
    waiting_ = false;
    auto held = std::move(held_);
    held_.clear();
    for (auto& run : held) run();
}

}  // namespace aerie::qrexec
