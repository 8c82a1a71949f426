// The Admin API socket server against real blocking clients, with its event
// loop in a thread; and the event hub on its own.
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <future>
#include <optional>
#include <stdexcept>
#include <thread>

#include "admin/server.hpp"
#include "admin/wire.hpp"

namespace aerie::admin {
namespace {

using namespace std::chrono_literals;
using Kwargs = std::vector<std::pair<std::string, std::string>>;

// --- EventHub -------------------------------------------------------------------

TEST(EventHub, PublishesToEverySubscriberAndDropsThoseThatRefuse) {
    EventHub hub;
    std::vector<std::string> a, b;
    hub.subscribe([&](const std::string& e) {
        a.push_back(e);
        return true;
    });
    hub.subscribe([&](const std::string& e) {
        b.push_back(e);
        return false;
    });
    EXPECT_EQ(hub.subscribers(), 2u);
    hub.publish("work", "domain-start", {{"reason", "x"}});
    EXPECT_EQ(hub.subscribers(), 1u);
    hub.publish("", "label-add");
    ASSERT_EQ(a.size(), 2u);
    EXPECT_EQ(a[0], encode_event("work", "domain-start", {{"reason", "x"}}));
    EXPECT_EQ(a[1], encode_event("", "label-add", {}));
    EXPECT_EQ(b.size(), 1u);
}

TEST(EventHub, UnsubscribeFromWithinASink) {
    EventHub hub;
    int first = 0, second = 0;
    uint64_t id = 0;
    id = hub.subscribe([&](const std::string&) {
        ++first;
        hub.unsubscribe(id);
        return true;
    });
    hub.subscribe([&](const std::string&) {
        ++second;
        return true;
    });
    hub.publish("", "a");
    EXPECT_EQ(hub.subscribers(), 1u);
    hub.publish("", "b");
    EXPECT_EQ(first, 1);
    EXPECT_EQ(second, 2);
    hub.unsubscribe(id);  // already gone: no effect
    EXPECT_EQ(hub.subscribers(), 1u);
}

TEST(EventHub, PublishFromWithinASinkKeepsTheOrder) {
    EventHub hub;
    std::vector<std::string> seen1, seen2;
    hub.subscribe([&](const std::string& e) {
        seen1.push_back(e);
        if (e == encode_event("", "a", {})) hub.publish("", "b");
        return true;
    });
    hub.subscribe([&](const std::string& e) {
        seen2.push_back(e);
        return true;
    });
    hub.publish("", "a");
    std::vector<std::string> want = {encode_event("", "a", {}), encode_event("", "b", {})};
    EXPECT_EQ(seen1, want);
    EXPECT_EQ(seen2, want);
}

TEST(EventHub, SubscriberAddedBySinkStartsWithTheNextEvent) {
    EventHub hub;
    std::vector<std::string> late;
    bool added = false;
    hub.subscribe([&](const std::string&) {
        if (!added) {
            added = true;
            hub.subscribe([&](const std::string& e) {
                late.push_back(e);
                return true;
            });
        }
        return true;
    });
    hub.publish("", "a");
    hub.publish("", "b");
    EXPECT_EQ(late, std::vector<std::string>{encode_event("", "b", {})});
    EXPECT_EQ(hub.subscribers(), 2u);
}

// --- clients --------------------------------------------------------------------

// A blocking client; every call gives up after a few seconds rather than hang.
class Client {
public:
    explicit Client(const std::string& path) {
        fd_ = ::socket(AF_UNIX, SOCK_STREAM, 0);
        timeval tv{5, 0};
        ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        path.copy(addr.sun_path, sizeof addr.sun_path - 1);
        connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    }
    ~Client() { ::close(fd_); }
    Client(const Client&) = delete;
    Client& operator=(const Client&) = delete;

    bool connected() const { return connected_; }

