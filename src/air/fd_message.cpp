#include "air/fd_message.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace aerie::air {

namespace {

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

}  // namespace

void send_message(int sock, std::string_view line, int fd) {
    if (fd < 0) return send_message(sock, line, std::span<const int>());
    send_message(sock, line, std::span<const int>(&fd, 1));
}

void send_message(int sock, std::string_view line, std::span<const int> fds) {
    constexpr size_t kMaxFds = 4;
    if (line.empty() || line.back() != '\n') throw AirError("a message must end in a newline");
    if (line.size() > kMaxMessage) throw AirError("a message has at most 512 bytes");
    if (fds.size() > kMaxFds) throw AirError("a message carries at most 4 descriptors");
    iovec iov{const_cast<char*>(line.data()), line.size()};
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
    ssize_t n;
    do {
        n = ::sendmsg(sock, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) throw AirError(errno_text("sending a message"));
    // Nothing of a message may follow in a second call: the peer reads one.
    if (static_cast<size_t>(n) != line.size()) throw AirError("sending a message: sent only in part");
}

Message receive_message(int sock) {
    // A Unix stream socket may glue a sender's next message to this one
    // ("ok\n" then "accept ...\n" with its descriptor): look first, then
    // take exactly one line, so that the next one keeps its descriptor.
    // One byte more than allowed shows an oversized message as such.
    char buf[kMaxMessage + 1];
    ssize_t n;
    do {
        n = ::recv(sock, buf, sizeof buf, MSG_PEEK);
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) throw AirError("no message came in time");
    if (n < 0) throw AirError(errno_text("receiving a message"));
    if (n == 0) throw AirError("the connection was closed");
    std::string_view seen(buf, static_cast<size_t>(n));
    size_t newline = seen.find('\n');
    if (newline == std::string_view::npos || newline >= kMaxMessage) {
        if (seen.size() > kMaxMessage) throw AirError("a message longer than 512 bytes came");
        // One sendmsg is all of a message: what is there is all there is.
        throw AirError("a message came without its newline");
    }

    iovec iov{buf, newline + 1};
    // Room for several descriptors, so that extra ones arrive (and are
    // closed) rather than being cut off unseen.
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 16)];
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    do {
        n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    } while (n < 0 && errno == EINTR);
    if (n < 0) throw AirError(errno_text("receiving a message"));

    Message out;
    size_t fds = 0;
    if (msg.msg_controllen > 0) {
        for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS) continue;
            size_t count = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < count; ++i) {
                int received;
                std::memcpy(&received, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
                qrexec::UniqueFd owned(received);
                if (++fds == 1) out.fd = std::move(owned);  // any other is closed here
            }
        }
    }
    if (fds > 1 || (msg.msg_flags & MSG_CTRUNC)) throw AirError("more than one descriptor came with a message");
    if (static_cast<size_t>(n) != newline + 1) throw AirError("receiving a message: it shrank");
    out.line.assign(buf, newline);
    return out;
}

}  // namespace aerie::air
