#include "air/fd_message.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "qrexec/vchan.hpp"

namespace aerie::air {

namespace {

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

}  // namespace

void send_message(int sock, std::string_view line, int fd) {
    if (fd < 0) return send_message(sock, line, std::span<const int>());
    send_message(sock, line, std::span<const int>(&fd, 1));
}

void send_message(int sock, std::string_view line, std::span<const int> fds) {
    if (line.empty() || line.back() != '\n') throw AirError("a message must end in a newline");
    if (line.size() > kMaxMessage) throw AirError("a message has at most 512 bytes");
    if (fds.size() > 4) throw AirError("a message carries at most 4 descriptors");
    ssize_t n;
    do {
        n = qrexec::send_with_fds(sock, line.data(), line.size(), fds, 0);
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

    std::vector<qrexec::UniqueFd> fds;  // every one that came is owned, and closed unless it is the one
    do {
        n = qrexec::recv_with_fds(sock, buf, newline + 1, 0, &fds);
    } while (n < 0 && errno == EINTR);
    if (n < 0) throw AirError(errno_text("receiving a message"));
    if (fds.size() > 1) throw AirError("more than one descriptor came with a message");
    if (static_cast<size_t>(n) != newline + 1) throw AirError("receiving a message: it shrank");
    Message out;
    if (!fds.empty()) out.fd = std::move(fds.front());
    out.line.assign(buf, newline);
    return out;
}

}  // namespace aerie::air
