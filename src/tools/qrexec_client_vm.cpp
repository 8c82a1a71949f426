// qrexec-client-vm: calls a service from inside a qube.
//   qrexec-client-vm [--agent-socket=PATH] [--source-qube=NAME] [-t|-T]
//                    TARGET SERVICE[+ARG] [LOCAL_PROGRAM [ARGS...]]
// Without a local program, its own stdin/stdout are the service's. Exit code:
// the service's (126 if refused), or the local program's when one is given.
#include <getopt.h>
#include <sys/wait.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "qrexec/client.hpp"
#include "qrexec/protocol.hpp"
#include "qrexec/spawn.hpp"

using namespace aerie::qrexec;

extern char** environ;

int main(int argc, char** argv) {
    CallRequest request;
    static const option longopts[] = {
        {"help", no_argument, nullptr, 'h'},
        {"agent-socket", required_argument, nullptr, 'a'},
        {"source-qube", required_argument, nullptr, 's'},
        {"use-stdin-socket", no_argument, nullptr, 'u'},
        {"no-filter-escape-sequences", no_argument, nullptr, 'T'},
        {"filter-escape-sequences", no_argument, nullptr, 't'},
        {nullptr, 0, nullptr, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "+htT", longopts, nullptr)) != -1) {
        switch (opt) {
            case 'a': request.agent_socket = optarg; break;
            case 's': request.source_qube = optarg; break;
            case 'u': case 't': case 'T': break;
            default:
                std::fprintf(stderr,
                             "usage: %s [--agent-socket=PATH] [--source-qube=NAME] [-t] [-T] "
                             "target_vmname program_ident [local_program [local program arguments]]\n",
                             argv[0]);
                return opt == 'h' ? 0 : 2;
        }
    }
    if (argc - optind < 2) {
        std::fprintf(stderr, "%s: target and service are required\n", argv[0]);
        return 2;
    }
    request.target = argv[optind];
    request.service_and_arg = argv[optind + 1];
    ::signal(SIGPIPE, SIG_IGN);

    CallChannel ch = open_call(request);
    if (ch.refused) {
        std::fprintf(stderr, "Request refused\n");
        return kExitRefused;
    }
    if (!ch.channel) {
        std::fprintf(stderr, "qrexec-client-vm: %s\n", ch.error.c_str());
        return kExitProblem;
    }

    if (argc - optind == 2)
        return run_call(std::move(ch.channel), UniqueFd(::dup(0)), UniqueFd(::dup(1)), UniqueFd(::dup(2)));

    // A local program talks to the service: its stdout is the service's stdin.
    SpawnRequest sp;
    for (int i = optind + 2; i < argc; ++i) sp.argv.emplace_back(argv[i]);
    if (sp.argv[0].find('/') == std::string::npos) {
        const char* path = std::getenv("PATH");
        std::string dirs = path ? path : "/usr/bin:/bin";
        for (size_t at = 0; at <= dirs.size();) {
            size_t colon = dirs.find(':', at);
            std::string candidate = dirs.substr(at, colon - at) + "/" + sp.argv[0];
            if (::access(candidate.c_str(), X_OK) == 0) {
                sp.argv[0] = candidate;
                break;
            }
            if (colon == std::string::npos) break;
            at = colon + 1;
        }
    }
    for (char** e = environ; *e; ++e) sp.env.emplace_back(*e);
    sp.cwd = ".";
    sp.inherit_stderr = true;
    Spawned child;
    try {
        child = spawn_process(sp);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "qrexec-client-vm: %s\n", e.what());
        return kExitProblem;
    }
    // The program's stderr is ours.
    int service_code = run_call(std::move(ch.channel), std::move(child.stdout_r), std::move(child.stdin_w),
                                UniqueFd(::dup(2)));
    (void)service_code;
    int status = 0;
    while (::waitpid(child.pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
