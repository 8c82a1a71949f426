#include "qrexec/daemon.hpp"

#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "base/safe_dir.hpp"
#include "qrexec/admin_call.hpp"
#include "qrexec/agent_request.hpp"
#include "qrexec/log_lines.hpp"
#include "qrexec/local_service.hpp"
#include "qrexec/system_info_source.hpp"
#include "qrexec/vchan.hpp"

namespace aerie::qrexec {

namespace {

uint32_t get_u32(std::string_view b, size_t at) {
    auto c = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(b[at + i])); };
    return c(0) | (c(1) << 8) | (c(2) << 16) | (c(3) << 24);
}

// "uuid:UUID" with hex digits and dashes only.
bool is_uuid_dest(std::string_view s) {
    if (s.size() <= 5 || s.size() > 5 + 64 || s.substr(0, 5) != "uuid:") return false;
    for (char c : s.substr(5))
        if (!std::isxdigit(static_cast<unsigned char>(c)) && c != '-') return false;
    return true;
}

// A qube name as Qubes allows it (a letter, then letters, digits, _ . -).
bool is_qube_name(std::string_view s) {
    if (s.empty() || s.size() > 31 || !std::isalpha(static_cast<unsigned char>(s[0]))) return false;
    for (char c : s)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '.' && c != '-') return false;
    return true;
}

}  // namespace

// A local program on the daemon socket (qrexec-client, another daemon).
struct Daemon::Client {
    enum class State { Hello, Command, Running } state = State::Hello;
    std::shared_ptr<MessageConn> conn;
};

Daemon::Daemon(asio::io_context& io, DaemonConfig config)
    : io_(io), config_(std::move(config)), vchan_watch_(io), retry_timer_(io), give_up_timer_(io), hello_timer_(io),
      backoff_(std::chrono::milliseconds(1), std::chrono::milliseconds(100)), ports_(config_.domid), reaper_(io),
      dom0_(std::make_unique<LocalServiceRunner>(io, reaper_)) {
    if (config_.vchan_dir.empty()) config_.vchan_dir = vchan_socket_dir();
    if (config_.admin_socket.empty()) config_.admin_socket = default_admin_socket();
}

Daemon::~Daemon() { remove_socket(); }

void Daemon::log(const std::string& message) const { log_daemon_line(config_.name, message); }

// The agent link's lines (drops, failed attempts) are bounded: a qube that
// makes its link flap must not fill the host's log.
void Daemon::log_link(const std::string& message, const std::string& key) {
    if (!link_log_.allow(key)) return;
    if (uint64_t n = link_log_.take_suppressed(key)) log(std::to_string(n) + " similar lines suppressed");
    log(message);
}

void Daemon::start() {
    // The folder itself lies in host-owned folders (the qube owns only what
    // is inside): opening it by name is safe, and it is never resolved by
    // name again (agent_link.hpp).
    try {
        vchan_dirfd_ = base::open_trusted_dir(config_.vchan_dir);
    } catch (const std::exception& e) {
        throw std::runtime_error(std::string("cannot open the vchan folder: ") + e.what());
    }
    give_up_timer_.expires_after(config_.startup_timeout);
    give_up_timer_.async_wait([this](const asio::error_code& ec) {
        if (!ec) agent_gone_for_good("cannot connect to qrexec agent for " +
                                     std::to_string(config_.startup_timeout.count()) + " seconds" +
                                     (last_failure_.empty() ? "" : " (" + last_failure_ + ")"));
    });
    watch_vchan_folder();
    try_connect_agent();
    // Nothing else is served before the agent said hello.
    while (agent_state_ == AgentState::Starting && !io_.stopped()) io_.run_one();
    if (agent_state_ != AgentState::Connected) throw std::runtime_error(fatal_.empty() ? "stopped" : fatal_);
}

// A started qube's agent listens a few milliseconds after its daemon began
// trying: the folder is watched so that the attempt follows at once rather
// than after the growing pause. Only until the first hello, and an event
// costs one attempt only while none is being made; a link that dropped later
// is tried again after the pause alone (a qube making it flap gains nothing
// by making names in its folder).
void Daemon::watch_vchan_folder() {
    if (!vchan_watch_.is_open()) {
        int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (fd < 0) return;
        const std::string folder = "/proc/self/fd/" + std::to_string(vchan_dirfd_.get());
        if (::inotify_add_watch(fd, folder.c_str(), IN_CREATE | IN_MOVED_TO | IN_ONLYDIR) < 0) {
            ::close(fd);
            return;
        }
        vchan_watch_.assign(fd);
    }
    vchan_watch_.async_wait(asio::posix::stream_descriptor::wait_read, [this](const asio::error_code& ec) {
        if (ec) return;
        alignas(inotify_event) char events[4096];
        while (::read(vchan_watch_.native_handle(), events, sizeof events) > 0) {
        }
        if (agent_state_ == AgentState::Starting && !agent_) {
            // A socket is bound before it listens: should this attempt come
            // in between, the next follows after the shortest pause.
            retry_timer_.cancel();
            backoff_.reset();
            try_connect_agent();
        }
        if (agent_state_ == AgentState::Starting) return watch_vchan_folder();
        asio::error_code ignored;
        vchan_watch_.close(ignored);
    });
}

