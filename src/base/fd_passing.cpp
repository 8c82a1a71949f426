#include "base/fd_passing.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace aerie::base {

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

}  // namespace aerie::base
