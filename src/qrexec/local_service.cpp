#include "qrexec/local_service.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "qrexec/log_lines.hpp"
#include "qrexec/spawn.hpp"
#include "qrexec/vchan.hpp"

namespace aerie::qrexec {

namespace {

UniqueFd connect_unix(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path) return {};
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) return {};
    set_bulk_buffers(fd.get());
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0) return {};
    return fd;
}

UniqueFd connect_tcp(const TcpService& tcp) {
    sockaddr_storage ss{};
    socklen_t len = 0;
    auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
    auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
    std::string host = tcp.host.substr(0, tcp.host.find('%'));
    if (::inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons(tcp.port);
        len = sizeof *v4;
    } else if (::inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons(tcp.port);
        len = sizeof *v6;
    } else {
        return {};
    }
    UniqueFd fd(::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd || ::connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) < 0) return {};
    return fd;
}

// The environment of a plain command: the agent's, without qrexec's call variables.
std::vector<std::string> plain_command_env() {
    std::vector<std::string> env;
    for (auto& e : current_environment()) {
        if (e.rfind("QREXEC_REMOTE_DOMAIN=", 0) == 0 || e.rfind("QREXEC_SERVICE_", 0) == 0 ||
            e.rfind("QREXEC_REQUESTED_TARGET", 0) == 0)
            continue;
        env.push_back(std::move(e));
    }
    return env;
}

}  // namespace

LocalServiceRunner::LocalServiceRunner(asio::io_context& io, ChildReaper& reaper, CmdlineUser user_mode)
    : io_(io), reaper_(reaper), user_mode_(user_mode) {
    default_user = current_user_name();
}

void LocalServiceRunner::fail(UniqueFd channel, int code, const std::string& why,
                              std::function<void(int)> done) {
    log_service_line(why);
    if (!channel) {
        if (done) done(code);
        return;
    }
    DataPump::Local none;
    none.linger = lingers;
    none.stderr_kept_local = keep_stderr_local;  // its stream ends first, as for a service that ran
    auto pump = DataPump::create(io_, std::move(channel), DataPump::Role::Service, std::move(none));
    pump->start(std::move(done));
    pump->set_exit_code(code);
}

void LocalServiceRunner::report_just_exec(UniqueFd channel, int code, std::function<void(int)> done) {
    // As Qubes' agent: HELLO both ways, then only the exit code (0 once the
    // command was started, whatever it does later), and the channel closes.
    if (!channel) {
        if (done) done(code);
        return;
    }
    auto conn = MessageConn::create(io_, std::move(channel), {});
    std::weak_ptr<MessageConn> weak = conn;
    conn->start(
        [weak, code, greeted = false](const Header& h, std::string_view, UniqueFd) mutable {
            auto c = weak.lock();
            if (!c || greeted) return;
            if (h.type != static_cast<uint32_t>(MsgType::Hello)) {
                c->close("data channel: expected HELLO");
                return;
            }
            greeted = true;
            c->send(encode_exit_code(static_cast<uint32_t>(code)));
            c->close_after_flush();
        },
        [done = std::move(done), code](const std::string&) {
            if (done) done(code);
        });
    conn->send(encode_hello(kProtocolVersion));
}

void LocalServiceRunner::start(const std::string& cmdline, UniqueFd channel,
                               std::function<void(int)> done, bool just_exec) {
    // A failure ends the call with its exit code: for JUST_EXEC the code alone.
    auto failed = [&](int code, const std::string& why) {
        if (!just_exec) return fail(std::move(channel), code, why, std::move(done));
        log_service_line(why);
        report_just_exec(std::move(channel), code, std::move(done));
    };
    std::string error;
    auto cmd = parse_cmdline(cmdline, &error, user_mode_);
    if (!cmd) return failed(kExitProblem, "invalid command line: " + error);

    std::string user = cmd->user.empty() || cmd->default_user() ? default_user : cmd->user;
    if (!cmd->is_qubesrpc) {
        return run_process({shell, "-c", cmd->command}, plain_command_env(), user,
                           std::move(channel), std::move(done), just_exec);
    }

    ServiceLookup lookup = find_service(cmd->service_and_arg, service_path_from_env());
    if (int code = lookup_failure_exit_code(lookup)) {
        std::string why = "service not found: " + cmd->service_and_arg;
        if (auto* bad = std::get_if<InvalidService>(&lookup))
            why = "service " + cmd->service_and_arg + " unusable: " + (bad->path.empty() ? "" : bad->path + ": ") +
                  bad->reason;
        return failed(code, why);
    }
    auto config = load_rpc_config(cmd->service_and_arg, rpc_config_path_from_env(), &error);
    if (!config) return failed(kExitProblem, error);
    if (auto ignored = check_config_for_service(*config, lookup))
        log_service_line(*ignored + " (" + cmd->service_and_arg + ")");

    if (auto* exe = std::get_if<ExecutableService>(&lookup)) {
        std::string run_as = effective_user(*cmd, *config);
        if (run_as.empty() || run_as == "DEFAULT") run_as = default_user;
        return run_process(service_argv(*exe, *cmd), build_service_env(current_environment(), *cmd), run_as,
                           std::move(channel), std::move(done), just_exec);
    }
    UniqueFd fd;
    std::string where;
    if (auto* sock = std::get_if<UnixSocketService>(&lookup)) {
        fd = connect_unix(sock->path);
        where = sock->path;
    } else {
        const auto& tcp = std::get<TcpService>(lookup);
        fd = connect_tcp(tcp);
        where = tcp.host;
    }
    if (!fd) return failed(kExitProblem, "cannot connect to " + where);
    if (just_exec) {
        // A socket service started without a channel gets its descriptor only.
        std::string descriptor = config->skip_service_descriptor ? "" : service_descriptor(*cmd);
        bool ok = write_all(fd.get(), descriptor.data(), descriptor.size());
        return report_just_exec(std::move(channel), ok ? 0 : kExitProblem, std::move(done));
    }
    run_socket(std::move(fd), *cmd, *config, !config->skip_service_descriptor, std::move(channel),
               std::move(done));
}