// One attempt: resolve and connect beneath the vchan folder, then wait for
// the agent's HELLO without blocking (hello_timeout).
void Daemon::try_connect_agent() {
    std::string why;
    std::string name = vchan_socket_path("", config_.domid, 0, kControlPort).substr(1);
    UniqueFd fd = connect_beneath(vchan_dirfd_.get(), name, &why);
    if (!fd) return agent_attempt_failed(why);
    agent_hello_pending_ = true;
    agent_ = MessageConn::create(io_, std::move(fd), {kMaxPayload, true, true});
    std::weak_ptr<MessageConn> attempt = agent_;
    agent_->start(
        [this, attempt](const Header& hdr, std::string_view payload, UniqueFd marker) {
            if (attempt.lock() != agent_) return;  // an older link: not the one spoken to now
            if (agent_hello_pending_)
                on_agent_hello(hdr, payload, static_cast<bool>(marker));
            else
                on_agent_message(hdr, payload);
        },
        [this, attempt](const std::string& reason) {
            auto conn = attempt.lock();
            if (conn != agent_) return;  // an older link
            if (agent_hello_pending_) return agent_attempt_failed("agent closed before HELLO: " + reason);
            // A length over any message's (Qubes' daemon exits on it too).
            if (conn->oversized()) return agent_violation(reason);
            on_agent_closed(reason);
        });
    hello_timer_.expires_after(config_.hello_timeout);
    hello_timer_.async_wait([this, attempt](const asio::error_code& ec) {
        auto conn = attempt.lock();
        if (ec || !conn || conn != agent_ || !agent_hello_pending_) return;
        conn->close("no HELLO from agent in time");
    });
}

void Daemon::on_agent_hello(const Header& h, std::string_view payload, bool marked) {
    // The agent speaks first; the daemon answers with its own version.
    uint32_t version = h.len == 4 ? get_u32(payload, 0) : 0;
    if (h.type != static_cast<uint32_t>(MsgType::Hello) || h.len != 4 || version < kMinProtocolVersion) {
        agent_->close(h.type != static_cast<uint32_t>(MsgType::Hello) || h.len != 4
                          ? "invalid HELLO from agent"
                          : "incompatible agent protocol version " + std::to_string(version));
        return;
    }
    agent_hello_pending_ = false;
    hello_timer_.cancel();
    // As Qubes: the version both speak, answered to the agent (2 to an
    // agent of protocol 2, which then sends TRIGGER_SERVICE).
    agent_version_ = std::min(version, kProtocolVersion);
    // An Aerie agent attaches a descriptor to its HELLO: it takes data
    // channels as descriptors. A Qubes agent meets its peers on the vchan
    // sockets of its folder.
    agent_takes_fds_ = marked;
    agent_->send(encode_hello(agent_version_));
    bool reconnected = agent_state_ == AgentState::Reconnecting;
    agent_state_ = AgentState::Connected;
    give_up_timer_.cancel();
    connected_at_ = std::chrono::steady_clock::now();
    last_failure_.clear();
    create_socket();
    if (reconnected) log_link("qrexec-agent has reconnected");
}

// Not connected (yet): try again after a wait that doubles each time. The
// give-up timer (armed at start or when the link dropped) ends the retries.
void Daemon::agent_attempt_failed(const std::string& why) {
    if (agent_) {
        auto conn = std::move(agent_);
        conn->close(why);
    }
    agent_hello_pending_ = false;
    hello_timer_.cancel();
    if (agent_state_ == AgentState::Failed) return;
    if (agent_state_ == AgentState::Reconnecting && why != last_failure_)
        log_link("cannot reconnect to qrexec-agent: " + why);
    last_failure_ = why;
    retry_timer_.expires_after(backoff_.next());
    retry_timer_.async_wait([this](const asio::error_code& ec) {
        // Not while an attempt is under way: a pause that ended just as the
        // vchan folder's watch started one leaves it alone.
        if (!ec && agent_state_ != AgentState::Failed && agent_state_ != AgentState::Connected && !agent_)
            try_connect_agent();
    });
}

