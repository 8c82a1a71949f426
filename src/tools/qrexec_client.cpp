// qrexec-client: runs a command or service in a qube from the admin side.
//   qrexec-client [--socket-dir=DIR] -d TARGET [-l LOCAL_PROGRAM] [-e] [-E]
//                 [-c IDENT,SOURCE,SOURCE_ID] [-p PREFIX] [-t] [-T] [-w SECONDS] [-W] COMMAND
// -e: just start it; -c: connect the started service to a caller that asked
// for it (the caller's daemon gets SERVICE_CONNECT); with -d dom0 and -c,
// this process serves the caller's call itself (COMMAND without a user:
// "QUBESRPC SERVICE+ARG SOURCE TYPE TARGET" or a shell command). Without -e
// or -c our stdio (or LOCAL_PROGRAM's) is the command's, and the exit code
// the remote one (-E: 0). -p: data sent before our stdin. -t / -T: bytes of
// the remote stdout / stderr that are not printable ASCII become '_' (as
// Qubes'; qubesadmin passes them when our output is a terminal).
// --use-stdin-socket: fd 0, a stream socket, is both stdin and stdout (the
// output's end is its shutdown for writing). -k: the target qube is killed
// when the call ended (admin.vm.Kill on $QUBESD_SOCKET, as Qubes').
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <spawn.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio.hpp>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

#include "qrexec/admin_call.hpp"
#include "qrexec/child_reaper.hpp"
#include "qrexec/daemon_socket.hpp"
#include "qrexec/data_pump.hpp"
#include "qrexec/local_service.hpp"
#include "qrexec/protocol.hpp"
#include "qrexec/service_config.hpp"
#include "qrexec/spawn.hpp"
#include "qrexec/vchan.hpp"

using namespace aerie::qrexec;

extern char** environ;

