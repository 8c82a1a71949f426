#include <gtest/gtest.h>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <thread>

#include "qrexec/child_reaper.hpp"
#include "qrexec/service_config.hpp"
#include "qrexec/session_wait.hpp"

namespace aerie::qrexec {
namespace {

namespace fs = std::filesystem;

// Runs the loop until pred holds or 5 s have passed (the reaper's signal wait
// keeps the loop from running out of work).
template <typename Pred>
void run_until(asio::io_context& io, Pred pred) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!pred() && std::chrono::steady_clock::now() < deadline) io.run_one_for(std::chrono::milliseconds(50));
}

// A child that has already ended (and whose SIGCHLD came) before it is
// watched is still reported, from the event loop and never inside watch().
TEST(ChildReaper, ChildEndedBeforeItWasWatchedIsReportedFromTheLoop) {
    asio::io_context io;
    ChildReaper reaper(io);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) ::_exit(9);
    // Let it end and its SIGCHLD be taken before it is watched.
    siginfo_t info{};
    ASSERT_EQ(::waitid(P_PID, pid, &info, WEXITED | WNOWAIT), 0);
    io.poll();
    int code = -1;
    reaper.watch(pid, [&](int c) { code = c; });
    EXPECT_EQ(code, -1);
    run_until(io, [&] { return code != -1; });
    EXPECT_EQ(code, 9);
    EXPECT_EQ(reaper.watching(), 0u);
}

class SessionWaitTest : public ::testing::Test {
protected:
    void SetUp() override {
        ::signal(SIGPIPE, SIG_IGN);  // as in the agent: a waiter may end before reading its line
        char tmpl[] = "/tmp/aerie-session-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        dir_ = tmpl;
        fs::create_directories(dir_ / "rpc");
        fs::create_directories(dir_ / "config");
        std::ofstream(dir_ / "config" / "test.Session") << "wait-for-session = true\n";
        ::setenv(kServicePathEnv, (dir_ / "rpc").c_str(), 1);
        ::setenv(kRpcConfigPathEnv, (dir_ / "config").c_str(), 1);
    }
    void TearDown() override {
        ::unsetenv(kServicePathEnv);
        ::unsetenv(kRpcConfigPathEnv);
        fs::remove_all(dir_);
    }
    void waiter(const std::string& body) {
        auto path = dir_ / "rpc" / kWaitForSessionService;
        std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
        ::chmod(path.c_str(), 0755);
    }
    fs::path dir_;
};

// The waiter may end before defer() has returned: the call held is still
// released (it once stayed held for good).
TEST_F(SessionWaitTest, WaiterThatEndsAtOnceReleasesTheHeldCall) {
    waiter("exit 0");
    asio::io_context io;
    ChildReaper reaper(io);
    SessionWait wait(reaper);
    int ran = 0;
    ASSERT_TRUE(wait.defer("user:QUBESRPC test.Session+x src", "user", [&] { ++ran; }));
    // Give the waiter time to end before the loop looks at it.
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    EXPECT_EQ(ran, 0);
    run_until(io, [&] { return ran == 1; });
    EXPECT_EQ(ran, 1);
    // The next call waits again (for a new waiter) and is released too.
    ASSERT_TRUE(wait.defer("user:QUBESRPC test.Session+y src", "user", [&] { ++ran; }));
    run_until(io, [&] { return ran == 2; });
    EXPECT_EQ(ran, 2);
}

TEST_F(SessionWaitTest, CallWithoutWaitForSessionIsNotHeld) {
    waiter("exit 0");
    asio::io_context io;
    ChildReaper reaper(io);
    SessionWait wait(reaper);
    EXPECT_FALSE(wait.defer("user:QUBESRPC test.Other+x src", "user", [] {}));
    EXPECT_FALSE(wait.defer("user:nogui:QUBESRPC test.Session+x src", "user", [] {}));
}

TEST_F(SessionWaitTest, MissingWaiterLetsTheCallGoOnAtOnce) {
    asio::io_context io;
    ChildReaper reaper(io);
    SessionWait wait(reaper);
    int ran = 0;
    EXPECT_FALSE(wait.defer("user:QUBESRPC test.Session+x src", "user", [&] { ++ran; }));
    io.run_for(std::chrono::milliseconds(100));
    EXPECT_EQ(ran, 0);
}

}  // namespace
}  // namespace aerie::qrexec