void Daemon::agent_gone_for_good(const std::string& why) {
    if (agent_state_ == AgentState::Connected || agent_state_ == AgentState::Failed) return;
    bool starting = agent_state_ == AgentState::Starting;
    agent_state_ = AgentState::Failed;
    fatal_ = why;
    retry_timer_.cancel();
    hello_timer_.cancel();
    if (agent_) {
        auto conn = std::move(agent_);
        conn->close(why);
    }
    remove_socket();
    if (!starting) {
        log(why);
        if (on_fatal) on_fatal(why);
    }
}

void Daemon::on_agent_closed(const std::string& reason) {
    log_link("qrexec-agent has disconnected: " + reason);
    agent_.reset();
    // Calls in flight lose their notification: their clients see EOF now,
    // and their ports are free again (the agent that would have said
    // CONNECTION_TERMINATED is gone).
    for (auto& [port, watcher] : port_watchers_) {
        if (auto c = watcher.lock()) c->conn->close("agent restarted");
        ports_.forget(port);
    }
    port_watchers_.clear();
    drop_waiting();
    // As Qubes: requests still before the policy are dropped (their answers
    // are ignored), and no local client may connect them any more.
    undecided_.clear();
    // Wait for the agent to come back (a restarted agent listens again),
    // with a growing wait between attempts: a link that lived a while starts
    // over from a short wait, one that dropped at once keeps the longer one.
    agent_state_ = AgentState::Reconnecting;
    backoff_.set_cap(config_.reconnect_cap);
    if (std::chrono::steady_clock::now() - connected_at_ > std::chrono::seconds(10)) backoff_.reset();
    last_failure_ = "disconnected";
    give_up_timer_.expires_after(config_.startup_timeout);
    give_up_timer_.async_wait([this](const asio::error_code& ec) {
        if (!ec) agent_gone_for_good("qrexec-agent did not come back within " +
                                     std::to_string(config_.startup_timeout.count()) + " seconds" +
                                     (last_failure_.empty() ? "" : " (" + last_failure_ + ")"));
    });
    agent_attempt_failed("disconnected");
}

// --- the agent's requests ---------------------------------------------------

void Daemon::on_agent_message(const Header& h, std::string_view payload) {
    AgentRequest r = classify_agent_message(h, payload, agent_version_);
    if (auto* t = std::get_if<AgentTrigger>(&r)) return handle_trigger(t->request);
    if (auto* no = std::get_if<AgentRefusal>(&r)) {
        log_link("service request refused: " + no->why, "refused");
        agent_->send(encode_service_refused_field(no->ident_field));
        return;
    }
    if (auto* ct = std::get_if<AgentTerminated>(&r)) return release_port(ct->port, ct->domain);
    agent_violation(std::get<AgentViolation>(r).why);
}

// The agent broke the protocol: as Qubes' daemon, stop (aeried, watching
// this process, then stops the qube) rather than guess what it meant.
void Daemon::agent_violation(const std::string& why) {
    if (agent_state_ == AgentState::Failed) return;
    agent_state_ = AgentState::Failed;
    fatal_ = "protocol violation by the agent: " + base::log_safe(why);
    retry_timer_.cancel();
    hello_timer_.cancel();
    give_up_timer_.cancel();
    if (agent_) {
        auto conn = std::move(agent_);
        conn->close(fatal_);
    }
    remove_socket();
    log(fatal_);
    if (on_fatal) on_fatal(fatal_);
}

void Daemon::refuse(const std::string& ident, const std::string& why) {
    log("service request refused: " + why);
    if (agent_ && agent_->is_open()) agent_->send(encode_service_refused(ident));
}

void Daemon::handle_trigger(const ServiceRequest& request) {
    if (pending_calls_ >= config_.max_pending_calls) {
        refuse(request.ident, "too many pending requests");
        return;
    }
    ++pending_calls_;
    uint64_t id = next_pending_id_++;
    undecided_[id] = UndecidedCall{request.ident, false};
    PolicyQuestion q{config_.name, request.target, request.service_and_arg, request.requested_source};
    ask_policy(io_, config_.policy, q, [this, id, req = request](PolicyAnswer answer) {
        --pending_calls_;
        auto it = undecided_.find(id);
        if (it == undecided_.end()) return;  // the agent restarted meanwhile
        bool answered = it->second.answered;
        undecided_.erase(it);
        // A local client (an upstream qrexec-client -c) connected it already.
        if (answered) return log("request " + req.ident + " was connected by a local client before the policy answered");
        on_policy_answer(req, answer);
    });
}

