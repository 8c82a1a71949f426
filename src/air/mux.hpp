// The frames streams are multiplexed with on a TLS link (docs/air.md):
// `type:u8 stream:u32be length:u32be payload`, payload <= 65536. Pure: no I/O.
// The decoder is incremental and hands DATA payloads on in the pieces they
// arrived in (no copy of bulk data); control frames are given whole.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

namespace aerie::air::mux {

// Ping (stream 0, no payload) is the link's heartbeat: a side that hears
// nothing for a while takes the link for dead (a cut cable sends no RST).
enum class FrameType : uint8_t { Open = 1, Data = 2, Eof = 3, Exit = 4, Reset = 5, Window = 6, Ping = 7 };

inline constexpr size_t kHeaderSize = 9;
inline constexpr uint32_t kMaxPayload = 65536;
inline constexpr size_t kMaxOpenField = 255;    // each of source, target, service
inline constexpr size_t kMaxResetReason = 1024;
inline constexpr uint32_t kInitialWindow = 1 << 20;

struct MuxError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct OpenRequest {
    std::string source;   // the caller's name in the opening zone
    std::string target;   // the callee's name in the other zone
    std::string service;  // SVC[+ARG]
};

// Encoders append one frame to `out`. They throw MuxError for what the
// decoder would refuse (an empty or oversized OPEN field, a field holding NUL,
// a payload over kMaxPayload, stream 0).
void encode_header(std::string& out, FrameType type, uint32_t stream, uint32_t length);
void encode_header(char* at, FrameType type, uint32_t stream, uint32_t length);  // kHeaderSize bytes
void encode_open(std::string& out, uint32_t stream, const OpenRequest& open);
void encode_data(std::string& out, uint32_t stream, std::string_view bytes);
void encode_eof(std::string& out, uint32_t stream);
void encode_exit(std::string& out, uint32_t stream, uint32_t code);
void encode_reset(std::string& out, uint32_t stream, std::string_view reason);  // cut to kMaxResetReason
void encode_window(std::string& out, uint32_t stream, uint32_t bytes);
void encode_ping(std::string& out);

// What the decoder hands on. For Data, `bytes` is one piece of a DATA frame's
// payload (a frame may come in several pieces); for the other types the
// fields of the whole frame. Views are valid during the callback only.
struct Event {
    FrameType type;
    uint32_t stream;
    std::string_view bytes;  // Data: a piece; Reset: the reason
    const OpenRequest* open = nullptr;  // Open
    uint32_t value = 0;                 // Exit: code; Window: bytes
};

// Parses an OPEN payload; throws MuxError.
OpenRequest parse_open(std::string_view payload);

class Decoder {
public:
    // Feeds bytes; calls sink(const Event&) for everything complete in them.
    // Throws MuxError on the first violation (unknown type, stream 0, payload
    // over kMaxPayload, a malformed OPEN, EOF with a payload, EXIT or WINDOW
    // not 4 bytes, a RESET reason over kMaxResetReason); the decoder is then
    // unusable (the link must be dropped).
    template <class Sink>
    void feed(std::string_view bytes, Sink&& sink);

private:
    enum class State { Header, Payload };
    // Called with whole control frames; returns the event to hand on.
    Event control_event(OpenRequest& storage);
    void check_header();

    State state_ = State::Header;
    char header_[kHeaderSize];
    size_t header_have_ = 0;
    FrameType type_{};
    uint32_t stream_ = 0;
    uint32_t remaining_ = 0;  // payload bytes still to come
    std::string control_;     // a control frame's payload so far
};

template <class Sink>
void Decoder::feed(std::string_view bytes, Sink&& sink) {
    for (;;) {
        if (state_ == State::Header) {
            if (bytes.empty()) return;
            size_t take = std::min(kHeaderSize - header_have_, bytes.size());
            std::memcpy(header_ + header_have_, bytes.data(), take);
            header_have_ += take;
            bytes.remove_prefix(take);
            if (header_have_ < kHeaderSize) return;
            header_have_ = 0;
            check_header();
            state_ = State::Payload;
            control_.clear();
        }
        size_t take = std::min<size_t>(remaining_, bytes.size());
        if (type_ == FrameType::Data) {
            if (take) sink(Event{FrameType::Data, stream_, bytes.substr(0, take)});
        } else {
            control_.append(bytes.data(), take);
        }
        remaining_ -= static_cast<uint32_t>(take);
        bytes.remove_prefix(take);
        if (remaining_ > 0) return;  // all of `bytes` taken, the frame goes on
        state_ = State::Header;
        if (type_ != FrameType::Data) {
            OpenRequest storage;
            sink(control_event(storage));
        }
    }
}

}  // namespace aerie::air::mux
