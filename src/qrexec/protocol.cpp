#include "qrexec/protocol.hpp"

#include <cstdio>
#include <cstring>

namespace aerie::qrexec {

const char* msg_type_name(uint32_t type) {
    switch (static_cast<MsgType>(type)) {
        case MsgType::DataStdin: return "MSG_DATA_STDIN";
        case MsgType::DataStdout: return "MSG_DATA_STDOUT";
        case MsgType::DataStderr: return "MSG_DATA_STDERR";
        case MsgType::DataExitCode: return "MSG_DATA_EXIT_CODE";
        case MsgType::ExecCmdline: return "MSG_EXEC_CMDLINE";
        case MsgType::JustExec: return "MSG_JUST_EXEC";
        case MsgType::ServiceConnect: return "MSG_SERVICE_CONNECT";
        case MsgType::ServiceRefused: return "MSG_SERVICE_REFUSED";
        case MsgType::TriggerService: return "MSG_TRIGGER_SERVICE";
        case MsgType::ConnectionTerminated: return "MSG_CONNECTION_TERMINATED";
        case MsgType::TriggerService3: return "MSG_TRIGGER_SERVICE3";
        case MsgType::TriggerService4: return "MSG_TRIGGER_SERVICE4";
        case MsgType::Hello: return "MSG_HELLO";
    }
    return "unknown message";
}

namespace {

uint32_t get_u32(std::string_view bytes, size_t at) {
    auto b = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(bytes[at + i])); };
    return b(0) | (b(1) << 8) | (b(2) << 16) | (b(3) << 24);
}

void put_u32(std::string& out, uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

[[noreturn]] void bad(uint32_t type, const std::string& what) {
    throw ProtocolError(std::string(msg_type_name(type)) + ": " + what);
}

// A fixed-size field that must hold a NUL-terminated string.
std::string get_fixed(uint32_t type, std::string_view field, const char* name) {
    auto nul = field.find('\0');
    if (nul == std::string_view::npos) bad(type, std::string(name) + " is not NUL-terminated");
    return std::string(field.substr(0, nul));
}

// A trailing variable-length string that must end with its only NUL.
std::string get_trailing(uint32_t type, std::string_view rest, const char* name, size_t max_len) {
    if (rest.empty() || rest.back() != '\0') bad(type, std::string(name) + " is not NUL-terminated");
    rest.remove_suffix(1);
    if (rest.find('\0') != std::string_view::npos) bad(type, std::string(name) + " contains a NUL byte");
    if (rest.size() > max_len)
        bad(type, std::string(name) + " longer than " + std::to_string(max_len) + " bytes");
    return std::string(rest);
}

void need(uint32_t type, std::string_view payload, size_t len, bool exact) {
    if (payload.size() < len || (exact && payload.size() != len))
        bad(type, "payload of " + std::to_string(payload.size()) + " bytes, expected " +
                      (exact ? "" : "at least ") + std::to_string(len));
}

}  // namespace

Header decode_header(std::string_view bytes, size_t max_payload) {
    if (bytes.size() != kHeaderSize) throw ProtocolError("short message header");
    Header h{get_u32(bytes, 0), get_u32(bytes, 4)};
    if (h.len > max_payload)
        throw ProtocolError(std::string(msg_type_name(h.type)) + ": length " + std::to_string(h.len) +
                            " over the limit of " + std::to_string(max_payload));
    return h;
}

Message decode_message(const Header& header, std::string_view payload) {
    uint32_t type = header.type;
    if (payload.size() != header.len) bad(type, "payload length does not match the header");
    switch (static_cast<MsgType>(type)) {
        case MsgType::Hello:
            need(type, payload, 4, /*exact=*/false);  // later versions may append fields
            return Hello{get_u32(payload, 0)};
        case MsgType::ExecCmdline:
        case MsgType::JustExec: {
            need(type, payload, 9, false);
            ExecParams p;
            p.connect_domain = get_u32(payload, 0);
            p.connect_port = get_u32(payload, 4);
            p.cmdline = get_trailing(type, payload.substr(8), "command line", kMaxQrexecCmdLen);
            return p;
        }
        case MsgType::ServiceConnect: {
            need(type, payload, 8 + kIdentLen, true);
            ServiceConnect p;
            p.connect_domain = get_u32(payload, 0);
            p.connect_port = get_u32(payload, 4);
            p.ident = get_fixed(type, payload.substr(8, kIdentLen), "ident");
            return p;
        }
        case MsgType::ServiceRefused:
            need(type, payload, kIdentLen, true);
            return ServiceRefused{get_fixed(type, payload, "ident")};
        case MsgType::TriggerService: {
            need(type, payload, kServiceNameLenV2 + kDomainNameLenV2 + kIdentLen, true);
            TriggerService t;
            t.version = 2;
            t.service_name = get_fixed(type, payload.substr(0, kServiceNameLenV2), "service name");
            t.target_domain =
                get_fixed(type, payload.substr(kServiceNameLenV2, kDomainNameLenV2), "target domain");
            t.ident = get_fixed(type, payload.substr(kServiceNameLenV2 + kDomainNameLenV2), "ident");
            return t;
        }
        case MsgType::TriggerService3: {
            need(type, payload, kDomainNameLen + kIdentLen + 1, false);
            TriggerService t;
            t.version = 3;
            t.target_domain = get_fixed(type, payload.substr(0, kDomainNameLen), "target domain");
            t.ident = get_fixed(type, payload.substr(kDomainNameLen, kIdentLen), "ident");
            t.service_name = get_trailing(type, payload.substr(kDomainNameLen + kIdentLen),
                                          "service name", kMaxServiceNameLen);
            return t;
        }
        case MsgType::TriggerService4: {
            need(type, payload, 2 * kDomainNameLen + kIdentLen + 1, false);
            TriggerService t;
            t.version = 4;
            t.source_domain = get_fixed(type, payload.substr(0, kDomainNameLen), "source domain");
            t.target_domain =
                get_fixed(type, payload.substr(kDomainNameLen, kDomainNameLen), "target domain");
            t.ident = get_fixed(type, payload.substr(2 * kDomainNameLen, kIdentLen), "ident");
            t.service_name = get_trailing(type, payload.substr(2 * kDomainNameLen + kIdentLen),
                                          "service name", kMaxServiceNameLen);
            return t;
        }
        case MsgType::ConnectionTerminated:
            // Exactly struct exec_params (domain, port) and nothing more: a
            // Qubes daemon stops at any other size.
            need(type, payload, 8, true);
            return ConnectionTerminated{get_u32(payload, 0), get_u32(payload, 4)};
        case MsgType::DataStdin:
        case MsgType::DataStdout:
        case MsgType::DataStderr:
            if (payload.size() > kMaxDataChunk) bad(type, "data chunk over 65536 bytes");
            return Data{static_cast<MsgType>(type), std::string(payload)};
        case MsgType::DataExitCode:
            need(type, payload, 4, true);
            return ExitCode{get_u32(payload, 0)};
    }
    throw ProtocolError("unknown message type 0x" + [&] {
        char buf[16];
        std::snprintf(buf, sizeof buf, "%x", type);
        return std::string(buf);
    }());
}