void Daemon::on_policy_answer(const ServiceRequest& request, const PolicyAnswer& answer) {
    if (!answer.allowed()) {
        refuse(request.ident, "denied by policy: " + request.service_and_arg + " to " + request.target);
        return;
    }
    std::string target = answer.get("target");
    std::string service = answer.fields.count("service") ? answer.get("service") : request.service_and_arg;
    // As Qubes: a call without an argument is passed on with an empty one
    // ("SERVICE+"); the agent keeps whatever name it is given.
    if (service.find('+') == std::string::npos) service += '+';
    std::string source = answer.fields.count("policy_source") ? answer.get("policy_source") : config_.name;
    std::string user = answer.get("user").empty() ? "DEFAULT" : answer.get("user");
    if (target == "dom0" || target == "@adminvm") {
        // As Qubes: the last two tokens are the target the caller asked for
        // (as normalised by the policy), not dom0, so that a call about a
        // qube (qrexec-client-vm work admin.vm.property.Get+label, redirected
        // with target=dom0) reaches the Admin API with that qube as DEST.
        std::string requested = answer.get("requested_target");
        std::string requested_part;
        if (requested.empty() || requested == "@")
            requested_part = "keyword adminvm";
        else if (requested[0] == '@')
            requested_part = "keyword " + requested.substr(1);
        else
            requested_part = "name " + requested;
        run_in_dom0(request, "QUBESRPC " + service + " " + source + " " + requested_part);
        return;
    }
    std::string cmdline = user + ":QUBESRPC " + service + " " + source;
    if (target.rfind("@dispvm:", 0) == 0) {
        // The template by uuid when the answer has it ("@dispvm:uuid:UUID").
        std::string by_uuid = answer.get("target_uuid");
        std::string dest = target.substr(8);
        if (by_uuid.rfind("@dispvm:", 0) == 0 && is_uuid_dest(std::string_view(by_uuid).substr(8)))
            dest = by_uuid.substr(8);
        return call_dispvm(request, target.substr(8), dest, cmdline);
    }
    bool autostart = answer.get("autostart") == "True";
    std::string requested = answer.get("requested_target");
    bool to_remote = answer.fields.count("service") && !requested.empty() && requested[0] != '@' && requested != target;
    if (to_remote && autostart) return start_remote_then_relay(request, requested, target, cmdline);
    relay_or_connect(request, target, cmdline, autostart);
}

void Daemon::relay_or_connect(const ServiceRequest& request, const std::string& target, const std::string& cmdline,
                              bool autostart) {
    std::error_code ec;
    bool running = std::filesystem::exists(config_.socket_dir + "/qrexec." + target, ec);
    if (!running && autostart) return start_then_connect(request, target, cmdline);
    connect_to_qube(request, target, cmdline);
}

// A call to a RemoteVM (redirected to its relay) that the policy lets
// autostart: the admin daemon is asked to start the remote qube first (for a
// paired one it asks the other host, whose policy decides; a RemoteVM it
// cannot start answers an error, which is no reason to fail the call: the
// other host's own policy still decides its leg).
void Daemon::start_remote_then_relay(const ServiceRequest& request, const std::string& remote,
                                     const std::string& relay, const std::string& cmdline) {
    std::string path = config_.admin_internal_socket.empty() ? default_internal_socket()
                                                              : config_.admin_internal_socket;
    admin_call(io_, path, AdminCall{"internal.vm.Start", remote, ""},
               [this, request, remote, relay, cmdline](AdminResult r) {
                   if (!r.ok()) log("not starting the remote qube " + remote + ": " + r.error());
                   relay_or_connect(request, relay, cmdline, true);
               },
               config_.admin_timeout);
}

// A halted target the policy lets us start: the admin daemon starts it
// (internal.vm.Start, answered once its agent is up), then the call goes on.
void Daemon::start_then_connect(const ServiceRequest& request, const std::string& target,
                                const std::string& cmdline) {
    std::string path = config_.admin_internal_socket.empty() ? default_internal_socket()
                                                              : config_.admin_internal_socket;
    admin_call(io_, path, AdminCall{"internal.vm.Start", target, ""},
               [this, request, target, cmdline](AdminResult r) {
                   if (!r.ok()) return refuse(request.ident, "cannot start " + target + ": " + r.error());
                   connect_to_qube(request, target, cmdline);
               },
               config_.admin_timeout);
}

