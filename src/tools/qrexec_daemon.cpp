// qrexec-daemon: the admin side of one qube; see src/qrexec/daemon.hpp.
#include <getopt.h>
#include <signal.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "qrexec/admin_call.hpp"
#include "qrexec/daemon.hpp"

namespace {

std::string sibling_program(const char* name) {
    char self[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return name;
    std::string path(self, static_cast<size_t>(n));
    return path.substr(0, path.rfind('/') + 1) + name;
}

[[noreturn]] void usage(const char* argv0, int code) {
    std::fprintf(stderr,
                 "usage: %s [options] domainid domain-name [default user]\n"
                 "Options:\n"
                 "  -h, --help - display usage\n"
                 "  -q, --quiet - quiet mode\n"
                 "  --uuid=UUID - the qube's uuid (adds the qrexec.uuid:UUID socket link)\n"
                 "  --socket-dir=PATH - directory for qrexec socket, default: /var/run/qubes\n"
                 "  --policy-socket=PATH - policy daemon socket, default: /run/qubes/policy.sock\n"
                 "  -p, --policy-program=PATH - program to execute to check policy\n"
                 "  -D, --direct - run directly, don't daemonize, log to stderr\n"
                 "Environment:\n"
                 "  QUBESD_SOCKET - the admin daemon's socket, for calls to disposables,\n"
                 "                  default: /var/run/qubesd.sock\n",
                 argv0);
    std::exit(code);
}

}  // namespace

int main(int argc, char** argv) {
    aerie::qrexec::DaemonConfig config;
    config.policy.program = sibling_program("qrexec-policy-exec");
    bool direct = false;
    static const option longopts[] = {
        {"help", no_argument, nullptr, 'h'},
        {"quiet", no_argument, nullptr, 'q'},
        {"uuid", required_argument, nullptr, 'u'},
        {"socket-dir", required_argument, nullptr, 's'},
        {"policy-socket", required_argument, nullptr, 'S'},
        {"policy-program", required_argument, nullptr, 'p'},
        {"direct", no_argument, nullptr, 'D'},
        {nullptr, 0, nullptr, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "+hqp:D", longopts, nullptr)) != -1) {
        switch (opt) {
            case 'q': break;
            case 'u': config.uuid = optarg; break;
            case 's': config.socket_dir = optarg; break;
            case 'S': config.policy.socket_path = optarg; break;
            case 'p': config.policy.program = optarg; break;
            case 'D': direct = true; break;
            case 'h': usage(argv[0], 0);
            default: usage(argv[0], 1);
        }
    }
    int rest = argc - optind;
    if (rest < 2 || rest > 3) usage(argv[0], 1);
    char* end = nullptr;
    long domid = std::strtol(argv[optind], &end, 10);
    if (*end || domid <= 0 || domid > 0x7fff) {
        std::fprintf(stderr, "invalid domain id: %s\n", argv[optind]);
        return 1;
    }
    config.domid = static_cast<uint32_t>(domid);
    config.name = argv[optind + 1];
    if (rest == 3) config.default_user = argv[optind + 2];
    // The Admin API socket for calls to disposables (the admin daemon sets
    // QUBESD_SOCKET for the qrexec daemons it starts).
    config.admin_socket = aerie::qrexec::default_admin_socket();
    if (const char* t = std::getenv("QREXEC_STARTUP_TIMEOUT"); t && std::atoi(t) > 0)
        config.startup_timeout = std::chrono::seconds(std::atoi(t));

    // Without --direct, the parent returns once the daemon is ready (exit 0)
    // or has failed to reach the agent (exit 3), as Qubes' daemon does.
    int ready[2] = {-1, -1};
    if (!direct) {
        if (::pipe(ready) < 0) return 1;
        pid_t pid = ::fork();
        if (pid < 0) return 1;
        if (pid > 0) {
            ::close(ready[1]);
            char ok = 0;
            ssize_t n = ::read(ready[0], &ok, 1);
            if (n == 1 && ok == 1) return 0;
            std::fprintf(stderr, "Cannot connect to '%s' qrexec agent, giving up\n", config.name.c_str());
            return 3;
        }
        ::close(ready[0]);
        ::setsid();
    }

    ::signal(SIGPIPE, SIG_IGN);
    asio::io_context io;
    aerie::qrexec::Daemon daemon(io, config);
    // The agent is gone for good: exit, so that aeried (which watches this
    // process) stops the qube instead of leaving it "Running" unreachable.
    int exit_code = 0;
    daemon.on_fatal = [&io, &exit_code](const std::string& why) {
        std::fprintf(stderr, "qrexec-daemon: %s\n", why.c_str());
        exit_code = 4;
        io.stop();
    };
    try {
        daemon.start();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "qrexec-daemon: %s\n", e.what());
        return 3;
    }
    if (!direct) {
        char ok = 1;
        if (::write(ready[1], &ok, 1) != 1) return 1;
        ::close(ready[1]);
    }
    asio::signal_set stop(io, SIGTERM, SIGINT);
    stop.async_wait([&io](const asio::error_code&, int) { io.stop(); });
    io.run();
    return exit_code;
}