    // Sends a request and ends it with EOF, as qubesadmin does.
    void request(std::string_view bytes) {
        send(bytes);
        ::shutdown(fd_, SHUT_WR);
    }
    bool send(std::string_view bytes) {
        while (!bytes.empty()) {
            ssize_t n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
            if (n <= 0) return false;
            bytes.remove_prefix(static_cast<size_t>(n));
        }
        return true;
    }
    // Everything up to EOF (or a reset).
    std::string read_all() {
        std::string out;
        char buf[65536];
        ssize_t n;
        while ((n = ::recv(fd_, buf, sizeof buf, 0)) > 0) out.append(buf, static_cast<size_t>(n));
        return out;
    }
    std::string read_exact(size_t size) {
        std::string out(size, '\0');
        size_t got = 0;
        while (got < size) {
            ssize_t n = ::recv(fd_, out.data() + got, size - got, 0);
            if (n <= 0) break;
            got += static_cast<size_t>(n);
        }
        out.resize(got);
        return out;
    }

private:
    int fd_ = -1;
    bool connected_ = false;
};

std::string request_bytes(const std::string& method, const std::string& payload = {}) {
    return encode_request({method, "", "dom0", "dom0", payload});
}

std::string echo_body(const ApiRequest& r) {
    return r.method + "|" + r.arg + "|" + r.source + "|" + r.dest + "|" + r.payload;
}

const std::string kInitialEvents =
    encode_event("", "connection-established", {});

// --- the server -----------------------------------------------------------------

class ApiServerTest : public ::testing::Test {
protected:
    ApiServerTest() {
        char tmpl[] = "/tmp/aerie-server-test-XXXXXX";
        dir_ = ::mkdtemp(tmpl);
        path_ = dir_ + "/qubesd.sock";
    }
    ~ApiServerTest() override {
        stop();
        std::filesystem::remove_all(dir_);
    }

    // Test methods: test.Close, test.Throw, admin.Events; anything else echoes.
    ApiResponse dispatch(const ApiRequest& r) {
        ++dispatched_;
        if (r.method == "test.Close") return ApiResponse::close();
        if (r.method == "test.Throw") throw std::runtime_error("dispatcher failure");
        if (r.method == "admin.Events") return ApiResponse::events(kInitialEvents);
        if (r.method == "test.Later") {
            // Answers 50 ms later, from a timer on the loop.
            return ApiResponse::deferred([this, body = echo_body(r)](ApiResponse::Completion done) {
                auto timer = std::make_shared<asio::steady_timer>(io_, 50ms);
                timer->async_wait([timer, done, body](const asio::error_code&) {
                    done(ApiResponse::reply(encode_success(body)));
                });
            });
        }
        return ApiResponse::reply(encode_success(echo_body(r)));
    }

    void start(ServerLimits limits = {}, unsigned mode = 0600) {
        server_ = std::make_unique<ApiServer>(
            io_, path_, [this](const ApiRequest& r) { return dispatch(r); }, &hub_, mode, limits);
        loop_ = std::thread([this] { io_.run(); });
    }

    // Runs f on the event loop and waits for its result.
    template <typename F>
    auto on_loop(F f) {
        std::packaged_task<decltype(f())()> task(std::move(f));
        auto result = task.get_future();
        asio::post(io_, [&task] { task(); });
        return result.get();
    }

    void stop() {
        if (!loop_.joinable()) return;
        on_loop([this] { server_.reset(); });
        work_.reset();
        io_.stop();
        loop_.join();
    }

    template <typename Pred>
    bool eventually(Pred pred, std::chrono::milliseconds limit = 3000ms) {
        auto deadline = std::chrono::steady_clock::now() + limit;
        while (std::chrono::steady_clock::now() < deadline) {
            if (on_loop(pred)) return true;
            std::this_thread::sleep_for(2ms);
        }
        return false;
    }

    size_t subscribers() {
        return on_loop([this] { return hub_.subscribers(); });
    }
    size_t open_connections() {
        return on_loop([this] { return server_ ? server_->open_connections() : 0; });
    }
    void publish(const std::string& subject, const std::string& event, const Kwargs& kwargs = {}) {
        on_loop([&] { hub_.publish(subject, event, kwargs); });
    }

    std::string call(std::string_view bytes) {
        Client c(path_);
        EXPECT_TRUE(c.connected());
        c.request(bytes);
        return c.read_all();
    }