// A call to a new disposable, as Qubes' qrexec-policy-exec with
// qrexec-client -EWkd: admin.vm.CreateDisposable from the template (a name
// or "uuid:UUID"), admin.vm.Start of the new qube (a preloaded one is
// running already: success), then the call as to any qube, but the
// connection to the disposable's daemon stays open until the service ends;
// then (or on any failure after the creation) admin.vm.Kill. The admin
// daemon removes a killed disposable itself (auto_cleanup).
void Daemon::call_dispvm(const ServiceRequest& request, const std::string& dispvm_template,
                         const std::string& template_dest, const std::string& cmdline) {
    ++pending_calls_;  // until the call reaches the disposable's daemon
    admin_call(
        io_, config_.admin_socket, AdminCall{"admin.vm.CreateDisposable", template_dest, "uuid"},
        [this, request, dispvm_template, cmdline](AdminResult created) {
            if (!created.ok()) {
                --pending_calls_;
                return refuse(request.ident,
                              "cannot create a disposable from " + dispvm_template + ": " + created.error());
            }
            // "uuid:UUID" as asked; a bare name from a daemon that ignores the payload.
            const std::string& disp = created.body;
            if (!is_uuid_dest(disp) && (!is_qube_name(disp) || disp == "dom0")) {
                --pending_calls_;
                return refuse(request.ident, "invalid answer to admin.vm.CreateDisposable from " +
                                                 dispvm_template + " (nothing to kill)");
            }
            admin_call(
                io_, config_.admin_socket, AdminCall{"admin.vm.Start", disp, ""},
                [this, request, disp, cmdline](AdminResult started) {
                    --pending_calls_;
                    if (!started.ok()) {
                        refuse(request.ident, "cannot start the disposable " + disp + ": " + started.error());
                        return kill_disposable(disp);
                    }
                    connect_to_qube(request, disp, cmdline, [this, disp](bool) { kill_disposable(disp); });
                },
                config_.admin_timeout);
        },
        config_.admin_timeout);
}

// The call in a disposable is over (or failed): kill it; the answer only
// goes to the log.
void Daemon::kill_disposable(const std::string& dest) {
    admin_call(io_, config_.admin_socket, AdminCall{"admin.vm.Kill", dest, ""},
               [this, dest](AdminResult r) {
                   if (!r.ok()) log("admin.vm.Kill of the disposable " + dest + ": " + r.error());
               },
               config_.admin_timeout);
}

// Asks the target qube's daemon to run the service, handing it one end of a
// fresh channel; the other end goes to our agent with SERVICE_CONNECT.
void Daemon::connect_to_qube(const ServiceRequest& request, const std::string& target,
                             const std::string& cmdline, std::function<void(bool served)> on_over) {
    auto sock = std::make_shared<asio::local::stream_protocol::socket>(io_);
    asio::local::stream_protocol::endpoint endpoint;
    try {
        endpoint = asio::local::stream_protocol::endpoint(config_.socket_dir + "/qrexec." + target);
    } catch (const std::exception& e) {  // a path too long for a Unix socket
        refuse(request.ident, "target " + target + ": " + e.what());
        if (on_over) on_over(false);
        return;
    }
    sock->async_connect(endpoint, [this, sock, request, target, cmdline, on_over](const asio::error_code& ec) {
        if (ec) {
            refuse(request.ident, "target " + target + " is not running (" + ec.message() + ")");
            if (on_over) on_over(false);
            return;
        }
        bool keep_open = static_cast<bool>(on_over);
        auto ends = std::make_shared<std::pair<UniqueFd, UniqueFd>>(channel_pair());
        auto conn = MessageConn::create(io_, UniqueFd(sock->release()), {kMaxPayload, true});
        auto stage = std::make_shared<int>(0);  // 0: want HELLO, 1: want port, 2: done
        auto weak = std::weak_ptr<MessageConn>(conn);
        conn->start(
            [this, weak, stage, ends, request, cmdline, keep_open](const Header& h, std::string_view payload,
                                                                   UniqueFd ack) {
                auto c = weak.lock();
                if (!c) return;
                if (*stage == 0) {
                    if (h.type != static_cast<uint32_t>(MsgType::Hello) || h.len != 4) {
                        c->close("bad HELLO from target daemon");
                        return;
                    }
                    *stage = 1;
                    return;
                }
                if (*stage == 1 && h.type == static_cast<uint32_t>(MsgType::ExecCmdline) && h.len == 8) {
                    *stage = 2;
                    uint32_t domain = get_u32(payload, 0), port = get_u32(payload, 4);
                    // Without the descriptor that says it took our channel
                    // end (an upstream daemon), the agents meet on the vchan
                    // socket of that port, as Qubes'.
                    UniqueFd channel = ack ? std::move(ends->first) : UniqueFd();
                    if (agent_ && agent_->is_open())
                        agent_->send(encode_service_connect({domain, port, request.ident}), std::move(channel));
                    // A disposable's call: its daemon closes this connection
                    // when the service ends.
                    if (!keep_open) c->close("connected");
                    return;
                }
                c->close("unexpected reply from target daemon");
            },
            [this, stage, request, target, on_over](const std::string& reason) {
                if (*stage != 2) refuse(request.ident, "cannot start the service in " + target + ": " + reason);
                if (on_over) on_over(*stage == 2);
            });
        // The daemon greets first, but reads only after that: our HELLO and
        // the command can go at once, saving a round trip.
        conn->send(encode_hello(kClientProtocolVersion));
        conn->send(encode_exec(MsgType::ExecCmdline, ExecParams{config_.domid, 0, cmdline}),
                   agent_takes_fds_ ? std::move(ends->second) : UniqueFd());
    });
}

