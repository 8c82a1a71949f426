#include "air/host_uplink.hpp"

#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "admin/lifecycle.hpp"
#include "admin/registry.hpp"
#include "air/layout.hpp"
#include "air/zone.hpp"
#include "base/bounded_log.hpp"

extern char** environ;  // passed on to qrexec-client

namespace aerie::air {

namespace fs = std::filesystem;
using Unix = asio::local::stream_protocol;
using Tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// The account the relay runs as in a qube (storage/accounts.cpp: user 1000).
constexpr uid_t kQubeUserId = 1000;

// One running qube's uplink.sock and the listener it registered.
struct HostUplink::Endpoint {
    Endpoint(asio::io_context& io, std::string name) : qube(std::move(name)), acceptor(io), pause(io) {}
    std::string qube;
    Unix::acceptor acceptor;
    asio::steady_timer pause;  // after an accept error
    std::shared_ptr<Unix::socket> listener;
    size_t requests = 0;
    bool saturated = false;  // at kMaxRequests, logged once
    bool closed = false;     // the qube stopped: late completions do nothing
};

// One connection on uplink.sock: one request, one answer.
struct HostUplink::Request {
    Request(Unix::socket s, EndpointPtr endpoint)
        : sock(std::move(s)), timer(sock.get_executor()), ep(std::move(endpoint)) {
        ++ep->requests;
    }
    ~Request() { --ep->requests; }
    Unix::socket sock;
    asio::steady_timer timer;
    EndpointPtr ep;
};

// One connection from a peer host, until it is handed to a relay.
struct HostUplink::Incoming {
    Incoming(Tcp::socket s, std::shared_ptr<size_t> open)
        : sock(std::move(s)), timer(sock.get_executor()), count(std::move(open)) {
        ++*count;
    }
    ~Incoming() { --*count; }
    Tcp::socket sock;
    asio::steady_timer timer;
    std::shared_ptr<size_t> count;
    std::string peer;  // address:port, for the log
    std::string line;  // the preamble read so far
    Preamble preamble{};
    std::string relay;
    bool waiting_listener = false;  // its 10 s for the relay's listen run
};

namespace {

bool host_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '-' ||
           c == '_';
}

void close_quietly(auto& socket) {
    asio::error_code ignored;
    socket.close(ignored);
}

// A descriptor handed to a relay must block: O_NONBLOCK (which Asio sets)
// belongs to the socket, not to our descriptor of it.
void make_blocking(int fd) {
    int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
}

// A link between hosts, as the relays get it: small writes leave at once,
// and a dead peer (a cut link, a host gone) is noticed within seconds, not
// TCP's minutes: unacknowledged data for 10 s, or an idle link silent for
// 5 s and three probes 2 s apart, ends the connection with an error.
void tune_link(int fd) {
    int one = 1, idle = 5, interval = 2, probes = 3;
    unsigned user_timeout_ms = 10000;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    ::setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
    ::setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes);
    ::setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_timeout_ms, sizeof user_timeout_ms);
}

constexpr uint64_t kServeLogMaxBytes = 1u << 20;

