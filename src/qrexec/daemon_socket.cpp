#include "qrexec/daemon_socket.hpp"

#include <vector>

#include "qrexec/vchan.hpp"

namespace aerie::qrexec {

namespace {

uint32_t get_u32(const char* b) {
    auto c = [&](int i) { return static_cast<uint32_t>(static_cast<unsigned char>(b[i])); };
    return c(0) | (c(1) << 8) | (c(2) << 16) | (c(3) << 24);
}

void put_u32(std::string& out, uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

}  // namespace

UniqueFd connect_daemon_socket(const std::string& socket_dir, const std::string& qube,
                               std::chrono::milliseconds timeout, std::string* why) {
    UniqueFd fd = vchan_connect(socket_dir + "/qrexec." + qube, timeout);
    if (!fd) {
        *why = "cannot connect to the qrexec daemon of " + qube;
        return {};
    }
    char hello[kHeaderSize + 4];
    if (!read_all(fd.get(), hello, sizeof hello) || get_u32(hello) != static_cast<uint32_t>(MsgType::Hello) ||
        get_u32(hello + 4) != 4 || get_u32(hello + 8) < kClientProtocolVersion) {
        // A daemon closes before HELLO while its qube's agent is gone.
        *why = "the qrexec agent of " + qube + " is not connected (see its qrexec-daemon log)";
        return {};
    }
    std::string ours = encode_hello(kClientProtocolVersion);
    if (!write_all(fd.get(), ours.data(), ours.size())) {
        *why = "the qrexec daemon of " + qube + " closed the connection";
        return {};
    }
    return fd;
}

std::optional<DataPortGrant> request_data_port(int daemon, MsgType type, uint32_t connect_domain,
                                               std::string_view body, int offered, std::string* why) {
    std::string request = encode_header(type, static_cast<uint32_t>(8 + body.size()));
    put_u32(request, connect_domain);
    put_u32(request, 0);
    request.append(body);
    if (!write_all_with_fd(daemon, request, offered)) {
        *why = "cannot send the request to the qrexec daemon";
        return std::nullopt;
    }
    char reply[kHeaderSize + 8];
    std::vector<UniqueFd> fds;
    if (!read_all_fds(daemon, reply, sizeof reply, &fds)) {
        *why = "the qrexec daemon refused the request (no data port free for this caller, or its agent "
               "disconnected: see its log)";
        return std::nullopt;
    }
    if (get_u32(reply) != static_cast<uint32_t>(type) || get_u32(reply + 4) != 8) {
        *why = "invalid answer from the qrexec daemon";
        return std::nullopt;
    }
    return DataPortGrant{get_u32(reply + kHeaderSize), get_u32(reply + kHeaderSize + 4), !fds.empty()};
}

std::string ident_field(std::string_view ident) {
    std::string out(ident.substr(0, kIdentLen - 1));
    out.resize(kIdentLen, '\0');
    return out;
}

}  // namespace aerie::qrexec