void Daemon::run_in_dom0(const ServiceRequest& request, const std::string& cmdline) {
    // This qube's own call: it holds the port, not dom0 (whose reserve is
    // for calls into the qube).
    std::string why;
    auto port = allocate_port(config_.domid, 0, &why);
    if (!port) {
        refuse(request.ident, why);
        return;
    }
    uint32_t p = *port;
    if (agent_takes_fds_) {
        auto [ours, theirs] = channel_pair();
        dom0_->start(cmdline, std::move(ours), [this, p](int) { release_port(p, 0); });
        if (agent_ && agent_->is_open())
            agent_->send(encode_service_connect({0, p, request.ident}), std::move(theirs));
        return;
    }
    // A Qubes agent serves the channel in its vchan folder; dom0's side
    // connects to it, as Qubes' does (within 5 s).
    if (agent_ && agent_->is_open()) agent_->send(encode_service_connect({0, p, request.ident}));
    connect_agent_channel(p, std::chrono::steady_clock::now() + std::chrono::seconds(5),
                          [this, cmdline, p](UniqueFd channel) {
                              if (!channel) {
                                  log_link("the agent did not serve the data channel of port " + std::to_string(p),
                                           "channel");
                                  return release_port(p, 0);
                              }
                              dom0_->start(cmdline, std::move(channel), [this, p](int) { release_port(p, 0); });
                          });
}

// vchan.<domid>.0.<port>.sock beneath the qube's vchan folder, resolved
// safely (agent_link.hpp), tried until it is there or the deadline passed.
void Daemon::connect_agent_channel(uint32_t port, std::chrono::steady_clock::time_point deadline,
                                   std::function<void(UniqueFd)> done) {
    std::string why;
    std::string name = vchan_socket_path("", config_.domid, 0, port).substr(1);
    UniqueFd fd = connect_beneath(vchan_dirfd_.get(), name, &why);
    if (fd || std::chrono::steady_clock::now() >= deadline) return done(std::move(fd));
    auto timer = std::make_shared<asio::steady_timer>(io_, std::chrono::milliseconds(10));
    timer->async_wait([this, timer, port, deadline, done = std::move(done)](const asio::error_code& ec) mutable {
        if (!ec) connect_agent_channel(port, deadline, std::move(done));
    });
}

// --- local clients ------------------------------------------------------------

// Only the host's root (qrexec-client, the other qubes' daemons, aeried)
// may connect: the socket is made 0600 before it listens, so there is no
// moment when anyone else could.
void Daemon::create_socket() {
    if (acceptor_) return;
    ::mkdir(config_.socket_dir.c_str(), 0755);
    socket_path_ = config_.socket_dir + "/qrexec." + std::to_string(config_.domid);
    ::unlink(socket_path_.c_str());
    acceptor_ = std::make_unique<asio::local::stream_protocol::acceptor>(io_);
    acceptor_->open(asio::local::stream_protocol());
    acceptor_->bind(asio::local::stream_protocol::endpoint(socket_path_));
    if (::chmod(socket_path_.c_str(), 0600) != 0)
        throw std::runtime_error("chmod " + socket_path_ + ": " + std::strerror(errno));
    acceptor_->listen(asio::socket_base::max_listen_connections);
    auto link = [&](const std::string& alias) {
        std::string path = config_.socket_dir + "/qrexec." + alias;
        ::unlink(path.c_str());
        if (::symlink(("qrexec." + std::to_string(config_.domid)).c_str(), path.c_str()) < 0)
            log("cannot create " + path);
    };
    link(config_.name);
    if (config_.uuid) link("uuid:" + *config_.uuid);
    accept_client();
}

void Daemon::remove_socket() {
    if (!acceptor_) return;
    asio::error_code ec;
    acceptor_->close(ec);
    acceptor_.reset();
    ::unlink(socket_path_.c_str());
    ::unlink((config_.socket_dir + "/qrexec." + config_.name).c_str());
    if (config_.uuid) ::unlink((config_.socket_dir + "/qrexec.uuid:" + *config_.uuid).c_str());
}

