// The uplink between a relay and aeried (docs/air.md): every word parsed or
// refused exactly, hostile lines included; one-line messages with one
// descriptor over a socket; the relay's client against a stand-in host.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>
#include <thread>

#include "air/fd_message.hpp"
#include "air/host_uplink.hpp"
#include "air/uplink.hpp"
#include "air/uplink_client.hpp"

namespace {

using namespace aerie::air;
using aerie::qrexec::UniqueFd;
using namespace std::string_literals;

template <typename F>
std::string refusal(F&& parse) {
    try {
        parse();
    } catch (const AirError& e) {
        return e.what();
    }
    return "(accepted)";
}

// --- words ---------------------------------------------------------------------------------------

TEST(AirUplink, Requests) {
    EXPECT_EQ(parse_uplink_request("listen").kind, UplinkRequest::Kind::Listen);
    auto r = parse_uplink_request("connect office-2");
    EXPECT_EQ(r.kind, UplinkRequest::Kind::Connect);
    EXPECT_EQ(r.zone, "office-2");
    EXPECT_EQ(format_connect("b"), "connect b\n");
    EXPECT_EQ(kListen, "listen\n");
    EXPECT_EQ(parse_uplink_request(format_connect("b").substr(0, 9)).zone, "b");
}

TEST(AirUplink, HostileRequestsAreRefused) {
    for (std::string line : {""s, "connect"s, "connect "s, "connect  b"s, " connect b"s, "connect b "s, "connect b c"s,
                             "connect B"s, "connect -b"s, "connect b/c"s, "connect " + std::string(32, 'a'),
                             "connect b\0"s, "connect b\r"s, "connect b\n"s, "connect\tb"s, "listen "s, "listen x"s,
                             "LISTEN"s, "Connect b"s, "accept b tls"s, "connect " + std::string(600, 'a'),
                             std::string(513, 'x'), "\0listen"s})
        EXPECT_NE(refusal([&] { parse_uplink_request(line); }), "(accepted)") << line;
    EXPECT_EQ(refusal([] { parse_uplink_request("connect"); }), "request: connect needs a zone");
    EXPECT_EQ(refusal([] { parse_uplink_request("connect  b"); }), "request: words are separated by single spaces");
    EXPECT_EQ(refusal([] { parse_uplink_request("hello"); }), "request: unknown (connect ZONE or listen)");
    EXPECT_EQ(refusal([] { parse_uplink_request("connect b\0"s); }), "request: control byte in the line");
    EXPECT_NE(refusal([] { format_connect("B"); }), "(accepted)");
    EXPECT_NE(refusal([] { format_connect(""); }), "(accepted)");
}

TEST(AirUplink, Answers) {
    EXPECT_EQ(format_ok(), "ok\n");
    EXPECT_EQ(format_error("no relay route to zone b"), "error no relay route to zone b\n");
    EXPECT_EQ(format_error("a\nb\0c\x7f"s), "error a?b?c?\n");
    std::string long_error = format_error(std::string(2000, 'x'));
    EXPECT_EQ(long_error.size(), kMaxMessage);
    EXPECT_EQ(long_error.back(), '\n');
    EXPECT_NO_THROW(expect_ok("ok"));
    EXPECT_EQ(refusal([] { expect_ok("error no relay route to zone b"); }), "no relay route to zone b");
    EXPECT_EQ(refusal([] { expect_ok("error connecting to 10.0.0.1:7: timed out"); }),
              "connecting to 10.0.0.1:7: timed out");
    EXPECT_EQ(refusal([] { expect_ok("nope\x01"); }), "unexpected answer from the host: nope?");
    for (std::string line : {""s, "ok "s, "OK"s, "error"s, "okay"s})
        EXPECT_NE(refusal([&] { expect_ok(line); }), "(accepted)") << line;
}

TEST(AirUplink, Accepts) {
    Accept a = parse_accept("accept b tls");
    EXPECT_EQ(a.zone, "b");
    EXPECT_EQ(a.transport, Transport::Tls);
    EXPECT_EQ(parse_accept("accept zone-9 ssh").transport, Transport::Ssh);
    EXPECT_EQ(format_accept({"b", Transport::Ssh}), "accept b ssh\n");
    std::string line = format_accept({"office", Transport::Tls});
    EXPECT_EQ(parse_accept(line.substr(0, line.size() - 1)).zone, "office");
    for (std::string bad : {""s, "accept"s, "accept b"s, "accept b tcp"s, "accept b TLS"s, "accept  b tls"s,
                            "accept b tls "s, "accept b tls x"s, "accepted b tls"s, "accept B tls"s,
                            "accept b\0 tls"s, "accept b tls\n"s, "accept " + std::string(600, 'b') + " tls"})
        EXPECT_NE(refusal([&] { parse_accept(bad); }), "(accepted)") << bad;
    EXPECT_NE(refusal([] { format_accept({"-b", Transport::Tls}); }), "(accepted)");
}

TEST(AirUplink, Preambles) {
    Preamble p = parse_preamble("aerie-air/1 home tls");
    EXPECT_EQ(p.from_zone, "home");
    EXPECT_EQ(p.transport, Transport::Tls);
    EXPECT_EQ(format_preamble({"home", Transport::Ssh}), "aerie-air/1 home ssh\n");
    EXPECT_EQ(transport_word(Transport::Tls), "tls");
    EXPECT_EQ(parse_transport("ssh"), Transport::Ssh);
    EXPECT_EQ(parse_transport("tcp"), std::nullopt);
    std::string longest = "aerie-air/1 " + std::string(31, 'z') + " tls";
    EXPECT_EQ(parse_preamble(longest).from_zone, std::string(31, 'z'));
    for (std::string bad : {""s, "aerie-air/1"s, "aerie-air/2 b tls"s, "aerie-air/1 b"s, "aerie-air/1 b tls x"s,
                            "aerie-air/1  b tls"s, "aerie-air/1 b tls\n"s, "aerie-air/1 b\0 tls"s,
                            "aerie-air/1 b ftp"s, "aerie-air/1 " + std::string(32, 'z') + " tls",
                            "aerie-air/1 b tls" + std::string(120, ' '), std::string(200, 'a'), "GET / HTTP/1.1"s})
        EXPECT_NE(refusal([&] { parse_preamble(bad); }), "(accepted)") << bad;
    EXPECT_EQ(refusal([] { parse_preamble(std::string(128, 'a')); }), "preamble: longer than 128 bytes");
    EXPECT_EQ(refusal([] { parse_preamble("aerie-air/2 b tls"); }), "preamble: not aerie-air/1");
}

TEST(AirUplink, HostPort) {
    auto hp = parse_host_port("127.0.0.1:7000");
    ASSERT_TRUE(hp);
    EXPECT_EQ(hp->host, "127.0.0.1");
    EXPECT_EQ(hp->port, "7000");
    hp = parse_host_port("[::1]:22");
    ASSERT_TRUE(hp);
    EXPECT_EQ(hp->host, "::1");
    EXPECT_EQ(hp->port, "22");
    EXPECT_EQ(parse_host_port("relay.example.org:65535")->host, "relay.example.org");
    for (std::string bad : {""s, "host"s, "host:"s, ":80"s, "::1:80"s, "[::1]80"s, "[::1]:"s, "[]:80"s, "host:0"s,
                            "host:080"s, "host:65536"s, "host:8a"s, "ho st:80"s, "host:80\n"s, "h\0st:80"s,
                            "host:-1"s, "[::1:80"s})
        EXPECT_FALSE(parse_host_port(bad)) << bad;
}

// --- messages with descriptors -------------------------------------------------------------------

struct Pair {
    Pair() {
        int sv[2];
        EXPECT_EQ(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        a.reset(sv[0]);
        b.reset(sv[1]);
    }
    UniqueFd a, b;
};

// Raw sendmsg with any number of descriptors.
void send_raw(int sock, std::string_view data, std::vector<int> fds) {
    iovec iov{const_cast<char*>(data.data()), data.size()};
    std::vector<char> control(CMSG_SPACE(sizeof(int) * fds.size()));
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    if (!fds.empty()) {
        msg.msg_control = control.data();
        msg.msg_controllen = control.size();
        cmsghdr* cm = CMSG_FIRSTHDR(&msg);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
        std::memcpy(CMSG_DATA(cm), fds.data(), sizeof(int) * fds.size());
    }
    ASSERT_EQ(::sendmsg(sock, &msg, MSG_NOSIGNAL), static_cast<ssize_t>(data.size()));
}

// The read end sees EOF within a second: no copy of the write end is left open.
bool sees_eof(int read_end) {
    pollfd p{read_end, POLLIN, 0};
    if (::poll(&p, 1, 1000) != 1) return false;
    char c;
    return ::read(read_end, &c, 1) == 0;
}

TEST(AirFdMessage, DescriptorArrives) {
    Pair s;
    int pipefd[2];
    ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
    UniqueFd r(pipefd[0]), w(pipefd[1]);
    send_message(s.a.get(), "accept b tls\n", w.get());
    w.reset();
    Message m = receive_message(s.b.get());
    EXPECT_EQ(m.line, "accept b tls");
    ASSERT_TRUE(m.fd);
    EXPECT_TRUE(::fcntl(m.fd.get(), F_GETFD) & FD_CLOEXEC);
    ASSERT_EQ(::write(m.fd.get(), "x", 1), 1);
    char c = 0;
    ASSERT_EQ(::read(r.get(), &c, 1), 1);
    EXPECT_EQ(c, 'x');
    m.fd.reset();
    EXPECT_TRUE(sees_eof(r.get()));
}

TEST(AirFdMessage, WithoutDescriptor) {
    Pair s;
    send_message(s.a.get(), "ok\n");
    Message m = receive_message(s.b.get());
    EXPECT_EQ(m.line, "ok");
    EXPECT_FALSE(m.fd);
}

// The kernel glues back-to-back sends on a stream socket: each message still
// comes alone, with its own descriptor.
TEST(AirFdMessage, GluedMessagesComeOneByOne) {
    Pair s;
    Pair carried;
    send_message(s.a.get(), "ok\n");
    send_message(s.a.get(), "accept b tls\n", carried.a.get());
    send_raw(s.a.get(), "one\ntwo\n", {});
    Message first = receive_message(s.b.get());
    EXPECT_EQ(first.line, "ok");
    EXPECT_FALSE(first.fd);
    Message second = receive_message(s.b.get());
    EXPECT_EQ(second.line, "accept b tls");
    EXPECT_TRUE(second.fd);
    EXPECT_EQ(receive_message(s.b.get()).line, "one");
    EXPECT_EQ(receive_message(s.b.get()).line, "two");
}

TEST(AirFdMessage, TwoDescriptorsRefusedAndClosed) {
    Pair s;
    int pipefd[2];
    ASSERT_EQ(::pipe2(pipefd, O_CLOEXEC), 0);
    UniqueFd r(pipefd[0]), w(pipefd[1]);
    send_raw(s.a.get(), "ok\n", {w.get(), w.get()});
    w.reset();
    EXPECT_EQ(refusal([&] { receive_message(s.b.get()); }), "more than one descriptor came with a message");
    EXPECT_TRUE(sees_eof(r.get()));
}

TEST(AirFdMessage, HostileMessagesRefused) {
    {
        Pair s;
        send_raw(s.a.get(), std::string(600, 'a') + "\n", {});
        EXPECT_EQ(refusal([&] { receive_message(s.b.get()); }), "a message longer than 512 bytes came");
    }
    {
        Pair s;
        send_raw(s.a.get(), "listen", {});
        EXPECT_EQ(refusal([&] { receive_message(s.b.get()); }), "a message came without its newline");
    }
    {
        Pair s;
        send_raw(s.a.get(), std::string(512, 'a') + "\n", {});
        EXPECT_EQ(refusal([&] { receive_message(s.b.get()); }), "a message longer than 512 bytes came");
    }
    {
        Pair s;
        s.a.reset();
        EXPECT_EQ(refusal([&] { receive_message(s.b.get()); }), "the connection was closed");
    }
    {
        Pair s;
        ::fcntl(s.b.get(), F_SETFL, O_NONBLOCK);
        EXPECT_EQ(refusal([&] { receive_message(s.b.get()); }), "no message came in time");
    }
    {
        // Exactly 512 bytes with the newline: accepted.
        Pair s;
        send_raw(s.a.get(), std::string(511, 'a') + "\n", {});
        EXPECT_EQ(receive_message(s.b.get()).line.size(), 511u);
    }
}

TEST(AirFdMessage, SendChecksItsLine) {
    Pair s;
    EXPECT_EQ(refusal([&] { send_message(s.a.get(), "ok"); }), "a message must end in a newline");
    EXPECT_EQ(refusal([&] { send_message(s.a.get(), std::string(600, 'a') + "\n"); }),
              "a message has at most 512 bytes");
    s.b.reset();
    EXPECT_NE(refusal([&] { send_message(s.a.get(), "ok\n"); }), "(accepted)");
}

// --- the relay's client against a stand-in host ----------------------------------------------------

class StandInHost {
public:
    StandInHost() {
        path_ = std::filesystem::temp_directory_path() / ("aerie-uplink-" + std::to_string(::getpid()) + ".sock");
        std::filesystem::remove(path_);
        listen_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
        EXPECT_EQ(::bind(listen_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
        EXPECT_EQ(::listen(listen_.get(), 4), 0);
    }
    ~StandInHost() {
        if (thread_.joinable()) thread_.join();
        std::filesystem::remove(path_);
    }
    std::string path() const { return path_.string(); }
    // Serves one connection on a thread: `serve` gets it and the request line.
    template <typename F>
    void serve(F serve) {
        thread_ = std::thread([this, serve] {
            UniqueFd conn(::accept4(listen_.get(), nullptr, nullptr, SOCK_CLOEXEC));
            Message m = receive_message(conn.get());
            serve(conn.get(), m.line);
        });
    }
    void join() { thread_.join(); }

private:
    std::filesystem::path path_;
    UniqueFd listen_;
    std::thread thread_;
};

TEST(AirUplinkClient, ConnectWritesThePreamble) {
    StandInHost host;
    Pair tcp;  // stands for the TCP connection to the peer host
    std::string request;
    host.serve([&](int conn, const std::string& line) {
        request = line;
        send_message(conn, format_ok(), tcp.a.get());
    });
    UniqueFd fd = uplink_connect("b", "home", Transport::Tls, host.path());
    host.join();
    EXPECT_EQ(request, "connect b");
    char buf[64] = {};
    ASSERT_EQ(::read(tcp.b.get(), buf, sizeof buf), 21);
    EXPECT_EQ(std::string(buf), "aerie-air/1 home tls\n");
    ASSERT_EQ(::write(fd.get(), "x", 1), 1);
}

TEST(AirUplinkClient, ConnectRefusedWithTheHostsReason) {
    StandInHost host;
    host.serve([](int conn, const std::string&) { send_message(conn, format_error("no relay route to zone c")); });
    EXPECT_EQ(refusal([&] { uplink_connect("c", "home", Transport::Ssh, host.path()); }), "no relay route to zone c");
    host.join();
    EXPECT_NE(refusal([&] { uplink_connect("c", "home", Transport::Ssh, "/nonexistent/uplink.sock"); }), "(accepted)");
    EXPECT_NE(refusal([&] { uplink_connect("C", "home", Transport::Ssh, host.path()); }), "(accepted)");
}

TEST(AirUplinkClient, ListenerReceivesAcceptsUntilEof) {
    StandInHost host;
    Pair tcp;
    std::string request;
    host.serve([&](int conn, const std::string& line) {
        request = line;
        send_message(conn, format_ok());
        send_message(conn, format_accept({"b", Transport::Ssh}), tcp.a.get());
    });
    UplinkListener listener(host.path());
    auto accepted = listener.next();
    host.join();  // the host's end is closed
    EXPECT_EQ(request, "listen");
    ASSERT_TRUE(accepted);
    EXPECT_EQ(accepted->what.zone, "b");
    EXPECT_EQ(accepted->what.transport, Transport::Ssh);
    ASSERT_EQ(::write(accepted->sock.get(), "y", 1), 1);
    char c = 0;
    ASSERT_EQ(::read(tcp.b.get(), &c, 1), 1);
    EXPECT_EQ(c, 'y');
    EXPECT_FALSE(listener.next());
}

TEST(AirUplinkClient, ListenerRefusesAnAcceptWithoutSocket) {
    StandInHost host;
    host.serve([&](int conn, const std::string&) {
        send_message(conn, format_ok());
        send_message(conn, format_accept({"b", Transport::Tls}));
    });
    UplinkListener listener(host.path());
    host.join();
    EXPECT_EQ(refusal([&] { listener.next(); }), "an accept came without its connection");
}

}  // namespace
