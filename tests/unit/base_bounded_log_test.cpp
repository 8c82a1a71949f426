#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "base/bounded_log.hpp"
#include "base/limited_log.hpp"

using namespace aerie::base;
namespace fs = std::filesystem;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        char tmpl[] = "/tmp/aerie-boundedlog-XXXXXX";
        path = ::mkdtemp(tmpl);
    }
    ~TempDir() { fs::remove_all(path); }
};

std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

uint64_t size_or_zero(const fs::path& p) {
    std::error_code ec;
    auto n = fs::file_size(p, ec);
    return ec ? 0 : n;
}

}  // namespace

TEST(BoundedLogFile, RotatesAtTheCapKeepingOneCopy) {
    TempDir dir;
    UniqueFd dfd(::open(dir.path.c_str(), O_PATH | O_DIRECTORY));
    BoundedLogFile log(dfd.get(), "q.console.log", 1000);
    std::string chunk(300, 'a');
    for (int i = 0; i < 100; ++i) {
        chunk[0] = static_cast<char>('A' + i % 26);
        ASSERT_TRUE(log.write(chunk.data(), chunk.size()));
    }
    // 100 * 300 bytes = 30 files of 1000: the newest two are kept.
    EXPECT_EQ(size_or_zero(dir.path / "q.console.log"), 1000u);
    EXPECT_EQ(size_or_zero(dir.path / "q.console.log.1"), 1000u);
    EXPECT_FALSE(fs::exists(dir.path / "q.console.log.2"));
    std::string last = read(dir.path / "q.console.log");
    EXPECT_EQ(last.substr(last.size() - 300, 1), std::string(1, static_cast<char>('A' + 99 % 26)));
}

TEST(BoundedLogFile, AppendsToAnExistingLogWithinTheCap) {
    TempDir dir;
    std::ofstream(dir.path / "d.log") << std::string(900, 'x');
    UniqueFd dfd(::open(dir.path.c_str(), O_PATH | O_DIRECTORY));
    BoundedLogFile log(dfd.get(), "d.log", 1000);
    std::string more = std::string(100, 'y') + "0123456789ABCDEFGHIJ0123456789";
    ASSERT_TRUE(log.write(more.data(), more.size()));
    EXPECT_EQ(size_or_zero(dir.path / "d.log.1"), 1000u);
    EXPECT_EQ(read(dir.path / "d.log"), "0123456789ABCDEFGHIJ0123456789");
}

TEST(BoundedLogFile, RefusesALinkInPlaceOfTheLog) {
    TempDir dir;
    fs::create_symlink("/etc/passwd", dir.path / "x.log");
    UniqueFd dfd(::open(dir.path.c_str(), O_PATH | O_DIRECTORY));
    EXPECT_THROW(BoundedLogFile(dfd.get(), "x.log", 1000), std::runtime_error);
    EXPECT_THROW(BoundedLogFile(dfd.get(), "../x.log", 1000), std::runtime_error);
}

TEST(BoundedLogFile, WritesNothingOnceRemoved) {
    TempDir dir;
    UniqueFd dfd(::open(dir.path.c_str(), O_PATH | O_DIRECTORY));
    BoundedLogFile log(dfd.get(), "r.log", 100);
    std::string chunk(60, 'r');
    ASSERT_TRUE(log.write(chunk.data(), chunk.size()));
    remove_log(dir.path / "r.log");
    EXPECT_FALSE(log.write(chunk.data(), chunk.size()));  // at the cap it finds its file gone
    EXPECT_FALSE(fs::exists(dir.path / "r.log"));
    EXPECT_FALSE(fs::exists(dir.path / "r.log.1"));
}

TEST(SpawnLogDrainer, AFloodThroughThePipeStaysUnderTheCap) {
    TempDir dir;
    fs::path path = dir.path / "flood.log";
    LogCap cap;
    cap.max_bytes = 64 * 1024;
    LogPipe pipe = spawn_log_drainer(path, cap);
    ASSERT_TRUE(pipe.drainer.valid());
    // The file itself is not reachable through the writer's descriptor.
    char target[256] = {};
    ASSERT_GT(::readlink(("/proc/self/fd/" + std::to_string(pipe.input.get())).c_str(), target, sizeof target - 1), 0);
    EXPECT_EQ(std::string(target).rfind("pipe:", 0), 0u) << target;

    std::string block(65536, 'F');
    for (int i = 0; i < 80; ++i)  // 5 MiB
        ASSERT_EQ(::write(pipe.input.get(), block.data(), block.size()), static_cast<ssize_t>(block.size()));
    std::string end = "\nthe end\n";
    ASSERT_EQ(::write(pipe.input.get(), end.data(), end.size()), static_cast<ssize_t>(end.size()));
    pipe.input.reset();
    pollfd done{pipe.drainer.get(), POLLIN, 0};
    ASSERT_EQ(::poll(&done, 1, 20000), 1);  // it ends once its writers are gone, all copied
    std::string last = read(path);
    EXPECT_EQ(last.substr(last.size() - end.size()), end);
    EXPECT_LE(size_or_zero(path), cap.max_bytes);
    EXPECT_EQ(size_or_zero(dir.path / "flood.log.1"), cap.max_bytes);
}

TEST(SpawnLogDrainer, ABudgetSlowsTheWriterInsteadOfTheHost) {
    TempDir dir;
    LogCap cap;
    cap.max_bytes = 1 << 20;
    cap.bytes_per_second = 64 * 1024;
    cap.burst_bytes = 64 * 1024;
    LogPipe pipe = spawn_log_drainer(dir.path / "slow.log", cap);
    ASSERT_EQ(::fcntl(pipe.input.get(), F_SETFL, O_NONBLOCK), 0);
    // Far more than the budget and the pipe hold: the writer is told to wait.
    std::string block(65536, 'S');
    bool blocked = false;
    for (int i = 0; i < 64 && !blocked; ++i)
        blocked = ::write(pipe.input.get(), block.data(), block.size()) < 0 && errno == EAGAIN;
    EXPECT_TRUE(blocked);
}

TEST(LimitedLog, EscapesTruncatesAndLimitsPerKey) {
    std::vector<std::string> lines;
    LimitedLog log("test", {2.0, 5.0, 100});
    log.sink = [&](const std::string& l) { lines.push_back(l); };
    auto t0 = LogRateLimiter::Clock::time_point{} + std::chrono::hours(1);
    std::string big = "qubes.X+" + std::string(60000, 'A') + "\n\x1b[2J";
    for (int i = 0; i < 200; ++i) log.line("work", big, t0);
    ASSERT_EQ(lines.size(), 5u);
    for (const auto& l : lines) {
        EXPECT_LT(l.size(), 140u);
        EXPECT_EQ(l.find('\n'), std::string::npos);
        EXPECT_EQ(l.find('\x1b'), std::string::npos);
    }
    log.line("personal", "other qube", t0);  // per key: not drowned by "work"
    EXPECT_EQ(lines.back(), "other qube");
    lines.clear();
    log.line("work", "again", t0 + std::chrono::seconds(1));
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_EQ(lines[0], "195 similar messages suppressed (about work)");
    EXPECT_EQ(lines[1], "again");
}
