#include "qrexec/vchan.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <system_error>
#include <thread>

namespace aerie::qrexec {

std::string vchan_socket_dir() {
    const char* dir = std::getenv("VCHAN_SOCKET_DIR");
    return dir && *dir ? dir : kDefaultVchanDir;
}

uint32_t vchan_local_domain() {
    const char* dom = std::getenv("VCHAN_DOMAIN");
    return dom && *dom ? static_cast<uint32_t>(std::strtoul(dom, nullptr, 10)) : 0;
}

std::string vchan_socket_path(const std::string& dir, uint32_t server_domain,
                              uint32_t client_domain, uint32_t port) {
    return dir + "/vchan." + std::to_string(server_domain) + "." + std::to_string(client_domain) +
           "." + std::to_string(port) + ".sock";
}

namespace {

sockaddr_un unix_address(const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        throw std::system_error(ENAMETOOLONG, std::generic_category(), path);
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    return addr;
}

}  // namespace

UniqueFd vchan_listen(const std::string& path) {
    sockaddr_un addr = unix_address(path);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!fd) throw std::system_error(errno, std::generic_category(), "socket");
    ::unlink(path.c_str());
    if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
        throw std::system_error(errno, std::generic_category(), "bind " + path);
    if (::listen(fd.get(), 64) < 0) throw std::system_error(errno, std::generic_category(), "listen");
    return fd;
}

UniqueFd vchan_connect(const std::string& path, std::chrono::milliseconds timeout) {
    sockaddr_un addr = unix_address(path);
    auto deadline = std::chrono::steady_clock::now() + timeout;
    // A qube's agent usually listens a few ms after its daemon starts
    // trying: retry soon at first, then back off to Qubes' 100 ms.
    auto pause = std::chrono::milliseconds(1);
    for (;;) {
        UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        if (!fd) throw std::system_error(errno, std::generic_category(), "socket");
        set_bulk_buffers(fd.get());
        if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) return fd;
        int err = errno;
        if (err != ENOENT && err != ECONNREFUSED && err != EAGAIN && err != EINTR) return {};
        if (std::chrono::steady_clock::now() >= deadline) return {};
        std::this_thread::sleep_for(pause);
        pause = std::min(pause * 2, std::chrono::milliseconds(100));
    }
}

std::pair<UniqueFd, UniqueFd> channel_pair() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        throw std::system_error(errno, std::generic_category(), "socketpair");
    for (int fd : sv) set_bulk_buffers(fd);
    return {UniqueFd(sv[0]), UniqueFd(sv[1])};
}

ssize_t recv_with_fds(int fd, void* buf, size_t len, int flags, std::vector<UniqueFd>* keep) {
    iovec iov{buf, len};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ssize_t n = ::recvmsg(fd, &msg, flags | MSG_CMSG_CLOEXEC);
    if (n <= 0 || msg.msg_controllen == 0) return n;
    for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
        size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; ++i) {
            int received;
            std::memcpy(&received, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
            UniqueFd owned(received);
            if (keep) keep->push_back(std::move(owned));
        }
    }
    return n;
}

UniqueFd descriptor_marker() {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) < 0) return {};
    ::close(p[1]);
    return UniqueFd(p[0]);
}

void set_bulk_buffers(int fd) {
    // Fewer wake-ups per byte on bulk streams (capped by net.core.*mem_max).
    int size = 4 << 20;
    ::setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof size);
    ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);
}

bool write_all(int fd, const void* data, size_t len) {
    auto p = static_cast<const char*>(data);
    while (len > 0) {
        ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == ENOTSOCK) n = ::write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        p += n;
        len -= static_cast<size_t>(n);
    }
    return true;
}

ssize_t send_with_fd(int fd, const void* data, size_t len, int fd_to_pass, int flags) {
    if (fd_to_pass < 0) return send_with_fds(fd, data, len, {}, flags);
    return send_with_fds(fd, data, len, std::span<const int>(&fd_to_pass, 1), flags);
}

ssize_t send_with_fds(int fd, const void* data, size_t len, std::span<const int> fds, int flags) {
    constexpr size_t kMaxFds = 8;
    if (fds.size() > kMaxFds) {
        errno = EINVAL;
        return -1;
    }
    iovec iov{const_cast<void*>(data), len};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFds)]{};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (!fds.empty()) {
        msg.msg_control = control;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
        cmsghdr* cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(cm), fds.data(), sizeof(int) * fds.size());
    }
    return ::sendmsg(fd, &msg, MSG_NOSIGNAL | flags);
}

bool write_all_with_fd(int fd, const std::string& data, int fd_to_pass) {
    if (fd_to_pass < 0) return write_all(fd, data.data(), data.size());
    ssize_t n;
    do {
        n = send_with_fd(fd, data.data(), data.size(), fd_to_pass, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) return false;
    return write_all(fd, data.data() + n, data.size() - static_cast<size_t>(n));
}

bool read_all(int fd, void* data, size_t len) { return read_all_fds(fd, data, len, nullptr); }

bool read_all_fds(int fd, void* data, size_t len, std::vector<UniqueFd>* fds) {
    auto p = static_cast<char*>(data);
    while (len > 0) {
        ssize_t n = recv_with_fds(fd, p, len, 0, fds);
        if (n < 0 && errno == ENOTSOCK) n = ::read(fd, p, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return false;
        }
        if (n == 0) return false;
        p += n;
        len -= static_cast<size_t>(n);
    }
    return true;
}

}  // namespace aerie::qrexec
