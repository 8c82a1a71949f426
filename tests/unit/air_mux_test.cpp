// The frames of the TLS transport (air/mux.hpp): what encodes to what, that
// any split of the bytes decodes the same, and what the decoder refuses.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "air/mux.hpp"

namespace {

using namespace aerie::air::mux;

struct Seen {
    FrameType type;
    uint32_t stream;
    std::string bytes;  // Data (pieces joined) or Reset reason
    OpenRequest open;
    uint32_t value = 0;
};

// Decodes `wire` fed in pieces of `step` bytes; consecutive DATA pieces of
// one stream are joined.
std::vector<Seen> decode(const std::string& wire, size_t step) {
    Decoder d;
    std::vector<Seen> seen;
    for (size_t at = 0; at < wire.size(); at += step) {
        d.feed(std::string_view(wire).substr(at, step), [&](const Event& e) {
            if (e.type == FrameType::Data && !seen.empty() && seen.back().type == FrameType::Data &&
                seen.back().stream == e.stream) {
                seen.back().bytes += e.bytes;
                return;
            }
            Seen s{e.type, e.stream, std::string(e.bytes), e.open ? *e.open : OpenRequest{}, e.value};
            seen.push_back(s);
        });
    }
    return seen;
}

std::string refusal(const std::string& wire) {
    try {
        decode(wire, wire.size() ? wire.size() : 1);
    } catch (const MuxError& e) {
        return e.what();
    }
    return "(accepted)";
}

std::string header(uint8_t type, uint32_t stream, uint32_t length) {
    std::string h;
    h += static_cast<char>(type);
    for (uint32_t v : {stream, length})
        for (int shift = 24; shift >= 0; shift -= 8) h += static_cast<char>(v >> shift);
    return h;
}

TEST(AirMux, HeaderIsBigEndian) {
    std::string out;
    encode_window(out, 0x01020304, 0x00100000);
    EXPECT_EQ(out, std::string("\x06\x01\x02\x03\x04\x00\x00\x00\x04\x00\x10\x00\x00", 13));
}

TEST(AirMux, OpenIsThreeNulSeparatedFields) {
    std::string out;
    encode_open(out, 1, {"work", "vault", "qubes.Filecopy+x"});
    EXPECT_EQ(out, header(1, 1, 27) + std::string("work\0vault\0qubes.Filecopy+x", 27));
}

TEST(AirMux, EveryFrameRoundTripsWhateverTheSplit) {
    std::string big(200000, 'x');
    for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7);
    std::string wire;
    encode_open(wire, 3, {"a", "b", "svc"});
    for (size_t at = 0; at < big.size(); at += kMaxPayload)
        encode_data(wire, 3, std::string_view(big).substr(at, kMaxPayload));
    encode_data(wire, 3, "");
    encode_eof(wire, 3);
    encode_window(wire, 4, 65536);
    encode_exit(wire, 3, 42);
    encode_reset(wire, 5, "no such qube");
    for (size_t step : {size_t(1), size_t(2), size_t(9), size_t(10), size_t(4096), size_t(65545), wire.size()}) {
        auto seen = decode(wire, step);
        ASSERT_EQ(seen.size(), 6u) << step;
        EXPECT_EQ(seen[0].type, FrameType::Open);
        EXPECT_EQ(seen[0].open.source, "a");
        EXPECT_EQ(seen[0].open.target, "b");
        EXPECT_EQ(seen[0].open.service, "svc");
        EXPECT_EQ(seen[1].type, FrameType::Data);
        EXPECT_EQ(seen[1].bytes, big);
        EXPECT_EQ(seen[2].type, FrameType::Eof);
        EXPECT_EQ(seen[3].type, FrameType::Window);
        EXPECT_EQ(seen[3].stream, 4u);
        EXPECT_EQ(seen[3].value, 65536u);
        EXPECT_EQ(seen[4].type, FrameType::Exit);
        EXPECT_EQ(seen[4].value, 42u);
        EXPECT_EQ(seen[5].type, FrameType::Reset);
        EXPECT_EQ(seen[5].bytes, "no such qube");
    }
}

