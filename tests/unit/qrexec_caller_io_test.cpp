// qrexec-client-vm's pieces that speak Qubes' local protocol: the bare
// connect answer, the marker descriptor, the terminal filter, and the caller
// loop's exit codes against a scripted service side.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>
#include <thread>

#include "qrexec/caller_io.hpp"
#include "qrexec/protocol.hpp"
#include "qrexec/vchan.hpp"

namespace aerie::qrexec {
namespace {

TEST(QrexecCallerIo, ConnectAnswerIsBareExecParams) {
    EXPECT_EQ(encode_connect_params(43, 1024), std::string("\x2b\0\0\0\0\x04\0\0", 8));
}

TEST(QrexecCallerIo, MarkerIsAPipeReadEnd) {
    UniqueFd marker = descriptor_marker();
    ASSERT_TRUE(marker);
    struct stat st {};
    ASSERT_EQ(::fstat(marker.get(), &st), 0);
    EXPECT_TRUE(S_ISFIFO(st.st_mode));
    EXPECT_EQ(::fcntl(marker.get(), F_GETFL) & O_ACCMODE, O_RDONLY);
}

TEST(QrexecCallerIo, FilterKeepsPrintableAndLayoutBytes) {
    std::string s("a\tb\nc\rd\be\af\x1b[0m\x7f\xff\0z", 19);
    replace_unprintable(s.data(), s.size());
    EXPECT_EQ(s, std::string("a\tb\nc\rd\be\af_[0m___z"));
}

// The service side of a call, scripted: HELLO, then `rest` after reading
// the caller's HELLO; returns what the caller sent until it closed.
std::string serve(UniqueFd end, std::string rest, bool close_early = false) {
    std::string got;
    std::string hello = encode_hello(kProtocolVersion);
    write_all(end.get(), hello.data(), hello.size());
    if (close_early) return got;
    char raw[12];
    if (!read_all(end.get(), raw, sizeof raw)) return got;
    write_all(end.get(), rest.data(), rest.size());
    char buf[4096];
    ssize_t n;
    while ((n = ::read(end.get(), buf, sizeof buf)) > 0) got.append(buf, static_cast<size_t>(n));
    return got;
}

TEST(QrexecCallerIo, NonZeroServiceCodeWinsAndStdinEndsWithIt) {
    auto [ours, theirs] = channel_pair();
    int in[2], out[2];
    ASSERT_EQ(::pipe(in), 0);  // our stdin: never closed by its writer
    ASSERT_EQ(::pipe(out), 0);
    std::string sent;
    std::thread service([&, fd = theirs.release()] {
        sent = serve(UniqueFd(fd), encode_data(MsgType::DataStdout, "hi") + encode_data(MsgType::DataStdout, {}) +
                                       encode_exit_code(42));
    });
    CallerStreams s;
    s.from_local = in[0];
    s.to_local = out[1];
    EXPECT_EQ(run_caller(std::move(ours), s), 42);
    service.join();
    // Only the stdin EOF, no exit code of the caller's own.
    EXPECT_EQ(sent, encode_data(MsgType::DataStdin, {}));
    char buf[8] = {};
    EXPECT_EQ(::read(out[0], buf, sizeof buf), 2);
    EXPECT_EQ(std::string(buf, 2), "hi");
    ::close(in[1]);
    ::close(out[0]);
}

TEST(QrexecCallerIo, ChannelBrokenBeforeTheExitCodeIsMinusOne) {
    auto [ours, theirs] = channel_pair();
    int in[2], out[2];
    ASSERT_EQ(::pipe(in), 0);
    ASSERT_EQ(::pipe(out), 0);
    std::thread service([fd = theirs.release()] {
        UniqueFd end(fd);
        std::string hello = encode_hello(kProtocolVersion);
        write_all(end.get(), hello.data(), hello.size());
        char raw[12];
        read_all(end.get(), raw, sizeof raw);
    });
    CallerStreams s;
    s.from_local = in[0];
    s.to_local = out[1];
    EXPECT_EQ(run_caller(std::move(ours), s), -1);
    service.join();
    ::close(in[1]);
    ::close(out[0]);
}

}  // namespace
}  // namespace aerie::qrexec
