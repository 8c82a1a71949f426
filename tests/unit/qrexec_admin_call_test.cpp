#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <string>
#include <thread>

#include "qrexec/admin_call.hpp"

namespace aerie::qrexec {
namespace {

using Kind = AdminResult::Kind;

// A string literal with its NULs.
template <size_t N>
std::string S(const char (&text)[N]) {
    return std::string(text, N - 1);
}

// --- reply parsing ------------------------------------------------------------

TEST(QrexecAdminCall, ParsesSuccess) {
    auto r = parse_admin_reply(S("0\0uuid:1234"));
    EXPECT_EQ(r.kind, Kind::Success);
    EXPECT_TRUE(r.ok());
    EXPECT_EQ(r.body, "uuid:1234");
    EXPECT_EQ(parse_admin_reply(S("0\0")).body, "");
}

TEST(QrexecAdminCall, ParsesException) {
    auto r = parse_admin_reply(S("2\0QubesVMError\0trace\0it failed\0"));
    EXPECT_EQ(r.kind, Kind::Exception);
    EXPECT_EQ(r.exc_type, "QubesVMError");
    EXPECT_EQ(r.message, "it failed");
    EXPECT_EQ(r.error(), "QubesVMError: it failed");
}

TEST(QrexecAdminCall, EmptyReplyIsARefusal) {
    auto r = parse_admin_reply("");
    EXPECT_EQ(r.kind, Kind::Refused);
    EXPECT_EQ(r.error(), "refused by the admin daemon");
}

TEST(QrexecAdminCall, MalformedReplies) {
    for (std::string bad :
         {std::string("x"), S("1\0events"), S("2\0T\0"), S("2\0T\0\0m\0extra"), S("2\0\0\0m\0")}) {
        auto r = parse_admin_reply(bad);
        EXPECT_EQ(r.kind, Kind::Failed) << bad;
        EXPECT_FALSE(r.ok());
    }
}

TEST(QrexecAdminCall, ErrorTextHasNoControlCharacters) {
    auto r = parse_admin_reply(S("2\0Qubes\nException\0\0line1\nline2\x1b[31m\0"));
    ASSERT_EQ(r.kind, Kind::Exception);
    EXPECT_EQ(r.error(), "Qubes Exception: line1 line2 [31m");
}

TEST(QrexecAdminCall, RequestBytes) {
    EXPECT_EQ(admin_request_bytes({"admin.vm.CreateDisposable", "default-dvm", "uuid"}),
              S("admin.vm.CreateDisposable dom0 name default-dvm\0uuid"));
    EXPECT_EQ(admin_request_bytes({"admin.vm.Kill", "uuid:0-1", ""}),
              S("admin.vm.Kill dom0 name uuid:0-1\0"));
    EXPECT_EQ(admin_request_bytes({"admin.vm.Kill", "", ""}), "");
    EXPECT_EQ(admin_request_bytes({"admin.vm.Kill", "a b", ""}), "");
    EXPECT_EQ(admin_request_bytes({"admin.vm.Kill", S("a\0b"), ""}), "");
    EXPECT_EQ(admin_request_bytes({"admin.vm.Kill\n", "a", ""}), "");
}

// --- calls over a socket --------------------------------------------------------

// A one-connection server: reads the request to EOF, then answers `reply`
// (or, with `hold`, answers nothing and keeps the connection open a while).
class OneShotServer {
public:
    OneShotServer(std::string reply, bool hold = false) {
        char tmpl[] = "/tmp/aerie-admin-call-XXXXXX";
        dir_ = ::mkdtemp(tmpl);
        path_ = dir_ + "/sock";
        fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path_.c_str());
        EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
        EXPECT_EQ(::listen(fd_, 4), 0);
        thread_ = std::thread([this, reply, hold] {
            int c = ::accept(fd_, nullptr, nullptr);
            if (c < 0) return;
            char buf[4096];
            ssize_t n;
            while ((n = ::read(c, buf, sizeof buf)) > 0) request_.append(buf, static_cast<size_t>(n));
            if (hold) {
                ::usleep(500 * 1000);
            } else {
                size_t off = 0;
                while (off < reply.size()) {
                    ssize_t w = ::write(c, reply.data() + off, reply.size() - off);
                    if (w <= 0) break;
                    off += static_cast<size_t>(w);
                }
            }
            ::close(c);
        });
    }
    ~OneShotServer() {
        ::shutdown(fd_, SHUT_RDWR);
        if (thread_.joinable()) thread_.join();
        ::close(fd_);
        ::unlink(path_.c_str());
        ::rmdir(dir_.c_str());
    }
    const std::string& path() const { return path_; }
    // What the client sent (once the server is done with it).
    const std::string& request() {
        if (thread_.joinable()) thread_.join();
        return request_;
    }

private:
    std::string dir_, path_, request_;
    int fd_ = -1;
    std::thread thread_;
};

AdminResult run_call(const std::string& path, const AdminCall& call,
                     std::chrono::milliseconds timeout = std::chrono::seconds(5),
                     size_t max_reply = kMaxAdminReply) {
    asio::io_context io;
    AdminResult result;
    int calls = 0;
    admin_call(
        io, path, call,
        [&](AdminResult r) {
            result = std::move(r);
            ++calls;
        },
        timeout, max_reply);
    EXPECT_EQ(calls, 0);  // never from inside admin_call
    io.run();
    EXPECT_EQ(calls, 1);
    return result;
}

TEST(QrexecAdminCall, CallSucceeds) {
    OneShotServer server(S("0\0uuid:abc"));
    auto r = run_call(server.path(), {"admin.vm.CreateDisposable", "default-dvm", "uuid"});
    EXPECT_EQ(r.kind, Kind::Success);
    EXPECT_EQ(r.body, "uuid:abc");
}

TEST(QrexecAdminCall, CallSendsTheRequest) {
    std::string seen;
    {
        OneShotServer server(S("0\0"));
        EXPECT_TRUE(run_call(server.path(), {"admin.vm.Start", "uuid:abc", ""}).ok());
        seen = server.request();
    }
    EXPECT_EQ(seen, S("admin.vm.Start dom0 name uuid:abc\0"));
}

TEST(QrexecAdminCall, CallGetsAnException) {
    OneShotServer server(S("2\0QubesException\0\0no such template\0"));
    auto r = run_call(server.path(), {"admin.vm.CreateDisposable", "nosuch", "uuid"});
    EXPECT_EQ(r.kind, Kind::Exception);
    EXPECT_EQ(r.exc_type, "QubesException");
    EXPECT_EQ(r.message, "no such template");
}

TEST(QrexecAdminCall, CallRefused) {
    OneShotServer server("");
    EXPECT_EQ(run_call(server.path(), {"admin.vm.Kill", "x", ""}).kind, Kind::Refused);
}

TEST(QrexecAdminCall, OversizedReplyFails) {
    OneShotServer server(S("0\0") + std::string(300, 'x'));
    auto r = run_call(server.path(), {"admin.vm.Kill", "x", ""}, std::chrono::seconds(5), 100);
    EXPECT_EQ(r.kind, Kind::Failed);
    EXPECT_NE(r.error().find("over 100 bytes"), std::string::npos) << r.error();
}

TEST(QrexecAdminCall, SlowDaemonTimesOut) {
    OneShotServer server("", true);
    auto start = std::chrono::steady_clock::now();
    auto r = run_call(server.path(), {"admin.vm.Kill", "x", ""}, std::chrono::milliseconds(100));
    EXPECT_EQ(r.kind, Kind::Failed);
    EXPECT_NE(r.error().find("no answer"), std::string::npos) << r.error();
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(450));
}

