// qvm-connect-tcp [LOCALPORT]:[VMNAME]:PORT (inside a qube): forwards
// connections to localhost:LOCALPORT to port PORT on the loopback of VMNAME
// through qubes.ConnectTCP+PORT, one qrexec-client-vm call per connection
// with the connection as its stdin and stdout, as Qubes' tool does with
// socat. Prints where it binds, then serves in the background (the tool
// itself exits 0). Differences: it listens on 127.0.0.1 only (Qubes' socat
// listens on every address of the qube), a port it cannot bind is reported
// at once (exit 1), and at most kMaxCalls calls run at a time (a further
// connection waits in the listen queue).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>

#include "services/connect_tcp_args.hpp"

namespace {

constexpr int kMaxCalls = 256;

int usage(const char* argv0) {
    std::fprintf(stderr,
                 "Usage: %s [localport]:[vmname]:[port]\n"
                 "Bind localport to another VM port using the qubes.ConnectTCP RPC service.\n",
                 argv0);
    return 1;
}

// qrexec-client-vm next to this program (/run/aerie/bin in a qube).
std::string client_vm_path() {
    char self[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return "/run/aerie/bin/qrexec-client-vm";
    std::string path(self, static_cast<size_t>(n));
    return path.substr(0, path.rfind('/') + 1) + "qrexec-client-vm";
}

void forward(int conn, const std::string& client, const std::string& target, const std::string& service) {
    ::dup2(conn, 0);
    ::dup2(conn, 1);
    if (conn > 1) ::close(conn);
    ::execl(client.c_str(), "qrexec-client-vm", "--", target.c_str(), service.c_str(),
            static_cast<char*>(nullptr));
    _exit(127);
}

}  // namespace

int main(int argc, char** argv) {
    if (argc < 2) return usage(argv[0]);
    std::string error;
    auto args = aerie::services::parse_connect_tcp_args(argv[1], &error);
    if (!args) {
        std::printf("%s\n", error.c_str());
        if (error != "Please provide PORT") usage(argv[0]);
        return 1;
    }
    std::printf("Binding TCP '%s:%u' to 'localhost:%u'...\n",
                args->target.empty() ? "@default" : args->target.c_str(), args->port, args->local_port);
    std::fflush(stdout);

    int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(args->local_port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (listener < 0 || ::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::listen(listener, 64) != 0) {
        std::fprintf(stderr, "qvm-connect-tcp: cannot listen on localhost:%u: %s\n", args->local_port,
                     std::strerror(errno));
        return 1;
    }

    pid_t server = ::fork();
    if (server < 0) {
        std::perror("qvm-connect-tcp: fork");
        return 1;
    }
    if (server > 0) return 0;
    // The server: detached from the caller's session and stdio (a qrexec
    // call that started it must be able to end).
    ::setsid();
    int null = ::open("/dev/null", O_RDWR);
    for (int fd = 0; fd <= 2; ++fd) ::dup2(null, fd);
    if (null > 2) ::close(null);
    std::signal(SIGPIPE, SIG_IGN);

    const std::string client = client_vm_path();
    const std::string service = "qubes.ConnectTCP+" + std::to_string(args->port);
    int running = 0;
    for (;;) {
        while (running > 0 && ::waitpid(-1, nullptr, running >= kMaxCalls ? 0 : WNOHANG) > 0) --running;
        int conn = ::accept4(listener, nullptr, nullptr, 0);
        if (conn < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE ||
                errno == ENOBUFS || errno == ENOMEM)
                continue;
            return 1;
        }
        pid_t child = ::fork();
        if (child == 0) forward(conn, client, args->target, service);
        if (child > 0) ++running;
        ::close(conn);
    }
}
