#include "air/tls_proxy.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "air/fd_message.hpp"
#include "air/layout.hpp"
#include "air/relay_names.hpp"
#include "air/tls_local.hpp"

extern char** environ;

namespace aerie::air {

namespace {

namespace fs = std::filesystem;
using qrexec::UniqueFd;

constexpr auto kStartWait = std::chrono::seconds(5);

// Connected, or invalid when nothing listens there (yet).
UniqueFd try_connect(const fs::path& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.native().size() >= sizeof addr.sun_path) throw AirError(path.string() + ": path too long");
    std::memcpy(addr.sun_path, path.c_str(), path.native().size());
    UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return sock;
    if (errno == ENOENT || errno == ECONNREFUSED) return {};
    throw AirError("cannot reach the serve daemon at " + path.string() + ": " + std::strerror(errno));
}

// `aerie-air-relay serve --daemon` (next to this program); it returns at
// once. Its stdin and stdout are not the call's, or the call would never end.
void start_daemon() {
    char self_path[4096];
    ssize_t n = ::readlink("/proc/self/exe", self_path, sizeof self_path - 1);
    if (n <= 0) throw AirError("cannot find this program to start the serve daemon");
    self_path[n] = '\0';
    std::string program = (fs::path(self_path).parent_path() / "aerie-air-relay").string();
    const char* self = program.c_str();
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
    char* argv[] = {const_cast<char*>("aerie-air-relay"), const_cast<char*>("serve"), const_cast<char*>("--daemon"),
                    nullptr};
    pid_t pid;
    int err = ::posix_spawn(&pid, self, &actions, nullptr, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    if (err != 0) throw AirError(std::string("cannot start the serve daemon: ") + std::strerror(err));
    int status;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
}

UniqueFd connect_serve(const fs::path& home) {
    fs::path path = relay_socket_path(home);
    if (UniqueFd sock = try_connect(path)) return sock;
    start_daemon();
    auto deadline = std::chrono::steady_clock::now() + kStartWait;
    while (std::chrono::steady_clock::now() < deadline) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        if (UniqueFd sock = try_connect(path)) return sock;
    }
    throw AirError("the serve daemon did not start (see " + (home / "run" / "serve.log").string() + ")");
}

// The one line serve answers with once the call is over.
std::string read_end(int sock) {
    std::string line;
    char buf[600];
    for (;;) {
        ssize_t n = ::read(sock, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw AirError("the relay's serve daemon went away");
        line.append(buf, static_cast<size_t>(n));
        if (auto nl = line.find('\n'); nl != std::string::npos) return line.substr(0, nl);
        if (line.size() > sizeof buf) throw AirError("the serve daemon answered with a line too long");
    }
}

}  // namespace

int run_tls_proxy(std::string_view argument) {
    OutgoingCall call = resolve_outgoing(argument, qubesdb_dir());
    std::string source = calling_source(std::getenv("QREXEC_REMOTE_DOMAIN"));
    UniqueFd sock = connect_serve(relay_home());
    send_call(sock.get(), {call.zone, source, call.remote_name, call.service}, 0, 1);
    // serve holds the call's stdin and stdout now; ours must not keep them open.
    int null = ::open("/dev/null", O_RDWR);
    ::dup2(null, 0);
    ::dup2(null, 1);
    ::close(null);
    CallEnd end = parse_call_end(read_end(sock.get()));
    if (!end.exit_code) throw AirError(end.reason);
    return *end.exit_code;
}

}  // namespace aerie::air