std::string encode_header(MsgType type, uint32_t len) {
    std::string out;
    out.reserve(kHeaderSize + len);
    put_u32(out, static_cast<uint32_t>(type));
    put_u32(out, len);
    return out;
}

void put_fixed(std::string& out, std::string_view s, size_t field_len) {
    if (s.size() >= field_len || s.find('\0') != std::string_view::npos)
        throw ProtocolError("field '" + std::string(s.substr(0, 64)) + "' does not fit in " +
                            std::to_string(field_len) + " bytes");
    out.append(s);
    out.append(field_len - s.size(), '\0');
}

std::string encode_hello(uint32_t version) {
    std::string out = encode_header(MsgType::Hello, 4);
    put_u32(out, version);
    return out;
}

std::string encode_exec(MsgType type, const ExecParams& p) {
    if (p.cmdline.size() > kMaxQrexecCmdLen) throw ProtocolError("command line too long");
    std::string out = encode_header(type, static_cast<uint32_t>(8 + p.cmdline.size() + 1));
    put_u32(out, p.connect_domain);
    put_u32(out, p.connect_port);
    out.append(p.cmdline);
    out.push_back('\0');
    return out;
}

std::string encode_service_connect(const ServiceConnect& p) {
    std::string out = encode_header(MsgType::ServiceConnect, 8 + kIdentLen);
    put_u32(out, p.connect_domain);
    put_u32(out, p.connect_port);
    put_fixed(out, p.ident, kIdentLen);
    return out;
}

std::string encode_service_refused(std::string_view ident) {
    std::string out = encode_header(MsgType::ServiceRefused, kIdentLen);
    put_fixed(out, ident, kIdentLen);
    return out;
}

std::string encode_trigger(const TriggerService& t) {
    std::string body;
    MsgType type;
    if (t.version == 2) {
        type = MsgType::TriggerService;
        put_fixed(body, t.service_name, kServiceNameLenV2);
        put_fixed(body, t.target_domain, kDomainNameLenV2);
        put_fixed(body, t.ident, kIdentLen);
    } else {
        if (t.service_name.size() > kMaxServiceNameLen) throw ProtocolError("service name too long");
        type = t.version == 3 ? MsgType::TriggerService3 : MsgType::TriggerService4;
        if (t.version != 3) put_fixed(body, t.source_domain.value_or(""), kDomainNameLen);
        put_fixed(body, t.target_domain, kDomainNameLen);
        put_fixed(body, t.ident, kIdentLen);
        body.append(t.service_name);
        body.push_back('\0');
    }
    return encode_header(type, static_cast<uint32_t>(body.size())) + body;
}

std::string encode_connection_terminated(uint32_t domain, uint32_t port) {
    std::string out = encode_header(MsgType::ConnectionTerminated, 8);
    put_u32(out, domain);
    put_u32(out, port);
    return out;
}

std::string encode_connect_params(uint32_t domain, uint32_t port) {
    std::string out;
    put_u32(out, domain);
    put_u32(out, port);
    return out;
}

std::string encode_data(MsgType stream, std::string_view bytes) {
    if (bytes.size() > kMaxDataChunk) throw ProtocolError("data chunk too large");
    std::string out = encode_header(stream, static_cast<uint32_t>(bytes.size()));
    out.append(bytes);
    return out;
}

std::string encode_exit_code(uint32_t code) {
    std::string out = encode_header(MsgType::DataExitCode, 4);
    put_u32(out, code);
    return out;
}

}  // namespace aerie::qrexec
