#include "air/tls_serve.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/chrono.h>
#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <thread>

#include "air/relay_names.hpp"
#include "air/zone.hpp"
#include "base/log_text.hpp"

extern char** environ;

namespace aerie::air {

namespace fs = std::filesystem;
using qrexec::UniqueFd;

namespace {

constexpr auto kUplinkRetry = std::chrono::seconds(2);

std::string errno_text(const std::string& what) { return what + ": " + std::strerror(errno); }

std::string own_zone(const fs::path& home) {
    std::ifstream in(home / "zone");
    std::string zone;
    std::getline(in, zone);
    if (!invalid_zone_name(zone).empty()) throw AirError("this relay has no zone yet (" + (home / "zone").string() + ")");
    return zone;
}

}  // namespace

// Lines name what peers and local callers chose (services, qubes, errors): escaped and bounded.
void serve_log(const std::string& line) {
    auto now = std::chrono::system_clock::now();
    fmt::print(stderr, "{:%Y-%m-%d %H:%M:%S} {}\n", fmt::localtime(std::chrono::system_clock::to_time_t(now)),
               base::log_safe(line, 1024));
    std::fflush(stderr);
}

struct Serve::Client {
    uint64_t id;
    UniqueFd sock;
    EventLoop::Token token = 0;
    bool asked = false;  // its call came
    std::string zone;
    uint64_t link = 0;
    uint32_t stream = 0;
};

Serve::Serve(EventLoop& loop, ServeOptions options) : loop_(loop), options_(std::move(options)) {}

Serve::~Serve() {
    clients_.clear();
    links_.clear();
}

void Serve::start() {
    fs::path run = options_.home / "run";
    std::error_code ec;
    fs::create_directories(run, ec);
    fs::path path = relay_socket_path(options_.home);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.native().size() >= sizeof addr.sun_path) throw AirError(path.string() + ": path too long");
    std::memcpy(addr.sun_path, path.c_str(), path.native().size());
    listener_.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    ::unlink(path.c_str());  // a dead daemon's (we hold the lock)
    if (::bind(listener_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
        ::chmod(path.c_str(), 0600) != 0 || ::listen(listener_.get(), 64) != 0)
        throw AirError(errno_text(path.string()));
    listener_token_ = loop_.add(listener_.get(), EPOLLIN, [this](uint32_t) { on_listener(); });

    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    ::sigprocmask(SIG_BLOCK, &chld, nullptr);
    sigchld_.reset(::signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sigchld_) throw AirError(errno_text("signalfd"));
    sigchld_token_ = loop_.add(sigchld_.get(), EPOLLIN, [this](uint32_t) { on_sigchld(); });

    register_uplink();
    serve_log("serving " + path.string());
}

// tls-proxy's calls

void Serve::on_listener() {
    for (;;) {
        UniqueFd sock(::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
        if (!sock) return;
        uint64_t id = next_serial_++;
        auto owned = std::make_unique<Client>();
        Client& c = *owned;
        c.id = id;
        c.sock = std::move(sock);
        c.token = loop_.add(c.sock.get(), EPOLLIN, [this, id](uint32_t) {
            if (auto it = clients_.find(id); it != clients_.end()) on_client(*it->second);
        });
        clients_.emplace(id, std::move(owned));
    }
}

void Serve::on_client(Client& c) {
    if (c.asked) {
        // Nothing more is due from it: readable means gone (or misbehaving).
        if (TlsLink* l = link(c.link); l && c.stream) l->reset_stream(c.stream, "the caller went away");
        return drop_client(c);
    }
    c.asked = true;
    ReceivedCall call;
    try {
        call = receive_call(c.sock.get());
    } catch (const AirError& e) {
        serve_log(std::string("a local call refused: ") + e.what());
        ::send(c.sock.get(), format_reset(e.what()).data(), format_reset(e.what()).size(), MSG_NOSIGNAL);
        return drop_client(c);
    }
    route(c, std::move(call));
}

void Serve::drop_client(Client& c) {
    loop_.remove(c.token);
    auto it = clients_.find(c.id);
    loop_.post([owned = std::shared_ptr<Client>(std::move(it->second))] {});  // its handler may be running
    clients_.erase(it);
}

void Serve::route(Client& c, ReceivedCall call) {
    const LocalCall& what = call.call;
    uint64_t client = c.id;
    c.zone = what.zone;
    try {
        if (auto why = invalid_zone_name(what.zone); !why.empty()) throw AirError("not a zone: " + what.zone);
        if (!fs::exists(options_.home / "peers" / what.zone / "cert.pem"))
            throw AirError("zone " + what.zone + " is not paired with this relay (no certificate pinned for it)");
        TlsLink* l = nullptr;
        if (auto cur = current_.find(what.zone); cur != current_.end()) l = link(cur->second);
        if (!l) l = &new_link(what.zone, TlsLink::Role::Connector);
        c.link = l->serial();
        c.stream = l->open_stream({what.source, what.target, what.service}, {std::move(call.input), std::move(call.output)},
                                  [this, client](const StreamResult& r) { end_call(client, r); });
    } catch (const std::exception& e) {  // AirError, or MuxError for a field the peer would refuse
        end_call(client, StreamResult(std::string(e.what())));
    }
}

void Serve::end_call(uint64_t client, const StreamResult& result) {
    auto it = clients_.find(client);
    if (it == clients_.end()) return;
    Client& c = *it->second;
    std::string line = std::holds_alternative<int>(result) ? format_exit(std::get<int>(result))
                                                            : format_reset(std::get<std::string>(result));
    if (auto* why = std::get_if<std::string>(&result)) serve_log("a call to zone " + c.zone + " failed: " + *why);
    ::send(c.sock.get(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    c.stream = 0;
    drop_client(c);
}

// the uplink

void Serve::register_uplink() {
    std::string state;
    try {
        if (!fs::exists(options_.uplink)) throw AirError("no uplink at " + options_.uplink);
        uplink_ = std::make_unique<UplinkListener>(options_.uplink);
        uplink_token_ = loop_.add(uplink_->fd(), EPOLLIN, [this](uint32_t) { on_uplink(); });
        state = "listening on the uplink";
    } catch (const AirError& e) {
        uplink_.reset();
        state = std::string(e.what()) + ": no incoming connections for now";
        loop_.after(kUplinkRetry, [this] { register_uplink(); });
    }
    if (state != uplink_state_) serve_log(state);
    uplink_state_ = state;
}

void Serve::on_uplink() {
    std::optional<UplinkListener::Accepted> accepted;
    try {
        accepted = uplink_->next();
    } catch (const AirError& e) {
        serve_log(std::string("the uplink: ") + e.what());
        return;  // one bad message; the uplink itself goes on
    }
    if (accepted) return on_accept(std::move(*accepted));
    serve_log("the host closed the uplink");
    uplink_state_.clear();
    loop_.remove(uplink_token_);
    loop_.post([gone = std::shared_ptr<UplinkListener>(std::move(uplink_))] {});  // its handler is running
    loop_.after(kUplinkRetry, [this] { register_uplink(); });
}

void Serve::on_accept(UplinkListener::Accepted accepted) {
    const std::string& zone = accepted.what.zone;
    if (accepted.what.transport == Transport::Ssh) {
        std::vector<std::string> argv{std::string(kSshd), "-i", "-e", "-f",
                                      (options_.home / "ssh" / "sshd_config").string()};
        try {
            pid_t pid = spawn_on_socket(argv, accepted.sock.get());
            children_[pid] = Child{0, 0};
            serve_log(fmt::format("zone {}: ssh connection, sshd -i pid {}", zone, pid));
        } catch (const AirError& e) {
            serve_log(fmt::format("zone {}: ssh connection dropped: {}", zone, e.what()));
        }
        return;
    }
    serve_log("zone " + zone + ": TLS connection in");
    new_link(zone, TlsLink::Role::Acceptor).attach(std::move(accepted.sock));
}

// links

TlsLink* Serve::link(uint64_t serial) {
    auto it = links_.find(serial);
    return it == links_.end() || it->second->closed() ? nullptr : it->second.get();
}

TlsLink& Serve::new_link(const std::string& zone, TlsLink::Role role) {
    uint64_t serial = next_serial_++;
    TlsLink::Hooks hooks;
    hooks.on_open = [this](TlsLink& l, uint32_t stream, const mux::OpenRequest& open) {
        return run_incoming(l, stream, open);
    };
    hooks.on_closed = [this](TlsLink& l, const std::string& reason) { on_link_closed(l, reason); };
    hooks.on_ready = [this](TlsLink& l) {
        serve_log("zone " + l.zone() + ": TLS link " + std::to_string(l.serial()) + " up");
        current_[l.zone()] = l.serial();  // the newest link takes the new calls
    };
    auto owned = std::make_unique<TlsLink>(loop_, serial, zone, role, options_.home, std::move(hooks));
    TlsLink& l = *owned;
    links_.emplace(serial, std::move(owned));
    if (role == TlsLink::Role::Connector) {
        current_[zone] = serial;
        connect(l);
    }
    return l;
}

// The uplink's connect blocks (the host dials the peer): a helper thread
// makes it, the loop goes on meanwhile.
void Serve::connect(TlsLink& l) {
    std::string zone = l.zone();
    uint64_t serial = l.serial();
    std::string mine;
    try {
        mine = own_zone(options_.home);
    } catch (const AirError& e) {
        return l.fail(e.what());
    }
    std::thread([this, zone, serial, mine, uplink = options_.uplink] {
        std::shared_ptr<UniqueFd> sock;
        std::string error;
        try {
            sock = std::make_shared<UniqueFd>(uplink_connect(zone, mine, Transport::Tls, uplink));
        } catch (const std::exception& e) {
            error = "cannot reach zone " + zone + ": " + e.what();
        }
        loop_.post_from_thread([this, serial, sock, error] {
            TlsLink* made = link(serial);
            if (!made) return;
            if (sock)
                made->attach(std::move(*sock));
            else
                made->fail(error);
        });
    }).detach();
}

void Serve::on_link_closed(TlsLink& l, const std::string& reason) {
    serve_log("zone " + l.zone() + ": TLS link " + std::to_string(l.serial()) + " closed: " + reason);
    if (auto it = current_.find(l.zone()); it != current_.end() && it->second == l.serial()) current_.erase(it);
    uint64_t serial = l.serial();
    // Its own code is running: destroy it afterwards.
    loop_.post([this, serial] { links_.erase(serial); });
}

LocalEnds Serve::run_incoming(TlsLink& l, uint32_t stream, const mux::OpenRequest& open) {
    std::vector<std::string> argv;
    try {
        argv = incoming_argv(l.zone(), open.source, open.target, open.service, l.allowed_sources(), options_.qubesdb);
    } catch (const AirError& e) {
        serve_log(fmt::format("zone {}: {} -> {} {}: refused: {}", l.zone(), open.source, open.target, open.service,
                              e.what()));
        throw;
    }
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) throw AirError(errno_text("socketpair"));
    UniqueFd mine(pair[0]), theirs(pair[1]);
    pid_t pid = spawn_on_socket(argv, theirs.get());
    children_[pid] = Child{l.serial(), stream};
    serve_log(fmt::format("zone {}: {} -> {} {}: {} pid {}", l.zone(), open.source, open.target, open.service,
                          argv[1], pid));
    UniqueFd input(::fcntl(mine.get(), F_DUPFD_CLOEXEC, 0));
    if (!input) throw AirError(errno_text("dup"));
    return {std::move(input), std::move(mine)};
}

pid_t Serve::spawn_on_socket(const std::vector<std::string>& argv, int sock) {
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, sock, 0);
    posix_spawn_file_actions_adddup2(&actions, sock, 1);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, defaults;
    sigemptyset(&none);
    sigemptyset(&defaults);
    sigaddset(&defaults, SIGPIPE);  // ignored here, not in what we run
    sigaddset(&defaults, SIGCHLD);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &defaults);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_t pid = -1;
    int err = ::posix_spawn(&pid, args[0], &actions, &attr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attr);
    if (err != 0) throw AirError("cannot run " + argv[0] + ": " + std::strerror(err));
    return pid;
}

void Serve::on_sigchld() {
    signalfd_siginfo info;
    while (::read(sigchld_.get(), &info, sizeof info) > 0) {
    }
    for (;;) {
        int status = 0;
        pid_t pid = ::waitpid(-1, &status, WNOHANG);
        if (pid <= 0) return;
        int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
        auto it = children_.find(pid);
        if (it == children_.end()) continue;
        Child child = it->second;
        children_.erase(it);
        if (TlsLink* l = link(child.link)) l->local_exited(child.stream, code);
    }
}

}  // namespace aerie::air