TEST(AirMux, DataComesInThePiecesItArrivedIn) {
    std::string wire;
    encode_data(wire, 1, "hello world");
    Decoder d;
    std::vector<std::string> pieces;
    auto sink = [&](const Event& e) { pieces.emplace_back(e.bytes); };
    d.feed(std::string_view(wire).substr(0, 12), sink);
    d.feed(std::string_view(wire).substr(12), sink);
    EXPECT_EQ(pieces, (std::vector<std::string>{"hel", "lo world"}));
}

TEST(AirMux, RefusesUnknownTypesStreamZeroAndOversizePayloads) {
    EXPECT_EQ(refusal(header(0, 1, 0)), "unknown frame type 0");
    EXPECT_EQ(refusal(header(8, 1, 0)), "unknown frame type 8");
    EXPECT_EQ(refusal(header(2, 0, 0)), "frame for stream 0");
    EXPECT_EQ(refusal(header(2, 1, 65537)), "frame payload of 65537 bytes");
    EXPECT_EQ(refusal(header(2, 1, 65536) + std::string(65536, 'a')), "(accepted)");
}

TEST(AirMux, PingIsStreamZeroWithoutPayload) {
    std::string wire;
    encode_ping(wire);
    EXPECT_EQ(wire, header(7, 0, 0));
    encode_eof(wire, 3);
    auto seen = decode(wire, 1);
    ASSERT_EQ(seen.size(), 2u);
    EXPECT_EQ(seen[0].type, FrameType::Ping);
    EXPECT_EQ(seen[0].stream, 0u);
    EXPECT_EQ(seen[1].type, FrameType::Eof);
    EXPECT_EQ(refusal(header(7, 1, 0)), "PING not on stream 0 or with a payload");
    EXPECT_EQ(refusal(header(7, 0, 1) + "x"), "PING not on stream 0 or with a payload");
}

TEST(AirMux, RefusesWrongSizesOfFixedFrames) {
    EXPECT_EQ(refusal(header(3, 1, 1) + "x"), "EOF with a payload");
    EXPECT_EQ(refusal(header(4, 1, 3) + "abc"), "EXIT not 4 bytes");
    EXPECT_EQ(refusal(header(4, 1, 5) + "abcde"), "EXIT not 4 bytes");
    EXPECT_EQ(refusal(header(6, 1, 0)), "WINDOW not 4 bytes");
    EXPECT_EQ(refusal(header(5, 1, 1025) + std::string(1025, 'r')), "RESET reason too long");
}

TEST(AirMux, RefusesMalformedOpen) {
    auto open = [](std::string payload) {
        return refusal(header(1, 1, static_cast<uint32_t>(payload.size())) + payload);
    };
    using namespace std::string_literals;
    EXPECT_EQ(open("a\0b\0c"s), "(accepted)");
    EXPECT_EQ(open("a\0b"s), "OPEN: not three fields");
    EXPECT_EQ(open("abc"s), "OPEN: not three fields");
    EXPECT_EQ(open("\0b\0c"s), "OPEN: empty source");
    EXPECT_EQ(open("a\0\0c"s), "OPEN: empty target");
    EXPECT_EQ(open("a\0b\0"s), "OPEN: empty service");
    EXPECT_EQ(open("a\0b\0c\0d"s), "OPEN: service holds NUL");
    EXPECT_EQ(open(std::string(256, 's') + "\0b\0c"s), "OPEN: source longer than 255 bytes");
    EXPECT_EQ(open(std::string(800, 's')), "OPEN too long");
}

TEST(AirMux, EncodersRefuseWhatTheDecoderWould) {
    std::string out;
    EXPECT_THROW(encode_open(out, 1, {"", "b", "c"}), MuxError);
    EXPECT_THROW(encode_open(out, 1, {"a", std::string("b\0", 2), "c"}), MuxError);
    EXPECT_THROW(encode_data(out, 1, std::string(65537, 'x')), MuxError);
    EXPECT_THROW(encode_eof(out, 0), MuxError);
    EXPECT_TRUE(out.empty());
    encode_reset(out, 1, std::string(5000, 'r'));
    EXPECT_EQ(out.size(), kHeaderSize + kMaxResetReason);
}

TEST(AirMux, AFrameEndingExactlyAtAFeedIsHandedOnAtOnce) {
    std::string wire;
    encode_eof(wire, 9);
    Decoder d;
    int seen = 0;
    d.feed(wire, [&](const Event& e) {
        EXPECT_EQ(e.type, FrameType::Eof);
        ++seen;
    });
    EXPECT_EQ(seen, 1);
}

}  // namespace