void Daemon::accept_client() {
    if (!acceptor_) return;
    acceptor_->async_accept([this](const asio::error_code& ec, asio::local::stream_protocol::socket s) {
        if (ec == asio::error::operation_aborted || !acceptor_) return;
        if (!ec && agent_state_ != AgentState::Connected) {
            // The agent is gone (reconnecting): closed before HELLO, so the
            // caller fails at once and can tell this from a refused command.
            asio::error_code ignored;
            s.close(ignored);
        } else if (!ec) {
            auto client = std::make_shared<Client>();
            client->conn = MessageConn::create(io_, UniqueFd(s.release()), {kMaxPayload, true});
            std::weak_ptr<Client> weak = client;
            client->conn->start(
                [this, weak](const Header& h, std::string_view payload, UniqueFd fd) {
                    if (auto c = weak.lock()) on_client_message(c, h, payload, std::move(fd));
                },
                [client](const std::string&) { /* keeps the client alive until closed */ });
            client->conn->send(encode_hello(kClientProtocolVersion));
        }
        accept_client();
    });
}

void Daemon::on_client_message(const std::shared_ptr<Client>& client, const Header& h,
                               std::string_view payload, UniqueFd fd) {
    auto& conn = client->conn;
    if (client->state == Client::State::Hello) {
        if (h.type != static_cast<uint32_t>(MsgType::Hello) || h.len != 4 ||
            get_u32(payload, 0) < kClientProtocolVersion) {
            conn->close("bad client HELLO");
            return;
        }
        client->state = Client::State::Command;
        return;
    }
    if (client->state == Client::State::Running) {
        conn->close("unexpected data from client");
        return;
    }
    auto type = static_cast<MsgType>(h.type);
    if (type != MsgType::ExecCmdline && type != MsgType::JustExec && type != MsgType::ServiceConnect) {
        conn->close("unexpected client message");
        return;
    }
    if (!agent_ || !agent_->is_open()) {
        conn->close("agent not connected");
        return;
    }
    client->state = Client::State::Running;
    // A Qubes agent cannot take an offered channel end: not taken, the
    // client serves the vchan of the port instead.
    if (!agent_takes_fds_) fd.reset();
    if (type == MsgType::ServiceConnect) return client_service_connect(client, payload, std::move(fd));
    Message m;
    try {
        m = decode_message(h, payload);
    } catch (const ProtocolError& e) {
        conn->close(e.what());
        return;
    }
    ExecParams params = std::get<ExecParams>(m);
    if (params.connect_port == 0) {
        // The caller's domain holds the port: the daemon socket is the host's
        // alone, so connect_domain is what a daemon or dom0 said, not a qube.
        uint32_t source = params.connect_domain;
        PortPool::Grant g = ports_.allocate(source, params.connect_domain);
        if (g.port) return dispatch_exec(client, type, std::move(params), std::move(fd), *g.port);
        auto& queue = waiting_[source];
        if (queue.size() >= kMaxWaitingPerSource || waiting_count_ >= kMaxWaiting) {
            if (queue.empty()) waiting_.erase(source);
            log_link("refusing a call: " + g.refusal + ", and too many of its calls wait", "ports");
            conn->close(g.refusal);
            return;
        }
        log_link("a call waits for a data port: " + g.refusal, "ports");
        queue.push_back(WaitingExec{client, type, std::move(params), std::move(fd)});
        ++waiting_count_;
        return;
    } else if (params.connect_port < kFirstDataPort || params.connect_port > kLastDataPort) {
        conn->close("invalid data port");
        return;
    }
    dispatch_exec(client, type, std::move(params), std::move(fd), 0);
}

// The answer to a client that left the data port to us: the same message
// type with our domain and the port. A client that offered a channel end
// (Aerie's) learns from the descriptor attached that its end goes to the
// agent (daemon_socket.hpp); an upstream client never offers one.
void Daemon::send_port(const std::shared_ptr<Client>& client, MsgType type, uint32_t port, bool channel_taken) {
    port_watchers_[port] = client;
    std::string reply = encode_header(type, 8);
    for (uint32_t v : {config_.domid, port})
        for (int i = 0; i < 4; ++i) reply.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    UniqueFd ack;
    if (channel_taken) ack = descriptor_marker();
    client->conn->send(reply, std::move(ack));
}

