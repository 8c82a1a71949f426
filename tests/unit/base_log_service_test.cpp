#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <set>
#include <string>
#include <thread>

#include "base/fd_passing.hpp"
#include "base/log_service.hpp"

using namespace aerie::base;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

struct TempDir {
    fs::path path;
    TempDir() {
        char tmpl[] = "/tmp/aerie-logservice-XXXXXX";
        path = ::mkdtemp(tmpl);
    }
    ~TempDir() { fs::remove_all(path); }
};

std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// The service on a thread, as aeried sees it: the control socket's other end.
class Service {
public:
    explicit Service(const fs::path& dir) {
        ::signal(SIGPIPE, SIG_IGN);
        int pair[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), 0);
        control_.reset(pair[0]);
        theirs_.reset(pair[1]);
        dir_.reset(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
        result_ = std::async(std::launch::async, [this] { return run_log_service(theirs_.get(), dir_.get()); });
    }
    ~Service() {
        control_.reset();
        if (result_.valid()) result_.wait();
    }

    // Sends a request with a fresh pipe's read end; returns the write end.
    UniqueFd open(uint64_t id, const std::string& name, uint64_t max_bytes, uint64_t per_second = 0,
                  uint64_t burst = 0) {
        int p[2];
        EXPECT_EQ(::pipe2(p, O_CLOEXEC), 0);
        UniqueFd read_end(p[0]), write_end(p[1]);
        LogRequest req;
        req.id = id;
        req.max_bytes = max_bytes;
        req.bytes_per_second = per_second;
        req.burst_bytes = burst;
        std::memcpy(req.name, name.data(), std::min(name.size(), sizeof req.name - 1));
        send_with_fd(&req, sizeof req, read_end.get());
        return write_end;
    }

    void send_with_fd(const void* data, size_t size, int fd) {
        ASSERT_EQ(aerie::base::send_with_fd(control_.get(), data, size, fd, 0), static_cast<ssize_t>(size));
    }

    // The next id the service reports drained (0 after `limit` without one).
    uint64_t next_drained(std::chrono::milliseconds limit = 10s) {
        pollfd p{control_.get(), POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(limit.count())) != 1) return 0;
        uint64_t id = 0;
        return ::recv(control_.get(), &id, sizeof id, 0) == sizeof id ? id : 0;
    }

    void close_control() { control_.reset(); }
    // True once the service returned (within `limit`), with its result in *code.
    bool ended(std::chrono::milliseconds limit, int* code) {
        if (result_.wait_for(limit) != std::future_status::ready) return false;
        *code = result_.get();
        return true;
    }

private:
    UniqueFd control_, theirs_, dir_;
    std::future<int> result_;
};

void write_all(int fd, const std::string& text) {
    ASSERT_EQ(::write(fd, text.data(), text.size()), static_cast<ssize_t>(text.size()));
}

}  // namespace

TEST(LogService, CopiesEachPipeIntoItsFileAndReportsItsEnd) {
    TempDir dir;
    Service service(dir.path);
    UniqueFd a = service.open(7, "a.console.log", 1 << 20);
    UniqueFd b = service.open(8, "b.qrexec-daemon.log", 1 << 20);
    write_all(a.get(), "from a\n");
    write_all(b.get(), "from b\n");
    b.reset();
    EXPECT_EQ(service.next_drained(), 8u);
    EXPECT_EQ(read(dir.path / "b.qrexec-daemon.log"), "from b\n");
    write_all(a.get(), "more from a\n");
    a.reset();
    EXPECT_EQ(service.next_drained(), 7u);
    EXPECT_EQ(read(dir.path / "a.console.log"), "from a\nmore from a\n");
}

TEST(LogService, KeepsDrainingAfterItsStarterIsGoneThenEnds) {
    TempDir dir;
    Service service(dir.path);
    UniqueFd a = service.open(1, "q.console.log", 1 << 20);
    service.close_control();  // aeried restarts: the qube writes on
    int code = -1;
    EXPECT_FALSE(service.ended(200ms, &code)) << "ended while a pipe was still open";
    write_all(a.get(), "still logged\n");
    a.reset();
    ASSERT_TRUE(service.ended(10s, &code));
    EXPECT_EQ(code, 0);
    EXPECT_EQ(read(dir.path / "q.console.log"), "still logged\n");
}

TEST(LogService, FileStaysWithinItsCap) {
    TempDir dir;
    Service service(dir.path);
    UniqueFd a = service.open(3, "c.console.log", 1000);
    std::string line(100, 'x');
    line += '\n';
    for (int i = 0; i < 50; ++i) write_all(a.get(), line);
    a.reset();
    EXPECT_EQ(service.next_drained(), 3u);
    EXPECT_LE(fs::file_size(dir.path / "c.console.log"), 1000u);
    EXPECT_LE(fs::file_size(dir.path / "c.console.log.1"), 1000u);
}

TEST(LogService, BudgetHoldsAFastWriterBack) {
    TempDir dir;
    Service service(dir.path);
    // 64 KiB a second after a 16 KiB burst: in 300 ms, about 35 KiB.
    UniqueFd a = service.open(4, "flood.console.log", 64 << 20, 64 << 10, 16 << 10);
    ::fcntl(a.get(), F_SETFL, O_NONBLOCK);
    std::string chunk(4096, 'f');
    size_t written = 0;
    auto until = std::chrono::steady_clock::now() + 300ms;
    while (std::chrono::steady_clock::now() < until) {
        ssize_t n = ::write(a.get(), chunk.data(), chunk.size());
        if (n > 0) written += static_cast<size_t>(n);
        std::this_thread::sleep_for(1ms);
    }
    std::error_code ec;
    uint64_t copied = fs::file_size(dir.path / "flood.console.log", ec);
    EXPECT_GT(written, copied) << "the writer was never held back";
    EXPECT_LT(copied, 200u << 10) << "more than the budget allows was copied";
}

TEST(LogService, BadRequestsAreAnsweredAndLeaveNothing) {
    TempDir dir;
    Service service(dir.path);
    // A name that is not a plain file name: refused, the pipe closed.
    UniqueFd bad = service.open(5, "../escape.log", 1 << 20);
    EXPECT_EQ(service.next_drained(), 5u);
    EXPECT_FALSE(fs::exists(dir.path.parent_path() / "escape.log"));
    ssize_t n = ::write(bad.get(), "x", 1);
    int err = errno;
    EXPECT_EQ(n, -1);
    EXPECT_EQ(err, EPIPE);
    // A short request without a pipe: answered with its id, nothing opened.
    uint64_t id = 6;
    service.send_with_fd(&id, sizeof id, -1);
    EXPECT_EQ(service.next_drained(), 6u);
    // The service goes on serving.
    UniqueFd good = service.open(9, "ok.console.log", 1 << 20);
    write_all(good.get(), "fine\n");
    good.reset();
    EXPECT_EQ(service.next_drained(), 9u);
    EXPECT_EQ(read(dir.path / "ok.console.log"), "fine\n");
}