// Started in a session of its own and not our child: nothing for the loop
// to wait for, no zombie.
bool spawn_detached(const std::vector<std::string>& args, const fs::path& log) {
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    // The serve daemon's output comes from inside the relay qube: a capped drainer writes it.
    base::LogPipe log_pipe;
    try {
        log_pipe = base::spawn_log_drainer(log, {kServeLogMaxBytes});
    } catch (const std::exception&) {
        return false;
    }
    pid_t middle = ::fork();
    if (middle < 0) return false;
    if (middle == 0) {
        ::setsid();
        if (::fork() != 0) ::_exit(0);
        int in = ::open("/dev/null", O_RDONLY);
        int out = log_pipe.input.get();
        if (in < 0 || out < 0) ::_exit(127);
        ::dup2(in, 0);
        ::dup2(out, 1);
        ::dup2(out, 2);
        // Asio's sockets are not close-on-exec.
        ::syscall(SYS_close_range, 3u, ~0u, 0u);
        ::execve(argv[0], argv.data(), environ);
        ::_exit(127);
    }
    int status = 0;
    while (::waitpid(middle, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

}  // namespace

std::optional<HostPort> parse_host_port(std::string_view text) {
    if (text.empty() || text.size() > 255) return std::nullopt;
    HostPort out;
    std::string_view host, port;
    if (text.front() == '[') {
        size_t close = text.find(']');
        if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') return std::nullopt;
        host = text.substr(1, close - 1);
        port = text.substr(close + 2);
        for (char c : host)
            if (!host_char(c) && c != ':' && c != '%') return std::nullopt;
    } else {
        size_t colon = text.rfind(':');
        if (colon == std::string_view::npos) return std::nullopt;
        host = text.substr(0, colon);
        port = text.substr(colon + 1);
        for (char c : host)
            if (!host_char(c)) return std::nullopt;  // a bare IPv6 address needs its brackets
    }
    if (host.empty() || port.empty() || port.size() > 5 || port.front() == '0') return std::nullopt;
    unsigned value = 0;
    for (char c : port) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value > 65535) return std::nullopt;
    return HostPort{std::string(host), std::string(port)};
}

HostUplink::HostUplink(asio::io_context& io, admin::Registry& registry, admin::EventHub& events,
                       admin::Lifecycle& lifecycle, HostUplinkConfig config)
    : io_(io),
      registry_(registry),
      model_(registry.model()),
      lifecycle_(lifecycle),
      config_(std::move(config)),
      accept_pause_(io) {
    events.observe([this, alive = alive_](std::string_view subject, std::string_view event,
                                          const admin::EventHub::Kwargs& kwargs) {
        if (!*alive) return;
        if (event == "domain-shutdown") {
            close_endpoint(std::string(subject));
            spawned_.erase(std::string(subject));
        } else if (event == "domain-delete") {
            for (const auto& [key, value] : kwargs)
                if (key == "vm") close_endpoint(value);
        }
    });
    lifecycle_.on_launch.push_back([this, alive = alive_](const admin::Qube& qube, const admin::QubesDb& db) {
        if (*alive) open_endpoint(qube.name, db.dir().parent_path() / "air");
    });
}

HostUplink::~HostUplink() {
    *alive_ = false;
    while (!endpoints_.empty()) close_endpoint(endpoints_.begin()->first);
    if (acceptor_) close_quietly(*acceptor_);
    waiting_.clear();
}

void HostUplink::sync() {
    for (const admin::Qube* q : model_.qubes_by_name())
        if (auto db = lifecycle_.qubesdb(q->name)) open_endpoint(q->name, db->dir().parent_path() / "air");
    if (!config_.listen.empty()) open_acceptor();
}

void HostUplink::log(const std::string& line) const { registry_.log("air: " + line); }

std::vector<const admin::Qube*> HostUplink::remotes_in(std::string_view zone) const {
    std::vector<const admin::Qube*> out;
    for (const admin::Qube* q : model_.qubes_by_name()) {
        if (!q->is_remote()) continue;
        auto it = q->features.find(std::string(kZoneFeature));
        if (it != q->features.end() && it->second == zone) out.push_back(q);
    }
    return out;
}

// --- the relay side -------------------------------------------------------------------------------

void HostUplink::open_endpoint(const std::string& qube, const fs::path& air_dir) {
    close_endpoint(qube);
    auto ep = std::make_shared<Endpoint>(io_, qube);
    fs::path path = air_dir / "uplink.sock";
    try {
        fs::create_directories(air_dir);
        std::error_code ignored;
        fs::remove(path, ignored);
        const admin::Qube* q = model_.find(qube);
        if (!q) throw std::runtime_error("no such qube");
        ep->acceptor.open();
        ep->acceptor.bind(Unix::endpoint(path.string()));
        // Only this qube may connect: its root (owner) and its `user`
        // (group 1000, the relay's account), seen from the host as ids in the
        // qube's range; no host user, no other qube. The folder is host-owned
        // and bound read-only, so the name is the host's: chown/chmod by path
        // are safe here, and done before listen (nobody connects in between).
        uid_t base = admin::Lifecycle::owner_uid(*q);
        if (::chown(path.c_str(), base, base + kQubeUserId) != 0 || ::chmod(path.c_str(), 0660) != 0)
            throw std::runtime_error(std::string("chown/chmod: ") + std::strerror(errno));
        ep->acceptor.listen();
    } catch (const std::exception& e) {
        log(fmt::format("cannot open the uplink of {} at {}: {}", qube, path.string(), e.what()));
        return;
    }
    endpoints_[qube] = ep;
    accept_request(ep);
}

void HostUplink::close_endpoint(const std::string& qube) {
    auto it = endpoints_.find(qube);
    if (it == endpoints_.end()) return;
    EndpointPtr ep = it->second;
    endpoints_.erase(it);
    ep->closed = true;
    close_quietly(ep->acceptor);
    ep->pause.cancel();
    if (ep->listener) close_quietly(*ep->listener);
    ep->listener.reset();
}

void HostUplink::accept_request(const EndpointPtr& ep) {
    ep->acceptor.async_accept([this, alive = alive_, ep](const asio::error_code& ec, Unix::socket sock) {
        if (!*alive || ep->closed || ec == asio::error::operation_aborted) return;
        if (ec) {
            log(fmt::format("uplink of {}: accepting: {}", ep->qube, ec.message()));
            ep->pause.expires_after(100ms);
            ep->pause.async_wait([this, alive, ep](const asio::error_code& e) {
                if (!e && *alive && !ep->closed) accept_request(ep);
            });
            return;
        }
        if (ep->requests >= kMaxRequests) {
            if (!std::exchange(ep->saturated, true))
                log(fmt::format("uplink of {}: refusing connections: {} requests open", ep->qube, kMaxRequests));
        } else {
            ep->saturated = false;
            asio::error_code ignored;
            sock.non_blocking(true, ignored);  // a reply never blocks the loop
            read_request(ep, std::make_shared<Request>(std::move(sock), ep));
        }
        accept_request(ep);
    });
}

void HostUplink::read_request(const EndpointPtr& ep, const RequestPtr& req) {
    req->timer.expires_after(kRequestTimeout);
    req->timer.async_wait([this, alive = alive_, ep, req](const asio::error_code& ec) {
        if (!ec && *alive) refuse(ep, req, "no request within 5 seconds");
    });
    req->sock.async_wait(Unix::socket::wait_read, [this, alive = alive_, ep, req](const asio::error_code& ec) {
        if (!*alive || ec || !req->sock.is_open()) return;
        req->timer.cancel();
        UplinkRequest request;
        try {
            // One sendmsg is one request (docs/air.md): what is there is all of it.
            request = parse_uplink_request(receive_message(req->sock.native_handle()).line);
        } catch (const AirError& e) {
            return refuse(ep, req, e.what());
        }
        if (ep->closed) return refuse(ep, req, "the qube is stopping");
        if (request.kind == UplinkRequest::Kind::Listen) return register_listener(ep, req);
        connect_zone(ep, req, request.zone);
    });
}

void HostUplink::refuse(const EndpointPtr& ep, const RequestPtr& req, const std::string& reason) {
    log(fmt::format("uplink of {}: refused: {}", ep->qube, reason));
    req->timer.cancel();
    if (!req->sock.is_open()) return;
    try {
        send_message(req->sock.native_handle(), format_error(reason));
    } catch (const AirError&) {
        // Gone or not reading: nothing more to tell it.
    }
    close_quietly(req->sock);
}

void HostUplink::connect_zone(const EndpointPtr& ep, const RequestPtr& req, const std::string& zone) {
    bool routed = false;
    std::string address;
    for (const admin::Qube* q : remotes_in(zone)) {
        if (model_.value_text(q, "relayvm") != ep->qube) continue;
        routed = true;
        auto it = q->features.find(std::string(kAddressFeature));
        if (it != q->features.end() && !it->second.empty()) {
            address = it->second;
            break;
        }
    }
    if (!routed) return refuse(ep, req, "no relay route to zone " + zone);
    if (address.empty()) return refuse(ep, req, "zone " + zone + " has no air-address");
    auto target = parse_host_port(address);
    if (!target) return refuse(ep, req, "connecting to " + address + ": not host:port");

    struct Dial {
        explicit Dial(asio::io_context& io) : resolver(io), sock(io), timer(io) {}
        Tcp::resolver resolver;
        Tcp::socket sock;
        asio::steady_timer timer;
        bool timed_out = false;
    };
    auto dial = std::make_shared<Dial>(io_);
    dial->timer.expires_after(kConnectTimeout);
    dial->timer.async_wait([dial](const asio::error_code& ec) {
        if (ec) return;
        dial->timed_out = true;
        dial->resolver.cancel();
        close_quietly(dial->sock);
    });
    auto finish = [this, alive = alive_, ep, req, dial, address, zone](const asio::error_code& ec) {
        dial->timer.cancel();
        if (!*alive) return;
        if (ec || dial->timed_out)
            return refuse(ep, req, "connecting to " + address + ": " + (dial->timed_out ? "timed out" : ec.message()));
        make_blocking(dial->sock.native_handle());
        tune_link(dial->sock.native_handle());
        try {
            send_message(req->sock.native_handle(), format_ok(), dial->sock.native_handle());
            log(fmt::format("uplink of {}: connected to zone {} at {}", ep->qube, zone, address));
        } catch (const AirError& e) {
            log(fmt::format("uplink of {}: the connection to zone {} not handed over: {}", ep->qube, zone, e.what()));
        }
        close_quietly(req->sock);
        close_quietly(dial->sock);
    };
    dial->resolver.async_resolve(
        target->host, target->port, Tcp::resolver::numeric_service,
        [dial, finish](const asio::error_code& ec, const Tcp::resolver::results_type& results) {
            if (ec) return finish(ec);
            asio::async_connect(dial->sock, results,
                                [finish](const asio::error_code& e, const Tcp::endpoint&) { finish(e); });
        });
}

void HostUplink::register_listener(const EndpointPtr& ep, const RequestPtr& req) {
    if (ep->listener) drop_listener(ep, "a newer one replaces it");
    try {
        send_message(req->sock.native_handle(), format_ok());
    } catch (const AirError& e) {
        log(fmt::format("uplink of {}: listen: {}", ep->qube, e.what()));
        return close_quietly(req->sock);
    }
    auto listener = std::make_shared<Unix::socket>(std::move(req->sock));
    ep->listener = listener;
    log(fmt::format("uplink of {}: listening", ep->qube));
    // A listener only receives: anything it sends, or its end, ends it.
    listener->async_wait(Unix::socket::wait_read, [this, alive = alive_, ep, listener](const asio::error_code& ec) {
        if (!*alive || ep->listener != listener) return;
        drop_listener(ep, ec ? ec.message() : "it closed its end or sent something");
    });
    deliver(ep->qube);
}

void HostUplink::drop_listener(const EndpointPtr& ep, const std::string& why) {
    log(fmt::format("uplink of {}: listener dropped: {}", ep->qube, why));
    if (ep->listener) close_quietly(*ep->listener);
    ep->listener.reset();
}

// --- the peer side --------------------------------------------------------------------------------

void HostUplink::open_acceptor() {
    auto where = parse_host_port(config_.listen);
    asio::error_code ec;
    asio::ip::address address = where ? asio::ip::make_address(where->host, ec) : asio::ip::address();
    if (!where || ec) throw AirError("--air-listen " + config_.listen + ": ADDRESS:PORT with a numeric address");
    Tcp::endpoint endpoint(address, static_cast<unsigned short>(std::stoi(where->port)));
    acceptor_ = std::make_unique<Tcp::acceptor>(io_);
    acceptor_->open(endpoint.protocol());
    acceptor_->set_option(Tcp::acceptor::reuse_address(true));
    acceptor_->bind(endpoint);
    acceptor_->listen();
    log("listening for peer zones on " + config_.listen);
    accept_incoming();
}

void HostUplink::accept_incoming() {
    acceptor_->async_accept([this, alive = alive_](const asio::error_code& ec, Tcp::socket sock) {
        if (!*alive || ec == asio::error::operation_aborted) return;
        if (ec) {
            log("accepting a peer connection: " + ec.message());
            accept_pause_.expires_after(100ms);
            accept_pause_.async_wait([this, alive](const asio::error_code& e) {
                if (!e && *alive) accept_incoming();
            });
            return;
        }
        asio::error_code peer_ec;
        auto peer = sock.remote_endpoint(peer_ec);
        std::string name = peer_ec ? "?" : fmt::format("{}:{}", peer.address().to_string(), peer.port());
        if (*incoming_ >= kMaxIncoming) {
            log(fmt::format("closed a connection from {}: {} connections pending", name, kMaxIncoming));
        } else {
            asio::error_code ignored;
            sock.non_blocking(true, ignored);
            auto in = std::make_shared<Incoming>(std::move(sock), incoming_);
            in->peer = name;
            in->timer.expires_after(kPreambleTimeout);
            in->timer.async_wait([this, alive, in](const asio::error_code& e) {
                if (!e && *alive) give_up(in, "no preamble within 5 seconds");
            });
            read_preamble(in);
        }
        accept_incoming();
    });
}

// Byte-exact: the preamble is consumed up to its '\n' and no further, what
// follows is the transport's and goes with the socket.
void HostUplink::read_preamble(const IncomingPtr& in) {
    in->sock.async_wait(Tcp::socket::wait_read, [this, alive = alive_, in](const asio::error_code& ec) {
        if (!*alive || ec || !in->sock.is_open()) return;
        int fd = in->sock.native_handle();
        char buf[kMaxPreamble];
        ssize_t n = ::recv(fd, buf, kMaxPreamble - in->line.size(), MSG_PEEK | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return read_preamble(in);
        if (n <= 0) return give_up(in, n == 0 ? "closed before its preamble" : std::strerror(errno));
        std::string_view seen(buf, static_cast<size_t>(n));
        size_t newline = seen.find('\n');
        size_t take = newline == std::string_view::npos ? seen.size() : newline + 1;
        if (::recv(fd, buf, take, MSG_DONTWAIT) != static_cast<ssize_t>(take))
            return give_up(in, "reading its preamble failed");
        in->line.append(buf, newline == std::string_view::npos ? take : newline);
        if (newline == std::string_view::npos) {
            if (in->line.size() >= kMaxPreamble) return give_up(in, "preamble longer than 128 bytes");
            return read_preamble(in);
        }
        try {
            in->preamble = parse_preamble(in->line);
        } catch (const AirError& e) {
            return give_up(in, e.what());
        }
        in->timer.cancel();
        route(in);
    });
}

void HostUplink::give_up(const IncomingPtr& in, const std::string& why) {
    log(fmt::format("closed a connection from {}: {}", in->peer, why));
    in->timer.cancel();
    close_quietly(in->sock);
    if (auto it = waiting_.find(in->relay); it != waiting_.end()) {
        std::erase(it->second, in);
        if (it->second.empty()) waiting_.erase(it);
    }
}

void HostUplink::route(const IncomingPtr& in) {
    const std::string& zone = in->preamble.from_zone;
    for (const admin::Qube* q : remotes_in(zone)) {
        in->relay = model_.value_text(q, "relayvm");
        if (!in->relay.empty()) break;
    }
    if (in->relay.empty()) return give_up(in, "no relay for zone " + zone);
    // Never dom0: qrexec-client would run the serve command on the host.
    const admin::Qube* relay = model_.find(in->relay);
    if (!relay || relay->is_admin() || relay->is_remote())
        return give_up(in, "the relay " + in->relay + " of zone " + zone + " is not a qube that runs");
    waiting_[in->relay].push_back(in);
    deliver(in->relay);
}

// Hands over what waits for `relay`, or gets it ready: started if halted,
// its serve daemon started if it has no listener.
void HostUplink::deliver(const std::string& relay) {
    auto it = waiting_.find(relay);
    if (it == waiting_.end()) return;
    auto& queue = it->second;
    auto ep_it = endpoints_.find(relay);
    EndpointPtr ep = ep_it == endpoints_.end() ? nullptr : ep_it->second;
    while (!queue.empty() && ep && ep->listener) {
        IncomingPtr in = queue.front();
        queue.pop_front();
        hand_over(ep, in);
    }
    if (queue.empty()) {
        waiting_.erase(it);
        return;
    }
    if (starting_.count(relay)) return;
    admin::Qube* qube = model_.find(relay);
    if (!qube) {
        auto gone = std::move(queue);
        waiting_.erase(it);
        for (auto& in : gone) give_up(in, "its relay " + relay + " does not exist");
        return;
    }
    if (qube->is_halted()) {
        log(fmt::format("starting relay {} for a connection from zone {}", relay, queue.front()->preamble.from_zone));
        starting_.insert(relay);
        lifecycle_.start(*qube, [this, alive = alive_, relay](std::optional<admin::ApiError> error) {
            if (!*alive) return;
            starting_.erase(relay);
            if (!error) return deliver(relay);
            auto failed = std::move(waiting_[relay]);
            waiting_.erase(relay);
            for (auto& in : failed) give_up(in, "its relay " + relay + " did not start: " + error->what());
        });
        return;
    }
    // Running without a listener: start its serve daemon (once per wait)
    // and give it kListenerTimeout to listen.
    auto now = Clock::now();
    if (auto sp = spawned_.find(relay); sp == spawned_.end() || now - sp->second >= kListenerTimeout) {
        spawned_[relay] = now;
        spawn_serve(relay);
    }
    for (auto& in : queue) {
        if (in->waiting_listener) continue;
        in->waiting_listener = true;
        in->timer.expires_after(kListenerTimeout);
        in->timer.async_wait([this, alive = alive_, in, relay](const asio::error_code& e) {
            if (!e && *alive) give_up(in, "relay " + relay + " did not listen within 10 seconds");
        });
    }
}

void HostUplink::hand_over(const EndpointPtr& ep, const IncomingPtr& in) {
    in->timer.cancel();
    make_blocking(in->sock.native_handle());
    tune_link(in->sock.native_handle());
    try {
        send_message(ep->listener->native_handle(), format_accept({in->preamble.from_zone, in->preamble.transport}),
                     in->sock.native_handle());
        log(fmt::format("handed a connection from zone {} ({}) to {}", in->preamble.from_zone, in->peer, ep->qube));
    } catch (const AirError& e) {
        drop_listener(ep, e.what());
        log(fmt::format("closed a connection from {}: not handed over", in->peer));
    }
    close_quietly(in->sock);
}

void HostUplink::spawn_serve(const std::string& relay) {
    std::string program = (config_.bin_dir / "qrexec-client").string();
    std::vector<std::string> args = {program, "--socket-dir=" + config_.qrexec_socket_dir.string(), "-d", relay,
                                     "user:" + std::string(kRelayProgram) + " serve --daemon"};
    fs::path log_file = config_.log_dir / (relay + ".air-serve.log");
    if (spawn_detached(args, log_file))
        log(fmt::format("starting the serve daemon in {} (log: {})", relay, log_file.string()));
    else
        log("cannot run " + program);
}

}  // namespace aerie::air
