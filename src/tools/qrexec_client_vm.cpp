// qrexec-client-vm: calls a service from inside a qube, with Qubes R4.3's
// options, exit codes and messages:
//   qrexec-client-vm [options] TARGET SERVICE[+ARG] [LOCAL_PROGRAM [ARGS...]]
// Without a local program, its own stdin/stdout are the service's. Exit code:
// the service's when not 0, else the local program's; 126 if refused ("Request
// refused" on stderr); 255 when the data channel broke before the exit code.
#include <getopt.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "qrexec/agent.hpp"
#include "qrexec/caller_io.hpp"
#include "qrexec/client.hpp"
#include "qrexec/protocol.hpp"

using namespace aerie::qrexec;

namespace {

enum LongOnly {
    kNoFilterStdout = 't' + 128,
    kNoFilterStderr = 'T' + 128,
    kUseStdinSocket = 'u' + 128,
};

[[noreturn]] void usage(const char* argv0, int status) {
    std::FILE* out = status ? stderr : stdout;
    std::fprintf(
        out,
        "usage: %s [options] target_vmname program_ident [local_program [local program arguments]]\n"
        "Options:\n"
        "  -h, --help - print this message\n"
        "  --buffer-size=BUFFER_SIZE - accepted for compatibility (no effect)\n"
        "  -t, --filter-escape-chars-stdout - filter non-ASCII and control characters on stdout "
        "(default if stdout is a terminal)\n"
        "  -T, --filter-escape-chars-stderr - filter non-ASCII and control characters on stderr "
        "(default if stderr is a terminal)\n"
        "  --no-filter-escape-chars-stdout, --no-filter-escape-chars-stderr - the opposite\n"
        "  --agent-socket=PATH - path to connect to, default: %s\n"
        "  -p PREFIX-DATA, --prefix-data=PREFIX-DATA - send the given data before the provided stdin\n"
        "  --use-stdin-socket - use fd 0 (which must be a socket) for both stdin and stdout\n"
        "  -s SOURCE-QUBE, --source-qube=SOURCE-QUBE - the source qube of a relayed call\n",
        argv0, kDefaultAgentSocket);
    std::exit(status);
}

// Starts the local program with its stdin and stdout on socket pairs (so it
// may later use its stdin both ways, after SIGUSR1 to $QREXEC_AGENT_PID). Its
// stderr is ours. As in Qubes: the program path is used as given (no PATH
// search), SAVED_FD_0/1 (and 2 with PASS_LOCAL_STDERR) name copies of our
// own descriptors.
pid_t start_local_program(char** argv, int* to_program, int* from_program) {
    int in[2], out[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, in) < 0 || ::socketpair(AF_UNIX, SOCK_STREAM, 0, out) < 0) {
        std::perror("socketpair");
        std::exit(1);
    }
    ::setenv("QREXEC_AGENT_PID", std::to_string(::getpid()).c_str(), 1);
    pid_t pid = ::fork();
    if (pid < 0) {
        std::perror("fork");
        std::exit(1);
    }
    if (pid == 0) {
        ::close(in[1]);
        ::close(out[0]);
        for (int fd = 0; fd < 3; ++fd) {
            if (fd == 2 && !std::getenv("PASS_LOCAL_STDERR")) continue;
            int copy = ::dup(fd);
            if (copy < 0) _exit(1);
            ::setenv(("SAVED_FD_" + std::to_string(fd)).c_str(), std::to_string(copy).c_str(), 1);
        }
        if (::dup2(in[0], 0) != 0 || ::dup2(out[1], 1) != 1) _exit(1);
        ::close(in[0]);
        ::close(out[1]);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::signal(SIGPIPE, SIG_DFL);
        ::signal(SIGCHLD, SIG_DFL);
        std::string path = argv[0];
        const char* base = std::strrchr(argv[0], '/');
        if (base) argv[0] = const_cast<char*>(base + 1);
        ::execv(path.c_str(), argv);
        std::perror("execv");
        _exit(255);
    }
    ::close(in[0]);
    ::close(out[1]);
    *to_program = in[1];
    *from_program = out[0];
    return pid;
}

}  // namespace