    std::string dir_, path_;
    asio::io_context io_;
    std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_{io_.get_executor()};
    EventHub hub_;
    std::unique_ptr<ApiServer> server_;
    std::thread loop_;
    std::atomic<int> dispatched_{0};
};

TEST_F(ApiServerTest, RequestGetsItsReply) {
    start();
    ApiRequest r{"admin.vm.property.Get", "netvm", "dom0", "work", std::string("pay\0load\0", 10)};
    EXPECT_EQ(call(encode_request(r)), encode_success(echo_body(r)));
    EXPECT_TRUE(eventually([this] { return server_->open_connections() == 0; }));
}

TEST_F(ApiServerTest, SocketModeAndStaleSocketReplaced) {
    {
        // A socket file left behind by a dead server.
        int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        path_.copy(addr.sun_path, sizeof addr.sun_path - 1);
        ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
        ::close(fd);
    }
    start({}, 0660);
    struct stat st {};
    ASSERT_EQ(::lstat(path_.c_str(), &st), 0);
    EXPECT_TRUE(S_ISSOCK(st.st_mode));
    EXPECT_EQ(st.st_mode & 07777, 0660u);
    EXPECT_EQ(call(request_bytes("admin.vm.List")),
              encode_success(echo_body({"admin.vm.List", "", "dom0", "dom0", ""})));
}

TEST_F(ApiServerTest, RefusesToReplaceSomethingElseThanASocket) {
    std::ofstream(path_) << "not a socket";
    EXPECT_THROW(start(), std::system_error);
    EXPECT_TRUE(std::filesystem::is_regular_file(path_));
}

TEST_F(ApiServerTest, MalformedRequestsAreClosedWithoutReply) {
    start();
    EXPECT_EQ(call("admin.vm.List dom0 name dom0"), "");  // no NUL
    EXPECT_EQ(call(std::string("admin.vm.List dom0 dom0\0", 24)), "");
    EXPECT_EQ(call(std::string("admin.vm.List dom0 uuid x\0", 26)), "");
    EXPECT_EQ(call(""), "");
    EXPECT_EQ(dispatched_, 0);
}

TEST_F(ApiServerTest, RequestSizeLimit) {
    start();
    std::string header = request_bytes("test.Echo");
    std::string largest = header + std::string(kMaxRequestBytes - header.size(), 'x');
    std::string payload = largest.substr(header.size());
    EXPECT_EQ(call(largest), encode_success(echo_body({"test.Echo", "", "dom0", "dom0", payload})));
    EXPECT_EQ(dispatched_, 1);

    // One byte over: dropped, whatever the client keeps sending.
    EXPECT_EQ(call(largest + "x"), "");
    EXPECT_EQ(call(largest + std::string(1 << 20, 'x')), "");
    EXPECT_EQ(dispatched_, 1);
    EXPECT_TRUE(eventually([this] { return server_->open_connections() == 0; }));
}

TEST_F(ApiServerTest, CloseAnswerClosesWithoutReply) {
    start();
    EXPECT_EQ(call(request_bytes("test.Close")), "");
    EXPECT_EQ(dispatched_, 1);
}

TEST_F(ApiServerTest, ThrowingDispatcherClosesOnlyThatConnection) {
    start();
    EXPECT_EQ(call(request_bytes("test.Throw")), "");
    EXPECT_EQ(call(request_bytes("test.Echo", "next")),
              encode_success(echo_body({"test.Echo", "", "dom0", "dom0", "next"})));
}

TEST_F(ApiServerTest, EventsStreamInOrderAndUnsubscribeOnClose) {
    start();
    {
        Client c(path_);
        c.request(request_bytes("admin.Events"));
        EXPECT_EQ(c.read_exact(kInitialEvents.size()), kInitialEvents);
        ASSERT_TRUE(eventually([this] { return hub_.subscribers() == 1; }));
        std::string want;
        for (int i = 0; i < 50; ++i) {
            Kwargs kwargs = {{"n", std::to_string(i)}};
            publish("work", "domain-feature-set", kwargs);
            want += encode_event("work", "domain-feature-set", kwargs);
        }
        EXPECT_EQ(c.read_exact(want.size()), want);
        EXPECT_EQ(open_connections(), 1u);
    }
    EXPECT_TRUE(eventually([this] { return hub_.subscribers() == 0; }));
    EXPECT_TRUE(eventually([this] { return server_->open_connections() == 0; }));
}

TEST_F(ApiServerTest, EventsClientThatNeverReadsIsDropped) {
    start();
    Client stalled(path_), reader(path_);
    stalled.request(request_bytes("admin.Events"));
    reader.request(request_bytes("admin.Events"));
    ASSERT_TRUE(eventually([this] { return hub_.subscribers() == 2; }));
    EXPECT_EQ(reader.read_exact(kInitialEvents.size()), kInitialEvents);

    // 24 MiB in 1 MiB events: more than the backlog limit plus socket buffers.
    Kwargs big = {{"data", std::string(1 << 20, 'x')}};
    std::string event = encode_event("work", "big", big);
    for (int i = 0; i < 24; ++i) {
        publish("work", "big", big);
        ASSERT_EQ(reader.read_exact(event.size()), event) << i;
    }
    EXPECT_TRUE(eventually([this] { return hub_.subscribers() == 1; }));
    std::string got = stalled.read_all();  // what reached its socket, then EOF
    EXPECT_LT(got.size(), kInitialEvents.size() + 24 * event.size());

    publish("", "after");
    EXPECT_EQ(reader.read_exact(encode_event("", "after", {}).size()), encode_event("", "after", {}));
}

TEST_F(ApiServerTest, EventsStreamOutlivesTheReadTimeout) {
    start({.read_timeout = 100ms});
    Client c(path_);
    c.request(request_bytes("admin.Events"));
    EXPECT_EQ(c.read_exact(kInitialEvents.size()), kInitialEvents);
    std::this_thread::sleep_for(250ms);
    publish("", "late");
    EXPECT_EQ(c.read_exact(encode_event("", "late", {}).size()), encode_event("", "late", {}));
}

TEST_F(ApiServerTest, ConnectionLimit) {
    start({.max_connections = 2});
    Client a(path_), b(path_);
    ASSERT_TRUE(eventually([this] { return server_->open_connections() == 2; }));
    Client over(path_);
    EXPECT_EQ(over.read_all(), "");  // closed at once, before any request
    for (Client* c : {&a, &b}) {
        c->request(request_bytes("test.Echo"));
        EXPECT_EQ(c->read_all(), encode_success(echo_body({"test.Echo", "", "dom0", "dom0", ""})));
    }
    EXPECT_TRUE(eventually([this] { return server_->open_connections() == 0; }));
    EXPECT_NE(call(request_bytes("test.Echo")), "");
}

TEST_F(ApiServerTest, ReadTimeout) {
    start({.read_timeout = 100ms});
    Client idle(path_), partial(path_);
    partial.send("admin.vm.List dom0 name");  // and never finishes
    auto t0 = std::chrono::steady_clock::now();
    EXPECT_EQ(partial.read_all(), "");
    EXPECT_EQ(idle.read_all(), "");
    auto elapsed = std::chrono::steady_clock::now() - t0;
    EXPECT_GE(elapsed, 80ms);
    EXPECT_LT(elapsed, 3s);
    EXPECT_EQ(dispatched_, 0);
}

TEST_F(ApiServerTest, ManyConcurrentClients) {
    start();
    constexpr int kClients = 200;
    std::vector<std::unique_ptr<Client>> clients;
    for (int i = 0; i < kClients; ++i) {
        clients.push_back(std::make_unique<Client>(path_));
        ASSERT_TRUE(clients.back()->connected());
        clients.back()->request(request_bytes("test.Echo", std::to_string(i)));
    }
    for (int i = kClients - 1; i >= 0; --i)
        EXPECT_EQ(clients[i]->read_all(),
                  encode_success(echo_body({"test.Echo", "", "dom0", "dom0", std::to_string(i)})));
    EXPECT_EQ(dispatched_, kClients);
}

TEST_F(ApiServerTest, CloseStopsAcceptingButKeepsOpenStreams) {
    start();
    Client stream(path_);
    stream.request(request_bytes("admin.Events"));
    EXPECT_EQ(stream.read_exact(kInitialEvents.size()), kInitialEvents);
    ASSERT_TRUE(eventually([this] { return hub_.subscribers() == 1; }));

    on_loop([this] { server_->close(); });
    EXPECT_FALSE(std::filesystem::exists(path_));
    EXPECT_FALSE(Client(path_).connected());
    publish("", "still-here");
    EXPECT_EQ(stream.read_exact(encode_event("", "still-here", {}).size()),
              encode_event("", "still-here", {}));

    // Destroying the server ends the stream.
    on_loop([this] { server_.reset(); });
    EXPECT_EQ(stream.read_all(), "");
    EXPECT_EQ(subscribers(), 0u);
}

TEST_F(ApiServerTest, DeferredAnswerArrivesLaterWhileOthersAreServed) {
    start();
    Client slow(path_);
    slow.request(request_bytes("test.Later"));
    // The loop is free meanwhile: another client is answered first.
    EXPECT_EQ(call(request_bytes("test.Echo")), encode_success("test.Echo||dom0|dom0|"));
    EXPECT_EQ(slow.read_all(), encode_success("test.Later||dom0|dom0|"));
}

TEST_F(ApiServerTest, DeferredWorkGoesOnWhenTheClientLeaves) {
    start();
    {
        Client gone(path_);
        gone.request(request_bytes("test.Later"));
    }
    std::this_thread::sleep_for(100ms);
    EXPECT_EQ(call(request_bytes("test.Echo")), encode_success("test.Echo||dom0|dom0|"));
}

}  // namespace
}  // namespace aerie::admin
