#include "air/mux.hpp"

#include <fmt/format.h>

namespace aerie::air::mux {

namespace {

void put_u32(char* at, uint32_t v) {
    at[0] = static_cast<char>(v >> 24);
    at[1] = static_cast<char>(v >> 16);
    at[2] = static_cast<char>(v >> 8);
    at[3] = static_cast<char>(v);
}

uint32_t get_u32(const char* at) {
    auto b = [at](int i) { return static_cast<uint32_t>(static_cast<unsigned char>(at[i])); };
    return b(0) << 24 | b(1) << 16 | b(2) << 8 | b(3);
}

void append_u32_frame(std::string& out, FrameType type, uint32_t stream, uint32_t value) {
    encode_header(out, type, stream, 4);
    char v[4];
    put_u32(v, value);
    out.append(v, 4);
}

void check_open_field(std::string_view field, const char* what) {
    if (field.empty()) throw MuxError(fmt::format("OPEN: empty {}", what));
    if (field.size() > kMaxOpenField) throw MuxError(fmt::format("OPEN: {} longer than {} bytes", what, kMaxOpenField));
    if (field.find('\0') != std::string_view::npos) throw MuxError(fmt::format("OPEN: {} holds NUL", what));
}

}  // namespace

void encode_header(char* at, FrameType type, uint32_t stream, uint32_t length) {
    if (stream == 0) throw MuxError("stream 0");
    if (length > kMaxPayload) throw MuxError("payload over 65536 bytes");
    at[0] = static_cast<char>(type);
    put_u32(at + 1, stream);
    put_u32(at + 5, length);
}

void encode_header(std::string& out, FrameType type, uint32_t stream, uint32_t length) {
    char h[kHeaderSize];
    encode_header(h, type, stream, length);
    out.append(h, kHeaderSize);
}

void encode_ping(std::string& out) {
    char h[kHeaderSize] = {static_cast<char>(FrameType::Ping), 0, 0, 0, 0, 0, 0, 0, 0};
    out.append(h, kHeaderSize);
}

void encode_open(std::string& out, uint32_t stream, const OpenRequest& open) {
    check_open_field(open.source, "source");
    check_open_field(open.target, "target");
    check_open_field(open.service, "service");
    size_t length = open.source.size() + open.target.size() + open.service.size() + 2;
    encode_header(out, FrameType::Open, stream, static_cast<uint32_t>(length));
    out += open.source;
    out += '\0';
    out += open.target;
    out += '\0';
    out += open.service;
}

void encode_data(std::string& out, uint32_t stream, std::string_view bytes) {
    if (bytes.size() > kMaxPayload) throw MuxError("payload over 65536 bytes");
    encode_header(out, FrameType::Data, stream, static_cast<uint32_t>(bytes.size()));
    out += bytes;
}

void encode_eof(std::string& out, uint32_t stream) { encode_header(out, FrameType::Eof, stream, 0); }

void encode_exit(std::string& out, uint32_t stream, uint32_t code) {
    append_u32_frame(out, FrameType::Exit, stream, code);
}

void encode_reset(std::string& out, uint32_t stream, std::string_view reason) {
    reason = reason.substr(0, kMaxResetReason);
    encode_header(out, FrameType::Reset, stream, static_cast<uint32_t>(reason.size()));
    out += reason;
}

void encode_window(std::string& out, uint32_t stream, uint32_t bytes) {
    append_u32_frame(out, FrameType::Window, stream, bytes);
}

OpenRequest parse_open(std::string_view payload) {
    auto first = payload.find('\0');
    if (first == std::string_view::npos) throw MuxError("OPEN: not three fields");
    auto second = payload.find('\0', first + 1);
    if (second == std::string_view::npos) throw MuxError("OPEN: not three fields");
    OpenRequest open{std::string(payload.substr(0, first)), std::string(payload.substr(first + 1, second - first - 1)),
                     std::string(payload.substr(second + 1))};
    check_open_field(open.source, "source");
    check_open_field(open.target, "target");
    check_open_field(open.service, "service");  // a third NUL lands here
    return open;
}

void Decoder::check_header() {
    uint8_t type = static_cast<uint8_t>(header_[0]);
    stream_ = get_u32(header_ + 1);
    remaining_ = get_u32(header_ + 5);
    if (type < 1 || type > 7) throw MuxError(fmt::format("unknown frame type {}", type));
    type_ = static_cast<FrameType>(type);
    if (type_ == FrameType::Ping) {
        if (stream_ != 0 || remaining_ != 0) throw MuxError("PING not on stream 0 or with a payload");
        return;
    }
    if (stream_ == 0) throw MuxError("frame for stream 0");
    if (remaining_ > kMaxPayload) throw MuxError(fmt::format("frame payload of {} bytes", remaining_));
    switch (type_) {
        case FrameType::Open:
            if (remaining_ > 3 * kMaxOpenField + 2) throw MuxError("OPEN too long");
            break;
        case FrameType::Eof:
            if (remaining_ != 0) throw MuxError("EOF with a payload");
            break;
        case FrameType::Ping:
            break;
        case FrameType::Exit:
        case FrameType::Window:
            if (remaining_ != 4) throw MuxError(type_ == FrameType::Exit ? "EXIT not 4 bytes" : "WINDOW not 4 bytes");
            break;
        case FrameType::Reset:
            if (remaining_ > kMaxResetReason) throw MuxError("RESET reason too long");
            break;
        case FrameType::Data:
            break;
    }
}

Event Decoder::control_event(OpenRequest& storage) {
    Event e{type_, stream_, {}};
    switch (type_) {
        case FrameType::Open:
            storage = parse_open(control_);
            e.open = &storage;
            break;
        case FrameType::Exit:
        case FrameType::Window:
            e.value = get_u32(control_.data());
            break;
        case FrameType::Reset:
            e.bytes = control_;
            break;
        case FrameType::Eof:
        case FrameType::Data:
        case FrameType::Ping:
            break;
    }
    return e;
}

}  // namespace aerie::air::mux