// SERVICE_CONNECT from a local client: the answer to one of our qube's
// requests that the policy has not decided here yet, as an upstream
// qrexec-client -c (or another qube's upstream daemon) sends it. Passed on
// to the agent as it came, with the data port filled in when it was 0.
void Daemon::client_service_connect(const std::shared_ptr<Client>& client, std::string_view payload, UniqueFd fd) {
    auto& conn = client->conn;
    if (payload.size() <= 8 || payload.size() > kMaxQrexecCmdLen || payload.back() != '\0') {
        conn->close("bad SERVICE_CONNECT");
        return;
    }
    std::string_view rest = payload.substr(8);
    std::string_view ident = rest.substr(0, rest.find('\0'));
    auto it = std::find_if(undecided_.begin(), undecided_.end(),
                           [&](const auto& e) { return !e.second.answered && e.second.ident == ident; });
    if (it == undecided_.end()) {
        log_link("SERVICE_CONNECT for " + base::log_safe(ident, 40) + ": not requested or already handled",
                 "service-connect");
        conn->close("not requested or already handled");
        return;
    }
    uint32_t domain = get_u32(payload, 0), port = get_u32(payload, 4);
    if (port != 0 && (port < kFirstDataPort || port > kLastDataPort)) {
        conn->close("invalid data port");
        return;
    }
    it->second.answered = true;
    if (port == 0) {
        std::string why;
        auto granted = allocate_port(domain, domain, &why);
        if (!granted) {
            conn->close(why);
            return;
        }
        port = *granted;
        send_port(client, MsgType::ServiceConnect, port, static_cast<bool>(fd));
    }
    std::string out = encode_header(MsgType::ServiceConnect, static_cast<uint32_t>(payload.size()));
    for (uint32_t v : {domain, port})
        for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
    out.append(rest);
    agent_->send(std::move(out), std::move(fd));
}

// port: the data port given to this call (0: the caller chose its own).
void Daemon::dispatch_exec(const std::shared_ptr<Client>& client, MsgType type, ExecParams params, UniqueFd fd,
                           uint32_t port) {
    if (port != 0) {
        params.connect_port = port;
        send_port(client, type, port, static_cast<bool>(fd));
    }
    if (params.cmdline.rfind("DEFAULT:", 0) == 0)
        params.cmdline = config_.default_user + params.cmdline.substr(7);
    agent_->send(encode_exec(type, params), std::move(fd));
}

// A port came free: the waiting source that holds the fewest ports goes
// first (dom0 among equals), so no caller waits behind one that hoards.
void Daemon::serve_waiting() {
    while (waiting_count_ > 0 && agent_ && agent_->is_open()) {
        std::vector<uint32_t> order;
        for (auto& [source, queue] : waiting_) order.push_back(source);
        std::stable_sort(order.begin(), order.end(),
                         [this](uint32_t x, uint32_t y) { return ports_.held_by(x) < ports_.held_by(y); });
        bool served = false;
        for (uint32_t source : order) {
            auto& queue = waiting_[source];
            while (!queue.empty()) {
                auto c = queue.front().client.lock();
                if (c && c->conn->is_open()) break;
                queue.pop_front();  // the caller gave up
                --waiting_count_;
            }
            if (queue.empty()) {
                waiting_.erase(source);
                continue;
            }
            PortPool::Grant g = ports_.allocate(source, queue.front().params.connect_domain);
            if (!g.port) continue;
            WaitingExec w = std::move(queue.front());
            queue.pop_front();
            --waiting_count_;
            if (queue.empty()) waiting_.erase(source);
            dispatch_exec(w.client.lock(), w.type, std::move(w.params), std::move(w.fd), *g.port);
            served = true;
            break;
        }
        if (!served) return;
    }
}

void Daemon::drop_waiting() {
    for (auto& [source, queue] : waiting_)
        for (auto& w : queue)
            if (auto c = w.client.lock()) c->conn->close("agent restarted");
    waiting_.clear();
    waiting_count_ = 0;
}

// --- data ports ---------------------------------------------------------------

std::optional<uint32_t> Daemon::allocate_port(uint32_t source, uint32_t remote_domain, std::string* why) {
    PortPool::Grant g = ports_.allocate(source, remote_domain);
    if (!g.port) {
        *why = g.refusal;
        log_link("refusing a call: " + g.refusal, "ports");
    }
    return g.port;
}

void Daemon::release_port(uint32_t port, uint32_t remote_domain) {
    if (port < kFirstDataPort || port > kLastDataPort) {
        log("invalid port in MSG_CONNECTION_TERMINATED: " + std::to_string(port));
        return;
    }
    if (!ports_.release(port, remote_domain)) return;  // not ours to release
    auto it = port_watchers_.find(port);
    if (it != port_watchers_.end()) {
        if (auto c = it->second.lock()) c->conn->close("connection terminated");
        port_watchers_.erase(it);
    }
    serve_waiting();
}

}  // namespace aerie::qrexec
