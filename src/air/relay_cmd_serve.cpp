// aerie-air-relay serve [--daemon]: the relay's serve daemon (air/tls_serve.hpp).
// --daemon: the parent returns at once; the daemon runs in its own session
// with its output in ~/.aerie-air/run/serve.log. Only one runs per relay
// (a lock on run/serve.lock); a second one leaves quietly.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "air/fd_message.hpp"
#include "air/layout.hpp"
#include "air/relay_command.hpp"
#include "air/tls_serve.hpp"

namespace aerie::air {

namespace {

namespace fs = std::filesystem;

// A daemon started by tls-proxy inherits the first caller's qrexec
// environment; what it runs must not.
void forget_the_starting_call() {
    std::vector<std::string> names;
    for (char** e = environ; *e; ++e) {
        std::string_view kv(*e);
        if (kv.starts_with("QREXEC_")) names.emplace_back(kv.substr(0, kv.find('=')));
    }
    for (const auto& name : names) ::unsetenv(name.c_str());
}

// Forks; the parent returns false, the child (in a new session, stdio on
// the log) true.
bool daemonize(const fs::path& log) {
    int out = ::open(log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (out < 0) throw AirError(log.string() + ": " + std::strerror(errno));
    pid_t pid = ::fork();
    if (pid < 0) throw AirError(std::string("fork: ") + std::strerror(errno));
    if (pid > 0) {
        ::close(out);
        return false;
    }
    ::setsid();
    int null = ::open("/dev/null", O_RDONLY);
    ::dup2(null, 0);
    ::dup2(out, 1);
    ::dup2(out, 2);
    ::close_range(3, ~0U, 0);  // nothing of the caller's stays open in the daemon
    if (::chdir("/") != 0) {
    }
    return true;
}

int serve(const std::vector<std::string>& args) {
    bool daemon = args.size() == 1 && args[0] == "--daemon";
    if (!args.empty() && !daemon) throw AirError("usage: aerie-air-relay serve [--daemon]");
    fs::path home = relay_home();
    fs::path run = home / "run";
    std::error_code ec;
    fs::create_directories(run, ec);
    ::chmod(run.c_str(), 0700);
    if (daemon && !daemonize(run / "serve.log")) return 0;

    int lock = ::open((run / "serve.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0) throw AirError((run / "serve.lock").string() + ": " + std::strerror(errno));
    if (::flock(lock, LOCK_EX | LOCK_NB) != 0) {
        serve_log("a serve daemon runs already");
        return 0;
    }
    forget_the_starting_call();
    ::signal(SIGPIPE, SIG_IGN);  // a reader gone shows as EPIPE
    EventLoop loop;
    Serve daemon_state(loop, ServeOptions{home, uplink_socket(), qubesdb_dir()});
    daemon_state.start();
    for (;;) {
        try {
            loop.run();
            return 0;
        } catch (const std::exception& e) {  // one event's failure; the links go on
            serve_log(std::string("unexpected: ") + e.what());
        }
    }
}

const RelayCommandRegistration registration("serve", "[--daemon]", serve);

}  // namespace

}  // namespace aerie::air
