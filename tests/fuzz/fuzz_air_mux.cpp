// The frames a peer relay sends on a TLS link (air/mux.hpp): any bytes are
// decoded or refused with a MuxError, never more; how the bytes are split
// between feeds changes nothing; what is decoded encodes to bytes that decode
// the same.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "air/mux.hpp"

namespace {

using namespace aerie::air::mux;

struct Frame {
    FrameType type;
    uint32_t stream;
    std::string bytes;
    OpenRequest open;
    uint32_t value;
    bool operator==(const Frame& o) const {
        return type == o.type && stream == o.stream && bytes == o.bytes && open.source == o.open.source &&
               open.target == o.open.target && open.service == o.open.service && value == o.value;
    }
};

// The frames in `wire` fed in pieces of `step` bytes (DATA pieces of one
// stream in a row joined), and whether the decoder refused it.
bool decode(std::string_view wire, size_t step, std::vector<Frame>& frames) {
    Decoder d;
    try {
        for (size_t at = 0; at < wire.size(); at += step)
            d.feed(wire.substr(at, step), [&](const Event& e) {
                if (e.type == FrameType::Data && !frames.empty() && frames.back().type == FrameType::Data &&
                    frames.back().stream == e.stream) {
                    frames.back().bytes += e.bytes;
                    return;
                }
                frames.push_back({e.type, e.stream, std::string(e.bytes), e.open ? *e.open : OpenRequest{}, e.value});
            });
    } catch (const MuxError&) {
        return false;
    }
    return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    if (size < 1) return 0;
    size_t step = 1 + data[0] % 64;
    std::string_view wire(reinterpret_cast<const char*>(data) + 1, size - 1);
    std::vector<Frame> whole, pieces;
    bool ok = decode(wire, wire.size() ? wire.size() : 1, whole);
    if (decode(wire, step, pieces) != ok || pieces != whole) std::abort();  // refused at the same frame
    if (!ok) return 0;
    std::string again;
    for (const Frame& f : whole) switch (f.type) {
            case FrameType::Open: encode_open(again, f.stream, f.open); break;
            case FrameType::Data:
                for (size_t at = 0; at < f.bytes.size(); at += kMaxPayload)
                    encode_data(again, f.stream, std::string_view(f.bytes).substr(at, kMaxPayload));
                break;
            case FrameType::Eof: encode_eof(again, f.stream); break;
            case FrameType::Exit: encode_exit(again, f.stream, f.value); break;
            case FrameType::Reset: encode_reset(again, f.stream, f.bytes); break;
            case FrameType::Window: encode_window(again, f.stream, f.value); break;
            case FrameType::Ping: encode_ping(again); break;
        }
    std::vector<Frame> reread;
    if (!decode(again, again.size() ? again.size() : 1, reread) || reread != whole) std::abort();
    return 0;
}
