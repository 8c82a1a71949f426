#include "qrexec/client.hpp"

#include <endian.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <asio.hpp>

#include "qrexec/agent.hpp"
#include "qrexec/data_pump.hpp"
#include "qrexec/protocol.hpp"
#include "qrexec/vchan.hpp"

namespace aerie::qrexec {

namespace {

// Aerie's marker on the request: one descriptor attached to its bytes. A
// Qubes agent reads the request with read(2), so the kernel drops the
// descriptor unseen; Aerie's agent takes it as "this caller accepts the data
// channel as a descriptor" (docs/qrexec-wire.md).
bool send_request(int agent, const std::string& wire) {
    UniqueFd marker = descriptor_marker();
    return write_all_with_fd(agent, wire, marker ? marker.get() : -1);
}

// Serves the data channel in the socket directory, as a Qubes qrexec-client-vm
// does when its agent answers with a bare <domain, port>.
UniqueFd serve_channel(uint32_t domain, uint32_t port, std::chrono::milliseconds timeout, std::string* error) {
    std::string path = vchan_socket_path(vchan_socket_dir(), vchan_local_domain(), domain, port);
    UniqueFd listener;
    try {
        listener = vchan_listen(path);
    } catch (const std::exception& e) {
        *error = e.what();
        return {};
    }
    pollfd pfd{listener.get(), POLLIN, 0};
    int r;
    do {
        r = ::poll(&pfd, 1, static_cast<int>(timeout.count()));
    } while (r < 0 && errno == EINTR);
    UniqueFd conn;
    if (r > 0) conn.reset(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
    ::unlink(path.c_str());
    if (!conn) *error = "data channel " + path + ": no connection";
    return conn;
}

}  // namespace

CallChannel open_call(const CallRequest& request) {
    CallChannel out;
    std::string path = request.agent_socket.empty() ? kDefaultAgentSocket : request.agent_socket;
    UniqueFd agent = vchan_connect(path, std::chrono::milliseconds(0));
    if (!agent) {
        out.error = "cannot connect to the qrexec agent at " + path;
        return out;
    }
    TriggerService trigger{4, request.source_qube.value_or(""), request.target, "SOCKET",
                           request.service_and_arg};
    std::string wire;
    try {
        wire = encode_trigger(trigger);
    } catch (const ProtocolError& e) {
        out.error = e.what();
        return out;
    }
    if (!send_request(agent.get(), wire)) {
        out.error = "cannot send the request to the agent";
        return out;
    }
    // The answer: the bare struct exec_params <connect_domain, connect_port>
    // (8 bytes), maybe with the channel attached; the agent closing instead
    // is a refusal.
    char raw[8];
    size_t got = 0;
    std::vector<UniqueFd> fds;
    while (got < sizeof raw) {
        ssize_t n = recv_with_fds(agent.get(), raw + got, sizeof raw - got, 0, &fds);
        if (n < 0 && errno == EINTR) continue;
        if (n == 0 && got == 0) {
            out.refused = true;
            return out;
        }
        if (n <= 0) {
            out.error = n == 0 ? "short answer from the agent" : std::string("read: ") + std::strerror(errno);
            return out;
        }
        got += static_cast<size_t>(n);
    }
    auto u32 = [&raw](int at) {
        uint32_t v;
        std::memcpy(&v, raw + at, 4);
        return le32toh(v);
    };
    out.connect_domain = u32(0);
    out.connect_port = u32(4);
    if (!fds.empty()) {
        out.channel = std::move(fds.front());
    } else {
        out.channel = serve_channel(out.connect_domain, out.connect_port, request.timeout, &out.error);
        if (!out.channel) return out;
    }
    // Kept open for the whole call: its end tells the agent the call is over.
    out.agent = std::move(agent);
    return out;
}

int run_call(UniqueFd channel, UniqueFd input, UniqueFd output, UniqueFd errors) {
    asio::io_context io;
    DataPump::Local local;
    local.input = std::move(input);
    local.output = std::move(output);
    local.errors = std::move(errors);
    int result = 255;
    auto pump = DataPump::create(io, std::move(channel), DataPump::Role::Caller, std::move(local));
    pump->start([&result](int code) { result = code; });
    io.run();
    return result;
}

CallResult call_service(const CallRequest& request, std::string_view input) {
    CallResult result;
    CallChannel ch = open_call(request);
    if (ch.refused) {
        result.exit_code = kExitRefused;
        return result;
    }
    if (!ch.channel) {
        result.errors = ch.error;
        result.exit_code = kExitProblem;
        return result;
    }
    // A small blocking exchange: HELLO, stdin + EOF, then read to the exit code.
    int fd = ch.channel.get();
    std::string out = encode_hello(kProtocolVersion);
    for (size_t at = 0; at < input.size(); at += kMaxDataChunk)
        out += encode_data(MsgType::DataStdin, input.substr(at, kMaxDataChunk));
    out += encode_data(MsgType::DataStdin, {});
    if (!write_all(fd, out.data(), out.size())) return result;
    std::string payload;
    for (;;) {
        char raw[kHeaderSize];
        if (!read_all(fd, raw, sizeof raw)) return result;
        Header h;
        try {
            h = decode_header(std::string_view(raw, sizeof raw));
        } catch (const ProtocolError&) {
            return result;
        }
        payload.resize(h.len);
        if (h.len && !read_all(fd, payload.data(), h.len)) return result;
        auto type = static_cast<MsgType>(h.type);
        if (type == MsgType::DataStdout) result.output += payload;
        if (type == MsgType::DataStderr) result.errors += payload;
        if (type == MsgType::DataExitCode && h.len == 4) {
            auto b = [&](int i) { return static_cast<uint32_t>(static_cast<unsigned char>(payload[i])); };
            result.exit_code = static_cast<int>(b(0) | (b(1) << 8) | (b(2) << 16) | (b(3) << 24));
            return result;
        }
    }
}

}  // namespace aerie::qrexec