// A full listen queue refuses a non-blocking connect at once: tried again.
TEST(QrexecAdminCall, FullListenQueueIsRetried) {
    char tmpl[] = "/tmp/aerie-admin-call-XXXXXX";
    std::string dir = ::mkdtemp(tmpl), path = dir + "/sock";
    int lfd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", path.c_str());
    ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ASSERT_EQ(::listen(lfd, 0), 0);
    // A connection nobody accepts yet fills the queue.
    int filler = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_EQ(::connect(filler, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    std::thread server([lfd] {
        ::usleep(100 * 1000);
        for (int k = 0; k < 2; ++k) {
            int c = ::accept(lfd, nullptr, nullptr);
            if (c < 0) return;
            if (k == 1) {
                char buf[4096];
                while (::read(c, buf, sizeof buf) > 0) {
                }
                EXPECT_EQ(::write(c, "0\0ok", 4), 4);
            }
            ::close(c);
        }
    });
    auto r = run_call(path, {"admin.vm.Kill", "x", ""});
    server.join();
    EXPECT_TRUE(r.ok()) << r.error();
    EXPECT_EQ(r.body, "ok");
    ::close(filler);
    ::close(lfd);
    ::unlink(path.c_str());
    ::rmdir(dir.c_str());
}

TEST(QrexecAdminCall, NoDaemon) {
    auto r = run_call("/nonexistent/aerie/qubesd.sock", {"admin.vm.Kill", "x", ""});
    EXPECT_EQ(r.kind, Kind::Failed);
    EXPECT_NE(r.error().find("/nonexistent/aerie/qubesd.sock"), std::string::npos) << r.error();
}

TEST(QrexecAdminCall, InvalidHeaderIsNotSent) {
    auto r = run_call("/nonexistent/aerie/qubesd.sock", {"admin.vm.Kill", "two words", ""});
    EXPECT_EQ(r.kind, Kind::Failed);
    EXPECT_EQ(r.error(), "invalid request header");
}

TEST(QrexecAdminCall, DefaultSocketFromTheEnvironment) {
    ::setenv("QUBESD_SOCKET", "/run/test/qubesd.sock", 1);
    EXPECT_EQ(default_admin_socket(), "/run/test/qubesd.sock");
    ::unsetenv("QUBESD_SOCKET");
    EXPECT_EQ(default_admin_socket(), "/var/run/qubesd.sock");
}

}  // namespace
}  // namespace aerie::qrexec
