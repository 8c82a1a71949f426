#include "air/uplink_client.hpp"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

namespace aerie::air {

namespace {

using qrexec::UniqueFd;

// aeried answers within its own timeouts (5 s to connect); this only keeps
// a relay from hanging on a host that never answers.
constexpr int kAnswerTimeoutSeconds = 30;

UniqueFd connect_uplink(std::string_view path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.empty() || path.size() >= sizeof addr.sun_path) throw AirError("uplink socket path too long");
    std::memcpy(addr.sun_path, path.data(), path.size());
    UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!sock) throw AirError(std::string("socket: ") + std::strerror(errno));
    if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
        throw AirError("cannot reach the host's uplink " + std::string(path) + ": " + std::strerror(errno));
    return sock;
}

void write_fully(int fd, std::string_view data) {
    while (!data.empty()) {
        ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) throw AirError(std::string("writing the preamble: ") + std::strerror(errno));
        data.remove_prefix(static_cast<size_t>(n));
    }
}

}  // namespace

UniqueFd uplink_connect(std::string_view zone, std::string_view own_zone, Transport transport,
                        std::string_view uplink_socket) {
    std::string request = format_connect(zone);
    std::string preamble = format_preamble({std::string(own_zone), transport});
    UniqueFd sock = connect_uplink(uplink_socket);
    timeval timeout{kAnswerTimeoutSeconds, 0};
    ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    send_message(sock.get(), request);
    Message answer = receive_message(sock.get());
    expect_ok(answer.line);
    if (!answer.fd) throw AirError("the host's ok came without a connection");
    write_fully(answer.fd.get(), preamble);
    return std::move(answer.fd);
}

UplinkListener::UplinkListener(std::string_view uplink_socket) : sock_(connect_uplink(uplink_socket)) {
    send_message(sock_.get(), kListen);
    expect_ok(receive_message(sock_.get()).line);
}

std::optional<UplinkListener::Accepted> UplinkListener::next() {
    // EOF is the host closing the uplink (a newer listener, a daemon
    // restart): the end, not an error.
    char byte;
    ssize_t n;
    do {
        n = ::recv(sock_.get(), &byte, 1, MSG_PEEK);
    } while (n < 0 && errno == EINTR);
    if (n == 0) return std::nullopt;
    if (n < 0) throw AirError(std::string("reading the uplink: ") + std::strerror(errno));
    Message msg = receive_message(sock_.get());
    Accept what = parse_accept(msg.line);
    if (!msg.fd) throw AirError("an accept came without its connection");
    return Accepted{std::move(what), std::move(msg.fd)};
}

}  // namespace aerie::air