namespace {

[[noreturn]] void usage(const char* argv0, int code) {
    std::fprintf(code ? stderr : stdout,
                 "usage: %s [options] -d domain_name [-l local_prog|-c request_id,src_domain_name,src_domain_id|-e] "
                 "remote_cmdline\n"
                 "Options:\n"
                 "  -h, --help - display usage\n"
                 "  -e - exit after sending cmd\n"
                 "  -E, --no-exit-code - always exit with 0 after command exits\n"
                 "  -t - enables replacing problematic bytes with '_' in command output, -T is the same for stderr\n"
                 "  -W - accepted (a call with -c never waits for its end)\n"
                 "  -c - connect to existing process (response to trigger service call)\n"
                 "  -w timeout - connection timeout in seconds (default 10, 0: none)\n"
                 "  -k - kill the domain right before exiting\n"
                 "  --socket-dir=PATH - directory of the qrexec daemons' sockets (default /var/run/qubes)\n"
                 "  -p PREFIX-DATA, --prefix-data=PREFIX-DATA - send the given data before the provided stdin\n"
                 "  --use-stdin-socket - use fd 0 (which must be socket) for both stdin and stdout\n",
                 argv0);
    std::exit(code);
}

struct Options {
    std::string socket_dir = "/var/run/qubes";
    std::string target;
    const char* local_program = nullptr;
    bool just_exec = false;
    bool exit_with_code = true;
    std::optional<std::string> prefix;
    bool use_stdin_socket = false;
    bool kill = false;           // -k
    bool filter_stdout = false;  // -t
    bool filter_stderr = false;  // -T
    std::chrono::milliseconds timeout{10000};
    // -c
    bool connect = false;
    std::string ident, source_name;
    uint32_t source_id = 0;
    std::string cmdline;
};

bool refers_to_dom0(const std::string& target) {
    return target == "dom0" || target == "@adminvm" || target == "uuid:00000000-0000-0000-0000-000000000000";
}

// "IDENT,SOURCE,SOURCE_ID"; exits with a usage error otherwise.
void parse_connect(const char* argv0, std::string spec, Options& o) {
    size_t c1 = spec.find(',');
    size_t c2 = c1 == std::string::npos ? c1 : spec.find(',', c1 + 1);
    if (c2 == std::string::npos) {
        std::fprintf(stderr, "Invalid -c parameter (should be: \"-c request_id,src_domain_name,src_domain_id\")\n");
        std::exit(1);
    }
    if (c1 >= kIdentLen) {
        std::fprintf(stderr, "Invalid -c parameter (request_id too long, max %zu)\n", kIdentLen - 1);
        std::exit(1);
    }
    o.ident = spec.substr(0, c1);
    o.source_name = spec.substr(c1 + 1, c2 - c1 - 1);
    std::string id = spec.substr(c2 + 1);
    char* end = nullptr;
    errno = 0;
    unsigned long v = std::strtoul(id.c_str(), &end, 10);
    if (id.empty() || id[0] < '0' || id[0] > '9' || *end || errno || v > INT_MAX) {
        std::fprintf(stderr, "qrexec-client: invalid source domain ID '%s'\n", id.c_str());
        std::exit(1);
    }
    o.source_id = static_cast<uint32_t>(v);
    if (refers_to_dom0(o.source_name) || o.source_id == 0) {
        std::fprintf(stderr, "qrexec-client: ERROR: -c cannot be used for requests to dom0\n");
        usage(argv0, 1);
    }
    o.connect = true;
}

// Our stdin and stdout for the call: the descriptors move to the call (fds 0
// and 1 become /dev/null), so that the reader of our stdout sees its end as
// soon as the call's output ends, not only when this process exits.
struct LocalIo {
    UniqueFd input, output;
    pid_t pid = -1;
    bool socket = false;  // input and output are one socket (--use-stdin-socket)
};

UniqueFd take_stdio(int fd) {
    UniqueFd taken(::fcntl(fd, F_DUPFD_CLOEXEC, 3));
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    if (null >= 0) {
        ::dup2(null, fd);
        ::close(null);
    }
    return taken;
}

LocalIo local_io(const char* program, bool use_stdin_socket) {
    LocalIo io;
    if (use_stdin_socket) {
        io.input = take_stdio(0);
        io.output.reset(::fcntl(io.input.get(), F_DUPFD_CLOEXEC, 3));
        io.socket = true;
        return io;
    }
    if (!program) {
        io.input = take_stdio(0);
        io.output = take_stdio(1);
        return io;
    }
    SpawnRequest sp;
    sp.argv = {"/bin/sh", "-c", program};
    for (char** e = environ; *e; ++e) sp.env.emplace_back(*e);
    sp.cwd = ".";
    sp.inherit_stderr = true;
    Spawned child = spawn_process(sp);
    io.input = std::move(child.stdout_r);
    io.output = std::move(child.stdin_w);
    io.pid = child.pid;
    return io;
}

void wait_local(pid_t pid) {
    if (pid < 0) return;
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
}

// Waits for the service side to connect to a data channel we serve as
// Qubes does (vchan.<us>.<them>.<port> in $VCHAN_SOCKET_DIR).
UniqueFd accept_data_channel(uint32_t domain, uint32_t port, std::chrono::milliseconds timeout) {
    std::string path = vchan_socket_path(vchan_socket_dir(), vchan_local_domain(), domain, port);
    UniqueFd listener;
    try {
        listener = vchan_listen(path);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "qrexec-client: cannot serve the data channel: %s\n", e.what());
        return {};
    }
    pollfd p{listener.get(), POLLIN, 0};
    int ms = timeout.count() > 0 ? static_cast<int>(timeout.count()) : -1;
    int n;
    while ((n = ::poll(&p, 1, ms)) < 0 && errno == EINTR) {
    }
    UniqueFd conn;
    if (n > 0) conn.reset(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    ::unlink(path.c_str());
    if (!conn) std::fprintf(stderr, "qrexec-client: qrexec connection timeout\n");
    return conn;
}

UniqueFd connect_data_channel(uint32_t domain, uint32_t port, std::chrono::milliseconds timeout) {
    auto wait = timeout.count() > 0 ? timeout : std::chrono::milliseconds(INT_MAX);
    UniqueFd fd = vchan_connect(vchan_socket_path(vchan_socket_dir(), domain, vchan_local_domain(), port), wait);
    if (!fd) std::fprintf(stderr, "qrexec-client: qrexec connection timeout\n");
    return fd;
}

// As Qubes' dom0 side: a service whose rpc-config asks for wait-for-session
// (and not called "nogui:") first runs qubes.WaitForSession, its stdin
// closed and QREXEC_REMOTE_DOMAIN the caller, and waits for it. A config
// that cannot be read is left to the service runner, which fails the call.
void wait_for_session(const std::string& cmdline, CmdlineUser mode) {
    auto cmd = parse_cmdline(cmdline, nullptr, mode);
    if (!cmd || !cmd->is_qubesrpc) return;
    auto config = load_rpc_config(cmd->service_and_arg, rpc_config_path_from_env());
    if (!config || !should_wait_for_session(*cmd, *config)) return;
    auto found = find_service("qubes.WaitForSession", service_path_from_env());
    auto* exe = std::get_if<ExecutableService>(&found);
    if (!exe) {
        std::fprintf(stderr, "qrexec-client: service not found: qubes.WaitForSession\n");
        return;
    }
    ::setenv("QREXEC_REMOTE_DOMAIN", cmd->source.c_str(), 1);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    std::string name = "qubes.WaitForSession";
    char* argv[] = {name.data(), nullptr};
    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, exe->path.c_str(), &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) {
        std::fprintf(stderr, "qrexec-client: cannot run %s: %s\n", exe->path.c_str(), std::strerror(rc));
        return;
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (status != 0) std::fprintf(stderr, "qrexec-client: wait-for-session exited with status %d\n", status);
}

UniqueFd connect_daemon(const Options& o, const std::string& qube) {
    std::string why;
    UniqueFd fd = connect_daemon_socket(o.socket_dir, qube, o.timeout.count() > 0 ? o.timeout : std::chrono::hours(24),
                                        &why);
    if (!fd) std::fprintf(stderr, "qrexec-client: %s\n", why.c_str());
    return fd;
}

std::string with_nul(const std::string& s) { return std::string(s.data(), s.size() + 1); }

// As Qubes' dom0 side, plain commands run under bash (where there is one).
std::string dom0_shell() { return ::access("/bin/bash", X_OK) == 0 ? "/bin/bash" : "/bin/sh"; }

// A qube's call to dom0 that its daemon's policy allowed: we are the service
// side. The caller's daemon gives the data port; its agent serves the channel.
int serve_call_in_dom0(const Options& o) {
    if (o.ident.empty()) {
        std::fprintf(stderr, "qrexec-client: ERROR: request ID cannot be empty\n");
        return 1;
    }
    UniqueFd daemon = connect_daemon(o, std::to_string(o.source_id));
    if (!daemon) return kExitProblem;
    auto [offered, ours] = channel_pair();
    std::string why;
    auto grant = request_data_port(daemon.get(), MsgType::ServiceConnect, 0, ident_field(o.ident), offered.get(), &why);
    offered.reset();
    if (!grant) {
        std::fprintf(stderr, "qrexec-client: %s\n", why.c_str());
        return kExitProblem;
    }
    ::setenv("QREXEC_REMOTE_DOMAIN", o.source_name.c_str(), 1);
    wait_for_session(o.cmdline, CmdlineUser::Absent);
    UniqueFd channel = grant->channel_taken ? std::move(ours) : connect_data_channel(grant->domain, grant->port, o.timeout);
    if (!channel) return kExitProblem;

    asio::io_context io;
    std::optional<ChildReaper> reaper(std::in_place, io);
    LocalServiceRunner runner(io, *reaper, CmdlineUser::Absent);
    runner.lingers = false;  // one call: it ends with the call
    runner.keep_stderr_local = true;
    runner.shell = dom0_shell();
    if (o.prefix) runner.prefix = *o.prefix;
    int code = kExitProblem;
    runner.start(o.cmdline, std::move(channel), [&](int c) {
        code = c;
        // The loop ends once the exit code is written out; only the
        // reaper's signal watch would keep it running.
        asio::post(io, [&reaper] { reaper.reset(); });
    });
    io.run();
    return o.exit_with_code ? code : 0;
}

// A command in a qube: the target's daemon gives the data port and passes
// our offered channel to its agent, or (an upstream daemon) the agent
// connects to the channel we serve.
int call_qube(const Options& o) {
    UniqueFd daemon = connect_daemon(o, o.target);
    if (!daemon) return kExitProblem;
    auto [offered, ours] = channel_pair();
    std::string why;
    auto grant = request_data_port(daemon.get(), o.just_exec ? MsgType::JustExec : MsgType::ExecCmdline, 0,
                                   with_nul(o.cmdline), offered.get(), &why);
    offered.reset();
    if (!grant) {
        std::fprintf(stderr, "qrexec-client: %s\n", why.c_str());
        return kExitProblem;
    }
    if (o.just_exec && grant->channel_taken) return 0;
    ::setenv("QREXEC_REMOTE_DOMAIN", o.target.c_str(), 1);
    LocalIo lio;
    if (!o.just_exec) {
        try {
            lio = local_io(o.local_program, o.use_stdin_socket);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "qrexec-client: %s\n", e.what());
            return kExitProblem;
        }
    }
    UniqueFd channel = grant->channel_taken ? std::move(ours) : accept_data_channel(grant->domain, grant->port, o.timeout);
    if (!channel) {
        wait_local(lio.pid);
        return kExitProblem;
    }
    asio::io_context io;
    int code = 255;
    DataPump::Local local;
    local.input = std::move(lio.input);
    local.output_is_socket = lio.socket;
    local.output = std::move(lio.output);
    if (!o.just_exec) local.errors.reset(::fcntl(2, F_DUPFD_CLOEXEC, 3));
    if (o.prefix) local.prefix = *o.prefix;
    local.filter_output = o.filter_stdout;
    local.filter_errors = o.filter_stderr;
    auto pump = DataPump::create(io, std::move(channel), DataPump::Role::Caller, std::move(local));
    pump->start([&code](int c) { code = c; });
    io.run();
    wait_local(lio.pid);
    if (o.just_exec) return 0;
    return o.exit_with_code ? code : 0;
}

