// The open handler: where a qube configures it, in which order, and how it
// is run (its argument, its stdout kept off the caller's stream, its status).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "services/open_handler.hpp"

using namespace aerie::services;
namespace fs = std::filesystem;

namespace {

class OpenHandler : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/aerie-open-handler-XXXXXX";
        root_ = ::mkdtemp(tmpl);
        fs::create_directories(root_ / "home/.config/aerie");
        fs::create_directories(root_ / "bin");
        saved_home_ = std::getenv("HOME") ? std::getenv("HOME") : "";
        saved_path_ = std::getenv("PATH") ? std::getenv("PATH") : "";
        ::setenv("HOME", (root_ / "home").c_str(), 1);
        ::setenv("PATH", (root_ / "bin").c_str(), 1);
    }
    void TearDown() override {
        ::setenv("HOME", saved_home_.c_str(), 1);
        ::setenv("PATH", saved_path_.c_str(), 1);
        fs::remove_all(root_);
    }
    fs::path script(const fs::path& path, const std::string& body, bool executable = true) {
        std::ofstream(path) << "#!/bin/sh\n" << body;
        ::chmod(path.c_str(), executable ? 0755 : 0644);
        return path;
    }
    fs::path root_;
    std::string saved_home_, saved_path_;
};

TEST_F(OpenHandler, TheUsersOwnComesBeforeXdgOpen) {
    if (fs::exists("/etc/aerie/open-handler")) GTEST_SKIP() << "this host configures /etc/aerie/open-handler";
    EXPECT_EQ(find_open_handler(), std::nullopt);
    auto xdg = script(root_ / "bin/xdg-open", "exit 0\n");
    EXPECT_EQ(find_open_handler(), xdg.string());
    auto own = root_ / "home/.config/aerie/open-handler";
    script(own, "exit 0\n", false);  // not executable: passed over
    EXPECT_EQ(find_open_handler(), xdg.string());
    script(own, "exit 0\n");
    EXPECT_EQ(find_open_handler(), own.string());
}

TEST_F(OpenHandler, RunsWithItsArgumentAndStdoutOffTheCallersStream) {
    auto out = root_ / "out";
    auto handler = script(root_ / "bin/h", "printf '%s|' \"$@\" > " + out.string() +
                                               "; read x && echo read-something >> " + out.string() +
                                               "; echo to-stdout; exit 7\n");
    // Our stdout is the caller's: the handler's output must not reach it.
    int pipefd[2];
    ASSERT_EQ(::pipe(pipefd), 0);
    int saved = ::dup(1);
    ::dup2(pipefd[1], 1);
    std::string error;
    int status = run_open_handler(handler.string(), "a b;$(x)", &error);
    ::dup2(saved, 1);
    ::close(saved);
    ::close(pipefd[1]);
    char buf[64];
    EXPECT_EQ(::read(pipefd[0], buf, sizeof buf), 0);
    ::close(pipefd[0]);
    EXPECT_EQ(status, 7);
    std::ifstream in(out);
    std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    EXPECT_EQ(text, "a b;$(x)|");  // one argument, no shell; stdin is /dev/null
    EXPECT_EQ(run_open_handler((root_ / "missing").string(), "x", &error), -1);
    EXPECT_NE(error.find("cannot run"), std::string::npos) << error;
}

TEST_F(OpenHandler, GetsDefaultSigpipeHandling) {
    auto out = root_ / "sigign";
    auto handler = script(root_ / "bin/h", "PATH=/usr/bin:/bin; grep SigIgn /proc/$$/status | cut -f2 > " +
                                               out.string() + "\n");
    auto old = std::signal(SIGPIPE, SIG_IGN);  // as vm-file-editor runs
    EXPECT_EQ(run_open_handler(handler.string(), "x"), 0);
    std::signal(SIGPIPE, old);
    std::ifstream in(out);
    std::string mask;
    in >> mask;
    ASSERT_FALSE(mask.empty());
    EXPECT_EQ(std::stoull(mask, nullptr, 16) & (1ull << (SIGPIPE - 1)), 0u) << mask;
}

}  // namespace
