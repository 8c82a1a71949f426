#include <gtest/gtest.h>

#include "qrexec/protocol.hpp"
#include "qrexec/sanitize.hpp"

namespace aerie::qrexec {
namespace {

// Splits an encoded message into header and payload and decodes it.
Message roundtrip(const std::string& wire) {
    Header h = decode_header(std::string_view(wire).substr(0, kHeaderSize));
    EXPECT_EQ(h.len, wire.size() - kHeaderSize);
    return decode_message(h, std::string_view(wire).substr(kHeaderSize));
}

std::string le32(uint32_t v) {
    std::string s;
    for (int i = 0; i < 4; ++i) s.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    return s;
}

TEST(QrexecProtocol, MessageNumbersAreQubes) {
    EXPECT_EQ(static_cast<uint32_t>(MsgType::DataStdin), 0x190u);
    EXPECT_EQ(static_cast<uint32_t>(MsgType::DataExitCode), 0x193u);
    EXPECT_EQ(static_cast<uint32_t>(MsgType::ExecCmdline), 0x200u);
    EXPECT_EQ(static_cast<uint32_t>(MsgType::ServiceRefused), 0x203u);
    EXPECT_EQ(static_cast<uint32_t>(MsgType::TriggerService), 0x210u);
    EXPECT_EQ(static_cast<uint32_t>(MsgType::ConnectionTerminated), 0x211u);
    EXPECT_EQ(static_cast<uint32_t>(MsgType::TriggerService4), 0x213u);
    EXPECT_EQ(static_cast<uint32_t>(MsgType::Hello), 0x300u);
}

TEST(QrexecProtocol, HeaderIsLittleEndian) {
    EXPECT_EQ(encode_hello(4), std::string("\x00\x03\x00\x00\x04\x00\x00\x00\x04\x00\x00\x00", 12));
}

TEST(QrexecProtocol, ExecCmdlineLayout) {
    std::string wire = encode_exec(MsgType::ExecCmdline, {7, 513, "user:QUBESRPC a b"});
    EXPECT_EQ(wire.substr(0, 8), le32(0x200) + le32(8 + 17 + 1));
    EXPECT_EQ(wire.substr(8, 8), le32(7) + le32(513));
    EXPECT_EQ(wire.substr(16), std::string("user:QUBESRPC a b\0", 18));
    auto p = std::get<ExecParams>(roundtrip(wire));
    EXPECT_EQ(p.connect_domain, 7u);
    EXPECT_EQ(p.connect_port, 513u);
    EXPECT_EQ(p.cmdline, "user:QUBESRPC a b");
}

TEST(QrexecProtocol, TriggerService4Layout) {
    TriggerService t{4, std::string("remote"), "target", "SOCKET7", "qubes.Svc+arg"};
    std::string wire = encode_trigger(t);
    EXPECT_EQ(wire.size(), 8 + 64 + 64 + 32 + 14);
    EXPECT_EQ(wire.substr(0, 4), le32(0x213));
    auto back = std::get<TriggerService>(roundtrip(wire));
    EXPECT_EQ(back.version, 4u);
    EXPECT_EQ(back.source_domain, "remote");
    EXPECT_EQ(back.target_domain, "target");
    EXPECT_EQ(back.ident, "SOCKET7");
    EXPECT_EQ(back.service_name, "qubes.Svc+arg");
}

TEST(QrexecProtocol, TriggerService3AndV2) {
    auto t3 = std::get<TriggerService>(roundtrip(encode_trigger({3, {}, "vault", "SOCKET1", "svc"})));
    EXPECT_EQ(t3.version, 3u);
    EXPECT_FALSE(t3.source_domain);
    EXPECT_EQ(t3.target_domain, "vault");
    auto t2 = std::get<TriggerService>(roundtrip(encode_trigger({2, {}, "vault", "0", "svc"})));
    EXPECT_EQ(t2.version, 2u);
    EXPECT_EQ(encode_trigger({2, {}, "vault", "0", "svc"}).size(), 8u + 64 + 32 + 32);
}

TEST(QrexecProtocol, ServiceConnectAndRefused) {
    auto sc = std::get<ServiceConnect>(roundtrip(encode_service_connect({3, 600, "SOCKET9"})));
    EXPECT_EQ(sc.connect_domain, 3u);
    EXPECT_EQ(sc.connect_port, 600u);
    EXPECT_EQ(sc.ident, "SOCKET9");
    EXPECT_EQ(std::get<ServiceRefused>(roundtrip(encode_service_refused("abc"))).ident, "abc");
}

TEST(QrexecProtocol, DataEofAndExitCode) {
    auto eof = std::get<Data>(roundtrip(encode_data(MsgType::DataStdout, "")));
    EXPECT_EQ(eof.stream, MsgType::DataStdout);
    EXPECT_TRUE(eof.bytes.empty());
    EXPECT_EQ(std::get<ExitCode>(roundtrip(encode_exit_code(127))).code, 127u);
    auto ct = std::get<ConnectionTerminated>(roundtrip(encode_connection_terminated(5, 700)));
    EXPECT_EQ(ct.domain, 5u);
    EXPECT_EQ(ct.port, 700u);
}

// struct exec_params without a command line: 8 bytes, no trailing NUL; any
// other size is refused (a Qubes daemon exits on it).
TEST(QrexecProtocol, ConnectionTerminatedIsExactlyEightBytes) {
    EXPECT_EQ(encode_connection_terminated(5, 700), le32(0x211) + le32(8) + le32(5) + le32(700));
    Header h{0x211, 9};
    EXPECT_THROW(decode_message(h, le32(5) + le32(700) + std::string(1, '\0')), ProtocolError);
    h.len = 7;
    EXPECT_THROW(decode_message(h, (le32(5) + le32(700)).substr(0, 7)), ProtocolError);
}

TEST(QrexecProtocol, OversizedLengthIsRejectedBeforeReading) {
    std::string header = le32(0x190) + le32(0xffffffff);
    EXPECT_THROW(decode_header(header), ProtocolError);
    EXPECT_THROW(decode_header(le32(0x213) + le32(kMaxPayload + 1)), ProtocolError);
    EXPECT_NO_THROW(decode_header(le32(0x190) + le32(65536)));
}

TEST(QrexecProtocol, DataChunkOverLimitIsRejected) {
    Header h{0x190, 65537};
    EXPECT_THROW(decode_message(h, std::string(65537, 'x')), ProtocolError);
}

TEST(QrexecProtocol, UnknownTypeIsRejected) {
    try {
        decode_message(Header{0x999, 0}, "");
        FAIL();
    } catch (const ProtocolError& e) {
        EXPECT_STREQ(e.what(), "unknown message type 0x999");
    }
}

TEST(QrexecProtocol, UnterminatedStringsAreRejected) {
    std::string body = le32(1) + le32(513) + "no-nul";
    EXPECT_THROW(decode_message(Header{0x200, static_cast<uint32_t>(body.size())}, body), ProtocolError);
    std::string ident(32, 'A');  // fills the field, no NUL
    EXPECT_THROW(decode_message(Header{0x203, 32}, ident), ProtocolError);
    std::string t4(64 + 64 + 32, '\0');
    t4 += "svc";  // trailing name without NUL
    EXPECT_THROW(decode_message(Header{0x213, static_cast<uint32_t>(t4.size())}, t4), ProtocolError);
}

TEST(QrexecProtocol, ShortPayloadsAreRejected) {
    EXPECT_THROW(decode_message(Header{0x300, 2}, "ab"), ProtocolError);
    EXPECT_THROW(decode_message(Header{0x193, 3}, "abc"), ProtocolError);
    EXPECT_THROW(decode_message(Header{0x202, 8}, std::string(8, '\0')), ProtocolError);
    EXPECT_THROW(decode_message(Header{0x212, 10}, std::string(10, '\0')), ProtocolError);
}

TEST(QrexecProtocol, FieldsThatDoNotFitAreNotEncoded) {
    EXPECT_THROW(encode_service_refused(std::string(32, 'x')), ProtocolError);
    EXPECT_THROW(encode_trigger({4, std::string(64, 's'), "t", "i", "svc"}), ProtocolError);
}

TEST(QrexecSanitize, ReplacesDisallowedBytes) {
    EXPECT_EQ(sanitize_name("qubes.Svc+a/b c", "+"), "qubes.Svc+a_b_c");
    EXPECT_EQ(sanitize_name("@dispvm:uuid:1-2", "@:"), "@dispvm:uuid:1-2");
    EXPECT_EQ(sanitize_name("wor\xffk", "@:"), "wor_k");
}

TEST(QrexecSanitize, TriggerRules) {
    std::string why;
    auto ok = sanitize_trigger({4, std::string("remote"), "vault", "SOCKET 1", "svc+x/y"}, &why);
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->service_and_arg, "svc+x_y");
    EXPECT_EQ(ok->requested_source, "remote");
    EXPECT_FALSE(sanitize_trigger({4, {}, "vault", "bad/ident", "svc"}, &why));
    EXPECT_EQ(why, "invalid character in request ident");
    EXPECT_FALSE(sanitize_trigger({3, {}, "vault", "1", "+arg"}, &why));
    EXPECT_FALSE(sanitize_trigger({3, {}, "vault", "1", ""}, &why));
    auto no_source = sanitize_trigger({4, std::string(""), "vault", "1", "svc"}, &why);
    ASSERT_TRUE(no_source);
    EXPECT_FALSE(no_source->requested_source);
}

}  // namespace
}  // namespace aerie::qrexec
