// Admin API requests as the benchmarks make them: one fresh connection per
// request, the raw reply returned ("" when the daemon could not be reached
// or closed without a reply), framing from admin/wire.hpp.
#pragma once

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <string_view>

#include "admin/wire.hpp"

namespace aerie::bench {

inline std::string call(const std::string& socket_path, std::string_view request) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return {};
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket_path.c_str(), sizeof addr.sun_path - 1);
    std::string reply;
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
        size_t sent = 0;
        while (sent < request.size()) {
            ssize_t n = ::write(fd, request.data() + sent, request.size() - sent);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            sent += static_cast<size_t>(n);
        }
        ::shutdown(fd, SHUT_WR);
        char buf[65536];
        for (;;) {
            ssize_t n = ::read(fd, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n <= 0) break;
            reply.append(buf, static_cast<size_t>(n));
        }
    }
    ::close(fd);
    return reply;
}

// A request from dom0; `method` may carry its argument ("admin.vm.Start", "...Set+memory").
inline std::string encode(std::string_view method, std::string_view dest, std::string_view payload = {}) {
    return admin::encode_request({std::string(method), "", "dom0", std::string(dest), std::string(payload)});
}

inline bool success(const std::string& reply) {
    return reply.size() >= 2 && reply[0] == '0' && reply[1] == '\0';
}

// A reply for a message: "TYPE: MESSAGE" for a Qubes exception.
inline std::string shown(const std::string& reply) {
    if (reply.empty()) return "(connection closed without a reply)";
    auto parsed = admin::parse_reply(reply);
    if (parsed && parsed->kind == admin::ApiReply::Kind::Exception) return parsed->exc_type + ": " + parsed->message;
    return reply.substr(0, 200);
}

}  // namespace aerie::bench
