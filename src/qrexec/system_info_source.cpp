#include "qrexec/system_info_source.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "qrexec/unique_fd.hpp"

namespace aerie::qrexec {

namespace {

constexpr size_t kMaxReplyBytes = 256 << 20;

[[noreturn]] void fail(const std::string& socket_path, const std::string& what) {
    throw std::runtime_error("admin daemon at " + socket_path + ": " + what);
}

// Waits for `events` on fd until the deadline; false on timeout.
bool wait_for(int fd, short events, std::chrono::steady_clock::time_point deadline) {
    for (;;) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return false;
        pollfd p{fd, events, 0};
        int rc = ::poll(&p, 1, static_cast<int>(left.count()));
        if (rc > 0) return true;
        if (rc < 0 && errno != EINTR) return false;
    }
}

}  // namespace

std::string default_internal_socket() {
    const char* env = std::getenv("QUBESD_INTERNAL_SOCKET");
    return env && *env ? env : "/var/run/qubesd.internal.sock";
}

std::string fetch_system_info_json(const std::string& socket_path, std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) fail(socket_path, std::strerror(errno));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_path.size() >= sizeof addr.sun_path) fail(socket_path, "socket path too long");
    std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 && errno != EINPROGRESS)
        fail(socket_path, std::strerror(errno));

    static const std::string request("internal.GetSystemInfo dom0 name dom0\0", 38);
    size_t sent = 0;
    while (sent < request.size()) {
        if (!wait_for(fd.get(), POLLOUT, deadline)) fail(socket_path, "timed out sending the request");
        ssize_t n = ::send(fd.get(), request.data() + sent, request.size() - sent, MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EINTR) fail(socket_path, std::strerror(errno));
        if (n > 0) sent += static_cast<size_t>(n);
    }
    ::shutdown(fd.get(), SHUT_WR);

    std::string reply;
    char buf[65536];
    for (;;) {
        if (!wait_for(fd.get(), POLLIN, deadline)) fail(socket_path, "timed out waiting for the system info");
        ssize_t n = ::recv(fd.get(), buf, sizeof buf, 0);
        if (n == 0) break;
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR) continue;
            fail(socket_path, std::strerror(errno));
        }
        reply.append(buf, static_cast<size_t>(n));
        if (reply.size() > kMaxReplyBytes) fail(socket_path, "system info too large");
    }
    if (reply.empty()) fail(socket_path, "request refused (no reply)");
    if (reply.compare(0, 2, std::string("0\0", 2)) != 0) {
        // "2\0TYPE\0TRACEBACK\0MESSAGE\0"
        std::string type = reply.size() > 2 ? std::string(reply.c_str() + 2) : std::string("?");
        fail(socket_path, "error reply " + type);
    }
    return reply.substr(2);
}

}  // namespace aerie::qrexec