void LocalServiceRunner::run_process(const std::vector<std::string>& argv,
                                     const std::vector<std::string>& env, const std::string& user,
                                     UniqueFd channel, std::function<void(int)> done, bool just_exec) {
    SpawnRequest req;
    req.argv = argv;
    req.env = env;
    // Without root, services run as this process's user, and only for it.
    if (::geteuid() == 0) {
        req.user = user;
    } else if (user != current_user_name()) {
        return fail(std::move(channel), kExitProblem,
                    "cannot run as " + user + " without root (this agent runs as " + current_user_name() + ")",
                    std::move(done));
    }
    req.null_stdio = just_exec;
    req.inherit_stderr = keep_stderr_local;
    Spawned child;
    req.stdio_sockets = true;
    if (announce_agent_pid) {
        std::erase_if(req.env, [](const std::string& e) { return e.rfind("QREXEC_AGENT_PID=", 0) == 0; });
        req.env.push_back("QREXEC_AGENT_PID=" + std::to_string(::getpid()));
    }
    try {
        child = spawn_process(req);
    } catch (const std::exception& e) {
        if (just_exec) {
            log_service_line(e.what());
            return report_just_exec(std::move(channel), kExitProblem, std::move(done));
        }
        return fail(std::move(channel), kExitProblem, e.what(), std::move(done));
    }
    if (just_exec) {
        reaper_.watch(child.pid, [](int) {});
        return report_just_exec(std::move(channel), 0, std::move(done));
    }
    DataPump::Local local;
    local.input = std::move(child.stdout_r);
    local.output = std::move(child.stdin_w);
    local.errors = std::move(child.stderr_r);
    local.prefix = prefix;
    local.stderr_kept_local = keep_stderr_local;
    local.stdin_is_socket = true;
    auto pump = DataPump::create(io_, std::move(channel), DataPump::Role::Service, std::move(local));
    pump->start(std::move(done));
    running_[child.pid] = pump;
    pid_t pid = child.pid;
    reaper_.watch(pid, [this, pump, pid](int code) {
        running_.erase(pid);
        pump->set_exit_code(code);
    });
}

namespace {

// The parent of a process, from /proc (0 if unknown).
pid_t parent_of(pid_t pid) {
    std::string path = "/proc/" + std::to_string(pid) + "/stat";
    std::FILE* f = std::fopen(path.c_str(), "re");
    if (!f) return 0;
    char buf[512];
    size_t n = std::fread(buf, 1, sizeof buf - 1, f);
    std::fclose(f);
    buf[n] = '\0';
    // "pid (comm) state ppid ...": comm may hold anything, so parse after its last ')'.
    const char* close = std::strrchr(buf, ')');
    int ppid = 0;
    if (!close || std::sscanf(close + 1, " %*c %d", &ppid) != 1) return 0;
    return ppid;
}

}  // namespace

void LocalServiceRunner::use_stdin_socket(pid_t sender) {
    for (int depth = 0; sender > 1 && depth < 64; ++depth) {
        auto it = running_.find(sender);
        if (it != running_.end()) {
            if (auto pump = it->second.lock()) pump->use_stdin_socket();
            return;
        }
        sender = parent_of(sender);
    }
}

void LocalServiceRunner::run_socket(UniqueFd sock, const ParsedCmdline& cmd, const RpcConfig& config,
                                    bool send_descriptor, UniqueFd channel, std::function<void(int)> done) {
    if (send_descriptor) {
        std::string descriptor = service_descriptor(cmd);
        if (!write_all(sock.get(), descriptor.data(), descriptor.size()))
            return fail(std::move(channel), kExitProblem, "service socket closed", std::move(done));
    }
    DataPump::Local local;
    local.input = UniqueFd(::dup(sock.get()));
    local.output = std::move(sock);
    local.output_is_socket = true;
    local.linger_after_hangup = lingers;
    local.exit_on_service_eof = config.exit_on_service_eof;
    local.exit_on_client_eof = config.exit_on_client_eof;
    local.prefix = prefix;
    auto pump = DataPump::create(io_, std::move(channel), DataPump::Role::Service, std::move(local));
    pump->start(std::move(done));
}

}  // namespace aerie::qrexec