// The service in a qube answers another qube's call: started through the
// target's daemon, its channel handed to the caller's daemon.
int connect_qubes(const Options& o) {
    UniqueFd target = connect_daemon(o, o.target);
    if (!target) return 137;
    auto [offered, ours] = channel_pair();
    std::string why;
    auto grant = request_data_port(target.get(), o.just_exec ? MsgType::JustExec : MsgType::ExecCmdline, o.source_id,
                                   with_nul(o.cmdline), offered.get(), &why);
    offered.reset();
    if (!grant) {
        std::fprintf(stderr, "qrexec-client: %s\n", why.c_str());
        return 137;
    }
    target.reset();
    UniqueFd source = connect_daemon(o, std::to_string(o.source_id));
    if (!source) return 137;
    std::string sc = encode_header(MsgType::ServiceConnect, 8 + kIdentLen);
    for (uint32_t v : {grant->domain, grant->port})
        for (int i = 0; i < 4; ++i) sc.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    sc += ident_field(o.ident);
    if (!write_all_with_fd(source.get(), sc, grant->channel_taken ? ours.get() : -1)) return 137;
    return 0;
}

// Runs the command on this machine (target dom0, no -c): Aerie's own use,
// USER:COMMAND or DEFAULT:QUBESRPC ...
int run_in_dom0(const Options& o) {
    asio::io_context io;
    ChildReaper reaper(io);
    const std::string& cmdline = o.cmdline;
    bool has_user = cmdline.rfind("QUBESRPC ", 0) != 0 && cmdline.rfind("nogui:", 0) != 0;
    LocalServiceRunner runner(io, reaper, has_user ? CmdlineUser::Required : CmdlineUser::Absent);
    runner.lingers = false;  // one call: it ends with the call
    runner.shell = dom0_shell();
    wait_for_session(cmdline, has_user ? CmdlineUser::Required : CmdlineUser::Absent);
    auto [service_end, caller_end] = channel_pair();
    runner.start(cmdline, std::move(service_end), [](int) {});
    LocalIo lio;
    try {
        lio = local_io(o.local_program, o.use_stdin_socket);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "qrexec-client: %s\n", e.what());
        return kExitProblem;
    }
    int code = 255;
    DataPump::Local local;
    local.input = std::move(lio.input);
    local.output_is_socket = lio.socket;
    local.output = std::move(lio.output);
    local.errors.reset(::fcntl(2, F_DUPFD_CLOEXEC, 3));
    if (o.prefix) local.prefix = *o.prefix;
    local.filter_output = o.filter_stdout;
    local.filter_errors = o.filter_stderr;
    auto pump = DataPump::create(io, std::move(caller_end), DataPump::Role::Caller, std::move(local));
    // The exit code ends the call: the reaper's signal watch (and a stdin
    // that never ends) would otherwise keep the loop running for ever.
    pump->start([&code, &io](int c) {
        code = c;
        io.stop();
    });
    io.run();
    wait_local(lio.pid);
    return o.exit_with_code ? code : 0;
}

