#include "qrexec/client.hpp"

#include <sys/socket.h>

#include <asio.hpp>

#include "qrexec/agent.hpp"
#include "qrexec/data_pump.hpp"
#include "qrexec/protocol.hpp"
#include "qrexec/vchan.hpp"

namespace aerie::qrexec {

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
    if (!write_all(agent.get(), wire.data(), wire.size())) {
        out.error = "cannot send the request to the agent";
        return out;
    }
    char raw[kHeaderSize];
    std::vector<UniqueFd> fds;
    if (!read_all_fds(agent.get(), raw, sizeof raw, &fds)) {
        out.error = "the agent closed the connection";
        return out;
    }
    Header h;
    std::string payload;
    try {
        h = decode_header(std::string_view(raw, sizeof raw), 8 + kIdentLen);
        payload.resize(h.len);
        if (!read_all_fds(agent.get(), payload.data(), payload.size(), &fds)) throw ProtocolError("short reply");
        Message m = decode_message(h, payload);
        if (std::holds_alternative<ServiceRefused>(m)) {
            out.refused = true;
            return out;
        }
        auto* sc = std::get_if<ServiceConnect>(&m);
        if (!sc) throw ProtocolError(std::string("unexpected ") + msg_type_name(h.type));
        if (!fds.empty()) {
            out.channel = std::move(fds.front());
            return out;
        }
        // No channel handed over: be the channel's server in the socket directory.
        std::string vpath = vchan_socket_path(vchan_socket_dir(), vchan_local_domain(), sc->connect_domain,
                                              sc->connect_port);
        UniqueFd listener = vchan_listen(vpath);
        UniqueFd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC));
        ::unlink(vpath.c_str());
        if (!conn) throw ProtocolError("data channel accept failed");
        out.channel = std::move(conn);
    } catch (const std::exception& e) {
        out.error = e.what();
    }
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
