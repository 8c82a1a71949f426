// The caller side of a data channel under back-pressure: a service that
// sends fast and ends (EOF, exit code) while the local reader is slow must
// still get every byte, in order, before the exit code is reported.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <unistd.h>

#include <asio.hpp>
#include <chrono>
#include <string>
#include <thread>

#include "qrexec/data_pump.hpp"
#include "qrexec/protocol.hpp"
#include "qrexec/vchan.hpp"

namespace aerie::qrexec {
namespace {

TEST(QrexecDataPump, SlowReaderGetsEveryByteBeforeTheEnd) {
    auto [caller_end, service_end] = channel_pair();
    int out[2];
    ASSERT_EQ(::pipe2(out, O_CLOEXEC), 0);

    // The "service": HELLO, 8 MiB of numbered chunks, EOF, exit code 7, close.
    const size_t chunks = 2048, chunk_size = 4000;
    std::thread service([fd = service_end.release(), chunks, chunk_size] {
        UniqueFd s(fd);
        std::string all = encode_hello(kProtocolVersion);
        for (size_t i = 0; i < chunks; ++i)
            all += encode_data(MsgType::DataStdout, std::string(chunk_size, static_cast<char>('a' + i % 26)));
        all += encode_data(MsgType::DataStdout, {});
        all += encode_exit_code(7);
        write_all(s.get(), all.data(), all.size());
    });

    // A slow local reader.
    std::string received;
    std::thread reader([r = out[0], &received] {
        char buf[16384];
        ssize_t n;
        while ((n = ::read(r, buf, sizeof buf)) > 0) {
            received.append(buf, static_cast<size_t>(n));
            std::this_thread::sleep_for(std::chrono::microseconds(300));
        }
        ::close(r);
    });

    asio::io_context io;
    DataPump::Local local;
    local.output = UniqueFd(out[1]);
    int code = -1;
    auto pump = DataPump::create(io, std::move(caller_end), DataPump::Role::Caller, std::move(local));
    pump->start([&code](int c) { code = c; });
    io.run();
    service.join();
    reader.join();

    EXPECT_EQ(code, 7);
    ASSERT_EQ(received.size(), chunks * chunk_size);
    for (size_t i = 0; i < chunks; ++i)
        ASSERT_EQ(received[i * chunk_size], static_cast<char>('a' + i % 26)) << "chunk " << i;
}

TEST(QrexecDataPump, CallerWithoutInputStillEndsTheServiceStdin) {
    auto [caller_end, service_end] = channel_pair();
    asio::io_context io;
    auto pump = DataPump::create(io, std::move(caller_end), DataPump::Role::Caller, {});
    int code = 0;
    pump->start([&code](int c) { code = c; });
    io.run_for(std::chrono::milliseconds(50));
    // The service side reads HELLO then an empty MSG_DATA_STDIN.
    char buf[12 + 8];
    ASSERT_TRUE(read_all(service_end.get(), buf, sizeof buf));
    Header h = decode_header(std::string_view(buf + 12, 8));
    EXPECT_EQ(h.type, static_cast<uint32_t>(MsgType::DataStdin));
    EXPECT_EQ(h.len, 0u);
    // No service answers: end the call, which must release everything.
    pump->abort();
    pump.reset();
    io.restart();
    io.run();
    EXPECT_EQ(code, 255);  // broken before an exit code came
}

}  // namespace
}  // namespace aerie::qrexec