// -k: the target is killed once its call ended (admin.vm.Kill, as Qubes').
void kill_target(const std::string& target) {
    asio::io_context io;
    AdminResult result;
    admin_call(io, default_admin_socket(), AdminCall{"admin.vm.Kill", target, "", "dom0"},
               [&result](AdminResult r) { result = std::move(r); });
    io.run();
    if (!result.ok())
        std::fprintf(stderr, "qrexec-client: cannot kill %s: %s\n", target.c_str(), result.error().c_str());
}

int parse_seconds(const char* s) {
    char* end = nullptr;
    errno = 0;
    long v = std::strtol(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end || errno || v > INT_MAX / 1000) {
        std::fprintf(stderr, "qrexec-client: invalid connection timeout '%s'\n", s);
        std::exit(1);
    }
    return static_cast<int>(v);
}

}  // namespace

int main(int argc, char** argv) {
    Options o;
    const char* domain = nullptr;
    static const option longopts[] = {
        {"help", no_argument, nullptr, 'h'},
        {"socket-dir", required_argument, nullptr, 's'},
        {"no-exit-code", no_argument, nullptr, 'E'},
        {"prefix-data", required_argument, nullptr, 'p'},
        {"use-stdin-socket", no_argument, nullptr, 'u' + 128},
        {nullptr, 0, nullptr, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "+hd:l:eEc:p:tTw:Wk", longopts, nullptr)) != -1) {
        switch (opt) {
            case 's': o.socket_dir = optarg; break;
            case 'd': domain = optarg; break;
            case 'l': o.local_program = optarg; break;
            case 'e': o.just_exec = true; break;
            case 'E': o.exit_with_code = false; break;
            case 'c':
                if (o.connect) usage(argv[0], 1);
                parse_connect(argv[0], optarg, o);
                break;
            case 'p':
                if (o.prefix) usage(argv[0], 2);
                o.prefix = optarg;
                break;
            case 'w': o.timeout = std::chrono::milliseconds(1000LL * parse_seconds(optarg)); break;
            case 't': o.filter_stdout = true; break;
            case 'T': o.filter_stderr = true; break;
            case 'W': break;
            case 'k': o.kill = true; break;
            case 'u' + 128: {
                // fd 0 is a stream socket, used both ways (as Qubes' checks).
                if (o.use_stdin_socket) {
                    std::fprintf(stderr, "qrexec-client: --use-stdin-socket passed twice\n");
                    return 2;
                }
                int type = 0;
                socklen_t len = sizeof type;
                if (::getsockopt(0, SOL_SOCKET, SO_TYPE, &type, &len) != 0) {
                    std::fprintf(stderr, "qrexec-client: %s\n",
                                 errno == ENOTSOCK ? "--use-stdin-socket passed, but stdin not a socket"
                                                   : std::strerror(errno));
                    return 2;
                }
                if (type != SOCK_STREAM) {
                    std::fprintf(stderr, "qrexec-client: stdin was a socket of type %d, not SOCK_STREAM (%d)\n", type,
                                 SOCK_STREAM);
                    return 2;
                }
                o.use_stdin_socket = true;
                break;
            }
            case 'h': usage(argv[0], 0);
            default: usage(argv[0], 1);
        }
    }
    if (!domain || optind != argc - 1) usage(argv[0], 1);
    if (o.just_exec + o.connect + (o.local_program != nullptr) > 1) {
        std::fprintf(stderr, "ERROR: only one of -e, -l, -c can be specified\n");
        usage(argv[0], 1);
    }
    if (o.local_program && o.use_stdin_socket) {
        std::fprintf(stderr, "ERROR: at most one of -l and --use-stdin-socket can be specified\n");
        usage(argv[0], 1);
    }
    o.target = domain;
    o.cmdline = argv[optind];
    ::signal(SIGPIPE, SIG_IGN);

    if (refers_to_dom0(o.target)) return o.connect ? serve_call_in_dom0(o) : run_in_dom0(o);
    if (o.connect) return connect_qubes(o);
    int code = call_qube(o);
    if (o.kill) kill_target(o.target);
    return code;
}