int main(int argc, char** argv) {
    static const option longopts[] = {
        {"buffer-size", required_argument, nullptr, 'b'},
        {"filter-escape-chars-stdout", no_argument, nullptr, 't'},
        {"filter-escape-chars-stderr", no_argument, nullptr, 'T'},
        {"no-filter-escape-chars-stdout", no_argument, nullptr, kNoFilterStdout},
        {"no-filter-escape-chars-stderr", no_argument, nullptr, kNoFilterStderr},
        {"agent-socket", required_argument, nullptr, 'a'},
        {"prefix-data", required_argument, nullptr, 'p'},
        {"use-stdin-socket", no_argument, nullptr, kUseStdinSocket},
        {"source-qube", required_argument, nullptr, 's'},
        {"help", no_argument, nullptr, 'h'},
        {nullptr, 0, nullptr, 0},
    };
    CallRequest request;
    int filter_stdout = -1, filter_stderr = -1;
    const char* prefix = nullptr;
    bool stdin_socket = false;
    bool have_source = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "+tTa:p:s:h", longopts, nullptr)) != -1) {
        switch (opt) {
            case 'b': {
                char* end = nullptr;
                errno = 0;
                unsigned long v = std::strtoul(optarg, &end, 0);
                if (*optarg < '0' || *optarg > '9' || errno || *end || v > 0x7fffffff) {
                    std::fprintf(stderr, "Bad buffer size: %s\n", optarg);
                    return 1;
                }
                break;
            }
            case 't':
                filter_stdout = 1;
                break;
            case 'T':
                filter_stderr = 1;
                break;
            case kNoFilterStdout:
                filter_stdout = 0;
                break;
            case kNoFilterStderr:
                filter_stderr = 0;
                break;
            case 'a':
                request.agent_socket = optarg;
                break;
            case 'p':
                if (prefix) usage(argv[0], 2);
                prefix = optarg;
                break;
            case 's':
                if (have_source) usage(argv[0], 2);
                have_source = true;
                request.source_qube = optarg;
                break;
            case kUseStdinSocket: {
                if (stdin_socket) {
                    std::fprintf(stderr, "%s: --use-stdin-socket passed twice\n", argv[0]);
                    return 2;
                }
                int type = 0;
                socklen_t len = sizeof type;
                if (::getsockopt(0, SOL_SOCKET, SO_TYPE, &type, &len) < 0) {
                    std::fprintf(stderr, "%s: --use-stdin-socket passed, but stdin not a socket\n", argv[0]);
                    return 2;
                }
                if (type != SOCK_STREAM) {
                    std::fprintf(stderr, "%s: stdin was a socket of type %d, not SOCK_STREAM\n", argv[0],
                                 type);
                    return 2;
                }
                stdin_socket = true;
                break;
            }
            case 'h':
                usage(argv[0], 0);
            default:
                usage(argv[0], 2);
        }
    }
    if (argc - optind < 2) usage(argv[0], 2);
    bool local_program = argc - optind > 2;
    if (local_program && stdin_socket) {
        std::fprintf(stderr, "cannot spawn a local process with --use-stdin-socket\n");
        usage(argv[0], 2);
    }
    if (!local_program && filter_stdout == -1 && ::isatty(1)) filter_stdout = 1;
    if (filter_stderr == -1 && ::isatty(2)) filter_stderr = 1;

    // A target keyword used to start with '$'; Qubes takes it as '@'.
    std::string target = argv[optind];
    for (char& c : target)
        if (c == '$') c = '@';
    request.target = target;
    request.service_and_arg = argv[optind + 1];
    ::signal(SIGPIPE, SIG_IGN);

    CallChannel ch = open_call(request);
    if (ch.refused) {
        std::fprintf(stderr, "Request refused\n");
        return kExitRefused;
    }
    if (!ch.channel) {
        std::fprintf(stderr, "qrexec-client-vm: %s\n", ch.error.c_str());
        return 1;
    }

    CallerStreams streams;
    streams.filter_stdout = filter_stdout > 0;
    streams.filter_stderr = filter_stderr > 0;
    if (prefix) streams.prefix = prefix;
    if (local_program) {
        prepare_caller_signals();
        streams.local_pid = start_local_program(argv + optind + 2, &streams.to_local, &streams.from_local);
    } else {
        streams.to_local = stdin_socket ? 0 : 1;
        streams.from_local = 0;
    }
    int code = run_caller(std::move(ch.channel), streams);
    return code;
}
