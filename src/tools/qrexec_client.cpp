// qrexec-client: runs a command or service in a qube from the admin side.
//   qrexec-client [--socket-dir=DIR] -d TARGET [-l LOCAL_PROGRAM] [-e] [-E]
//                 [-c IDENT,SOURCE,SOURCE_ID] [-t] [-T] [-w SECONDS] [-W] USER:COMMAND
// -e: just start it (no stdio); -c: connect the started service to a caller
// that asked for it (the caller's daemon gets SERVICE_CONNECT). Without
// either, our stdio (or LOCAL_PROGRAM's) is the command's; the exit code is
// the remote one.
#include <getopt.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio.hpp>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "qrexec/child_reaper.hpp"
#include "qrexec/client.hpp"
#include "qrexec/local_service.hpp"
#include "qrexec/protocol.hpp"
#include "qrexec/spawn.hpp"
#include "qrexec/vchan.hpp"

using namespace aerie::qrexec;

extern char** environ;

namespace {

[[noreturn]] void usage(const char* argv0, int code) {
    std::fprintf(stderr,
                 "usage: %s [-w timeout] [-W] [-t] [-T] [-l local_prog] -d domain_name "
                 "[-e] [-E] [-c request_id,src_domain_name,src_domain_id] remote_cmdline\n"
                 "  --socket-dir=DIR  directory of the qrexec daemons' sockets (default /var/run/qubes)\n",
                 argv0);
    std::exit(code);
}

uint32_t get_u32(const char* b) {
    auto c = [&](int i) { return static_cast<uint32_t>(static_cast<unsigned char>(b[i])); };
    return c(0) | (c(1) << 8) | (c(2) << 16) | (c(3) << 24);
}

// Connects to a daemon's socket and does the client handshake; on failure
// says why.
UniqueFd connect_daemon(const std::string& socket_dir, const std::string& domain,
                        std::chrono::milliseconds timeout) {
    UniqueFd fd = vchan_connect(socket_dir + "/qrexec." + domain, timeout);
    if (!fd) {
        std::fprintf(stderr, "qrexec-client: cannot connect to the qrexec daemon of %s\n", domain.c_str());
        return {};
    }
    char hello[kHeaderSize + 4];
    if (!read_all(fd.get(), hello, sizeof hello) ||
        get_u32(hello) != static_cast<uint32_t>(MsgType::Hello)) {
        // A daemon closes before HELLO while its qube's agent is gone.
        std::fprintf(stderr, "qrexec-client: the qrexec agent of %s is not connected (see its qrexec-daemon log)\n",
                     domain.c_str());
        return {};
    }
    std::string ours = encode_hello(kClientProtocolVersion);
    if (!write_all(fd.get(), ours.data(), ours.size())) return {};
    return fd;
}

// The local program's stdio, or ours.
struct LocalIo {
    UniqueFd input, output;
    pid_t pid = -1;
};

LocalIo local_io(const char* program) {
    LocalIo io;
    if (!program) {
        io.input.reset(::dup(0));
        io.output.reset(::dup(1));
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

int wait_local(pid_t pid, int remote_code) {
    if (pid < 0) return remote_code;
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return remote_code;
}

// Runs the command on this machine (target dom0).
int run_in_dom0(const std::string& cmdline, const char* local_program) {
    asio::io_context io;
    ChildReaper reaper(io);
    bool has_user = cmdline.rfind("QUBESRPC ", 0) != 0 && cmdline.rfind("nogui:", 0) != 0;
    LocalServiceRunner runner(io, reaper, has_user ? CmdlineUser::Required : CmdlineUser::Absent);
    auto [service_end, caller_end] = channel_pair();
    runner.start(cmdline, std::move(service_end), [](int) {});
    LocalIo lio = local_io(local_program);
    int code = 255;
    DataPump::Local local;
    local.input = std::move(lio.input);
    local.output = std::move(lio.output);
    local.errors.reset(::dup(2));
    auto pump = DataPump::create(io, std::move(caller_end), DataPump::Role::Caller, std::move(local));
    // The exit code ends the call: the reaper's signal watch (and a stdin
    // that never ends) would otherwise keep the loop running for ever.
    pump->start([&code, &io](int c) {
        code = c;
        io.stop();
    });
    io.run();
    return wait_local(lio.pid, code);
}

}  // namespace

int main(int argc, char** argv) {
    std::string socket_dir = "/var/run/qubes";
    const char* domain = nullptr;
    const char* local_program = nullptr;
    const char* connect_spec = nullptr;
    bool just_exec = false;
    int timeout_s = 30;
    static const option longopts[] = {
        {"help", no_argument, nullptr, 'h'},
        {"socket-dir", required_argument, nullptr, 's'},
        {nullptr, 0, nullptr, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "+hd:l:ec:tTw:WE", longopts, nullptr)) != -1) {
        switch (opt) {
            case 's': socket_dir = optarg; break;
            case 'd': domain = optarg; break;
            case 'l': local_program = optarg; break;
            case 'e': just_exec = true; break;
            case 'c': connect_spec = optarg; break;
            case 'w': timeout_s = std::atoi(optarg); break;
            case 't': case 'T': case 'W': case 'E': break;
            case 'h': usage(argv[0], 0);
            default: usage(argv[0], 1);
        }
    }
    if (!domain || optind != argc - 1) usage(argv[0], 1);
    std::string cmdline = argv[optind];
    ::signal(SIGPIPE, SIG_IGN);

    std::string target = domain;
    if (target == "dom0" || target == "@adminvm") return run_in_dom0(cmdline, local_program);

    uint32_t connect_domain = 0;
    std::string ident, source_name;
    if (connect_spec) {
        std::string spec = connect_spec;
        size_t c1 = spec.find(','), c2 = spec.rfind(',');
        if (c1 == std::string::npos || c1 == c2) usage(argv[0], 1);
        ident = spec.substr(0, c1);
        source_name = spec.substr(c1 + 1, c2 - c1 - 1);
        connect_domain = static_cast<uint32_t>(std::strtoul(spec.c_str() + c2 + 1, nullptr, 10));
    }

    auto timeout = std::chrono::milliseconds(timeout_s * 1000);
    UniqueFd daemon = connect_daemon(socket_dir, target, timeout);
    if (!daemon) return kExitProblem;
    auto [ours, theirs] = channel_pair();
    MsgType type = just_exec ? MsgType::JustExec : MsgType::ExecCmdline;
    std::string request = encode_exec(type, ExecParams{connect_domain, 0, cmdline});
    if (!write_all_with_fd(daemon.get(), request, theirs.get())) {
        std::fprintf(stderr, "qrexec-client: cannot send the command\n");
        return kExitProblem;
    }
    theirs.reset();
    char reply[kHeaderSize + 8];
    if (!read_all(daemon.get(), reply, sizeof reply)) {
        std::fprintf(stderr,
                     "qrexec-client: the qrexec daemon of %s refused the command (no data port free for this "
                     "caller, or its agent disconnected: see its log)\n",
                     domain);
        return kExitProblem;
    }
    uint32_t data_domain = get_u32(reply + kHeaderSize), data_port = get_u32(reply + kHeaderSize + 4);

    if (connect_spec) {
        // Hand our end to the caller's daemon for its agent.
        UniqueFd src = connect_daemon(socket_dir, source_name, timeout);
        if (!src) return kExitProblem;
        std::string sc = encode_service_connect({data_domain, data_port, ident});
        if (!write_all_with_fd(src.get(), sc, ours.get())) return kExitProblem;
        return 0;
    }
    if (just_exec) return 0;

    LocalIo lio = local_io(local_program);
    int code = run_call(std::move(ours), std::move(lio.input), std::move(lio.output), UniqueFd(::dup(2)));
    return wait_local(lio.pid, code);
}
