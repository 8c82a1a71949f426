#include "qrexec/daemon.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cctype>
#include <cstdio>
#include <filesystem>

#include "qrexec/admin_call.hpp"
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
    : io_(io), config_(std::move(config)), reaper_(io),
      dom0_(std::make_unique<LocalServiceRunner>(io, reaper_)) {
    if (config_.vchan_dir.empty()) config_.vchan_dir = vchan_socket_dir();
    if (config_.admin_socket.empty()) config_.admin_socket = default_admin_socket();
}

Daemon::~Daemon() { remove_socket(); }

void Daemon::log(const std::string& message) const { log_daemon_line(config_.name, message); }

void Daemon::start() {
    connect_agent();
    create_socket();
}

void Daemon::connect_agent() {
    std::string path = vchan_socket_path(config_.vchan_dir, config_.domid, 0, kControlPort);
    UniqueFd fd = vchan_connect(path, config_.startup_timeout);
    if (!fd) throw std::runtime_error("cannot connect to qrexec agent at " + path);

    // The agent speaks first; the daemon answers with its own version.
    char raw[kHeaderSize + 4];
    if (!read_all(fd.get(), raw, sizeof raw)) throw std::runtime_error("agent closed before HELLO");
    Header h = decode_header(std::string_view(raw, kHeaderSize), 4);
    if (h.type != static_cast<uint32_t>(MsgType::Hello) || h.len != 4)
        throw std::runtime_error("invalid HELLO from agent");
    uint32_t version = get_u32(std::string_view(raw, sizeof raw), kHeaderSize);
    agent_version_ = std::min(version, kProtocolVersion);
    if (agent_version_ < kMinProtocolVersion)
        throw std::runtime_error("incompatible agent protocol version " + std::to_string(version));
    std::string hello = encode_hello(kProtocolVersion);
    if (!write_all(fd.get(), hello.data(), hello.size())) throw std::runtime_error("cannot send HELLO");

    agent_ = MessageConn::create(io_, std::move(fd), {});
    agent_->start([this](const Header& hdr, std::string_view payload, UniqueFd) { on_agent_message(hdr, payload); },
                  [this](const std::string& reason) { on_agent_closed(reason); });
}

void Daemon::on_agent_closed(const std::string& reason) {
    log("qrexec-agent has disconnected: " + reason);
    agent_.reset();
    // Calls in flight lose their notification: their clients see EOF now.
    for (auto& [port, watcher] : port_watchers_)
        if (auto c = watcher.lock()) c->conn->close("agent restarted");
    port_watchers_.clear();
    remove_socket();
    // Wait for the agent to come back (a restarted agent listens again).
    asio::post(io_, [this] {
        try {
            connect_agent();
            create_socket();
            log("qrexec-agent has reconnected");
        } catch (const std::exception& e) {
            if (on_fatal) on_fatal(e.what());
        }
    });
}

// --- the agent's requests ---------------------------------------------------

void Daemon::on_agent_message(const Header& h, std::string_view payload) {
    Message m;
    try {
        m = decode_message(h, payload);
    } catch (const ProtocolError& e) {
        // The framing is intact (the length was within limits): skip it.
        log(std::string("ignoring malformed message from agent: ") + e.what());
        return;
    }
    if (auto* t = std::get_if<TriggerService>(&m)) {
        if ((t->version >= 3) != (agent_version_ >= 3)) {
            log("ignoring trigger of the wrong protocol version");
            return;
        }
        handle_trigger(*t);
        return;
    }
    if (auto* ct = std::get_if<ConnectionTerminated>(&m)) {
        release_port(ct->port, ct->domain);
        return;
    }
    log(std::string("ignoring unexpected ") + msg_type_name(h.type) + " from agent");
}

void Daemon::refuse(const std::string& ident, const std::string& why) {
    log("service request refused: " + why);
    if (agent_ && agent_->is_open()) agent_->send(encode_service_refused(ident));
}

void Daemon::handle_trigger(const TriggerService& trigger) {
    std::string why;
    auto request = sanitize_trigger(trigger, &why);
    if (!request) {
        log("dropping service request: " + why);
        return;
    }
    if (pending_calls_ >= config_.max_pending_calls) {
        refuse(request->ident, "too many pending requests");
        return;
    }
    ++pending_calls_;
    PolicyQuestion q{config_.name, request->target, request->service_and_arg, request->requested_source};
    ask_policy(io_, config_.policy, q, [this, req = *request](PolicyAnswer answer) {
        --pending_calls_;
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
        auto conn = MessageConn::create(io_, UniqueFd(sock->release()), {});
        auto stage = std::make_shared<int>(0);  // 0: want HELLO, 1: want port, 2: done
        auto weak = std::weak_ptr<MessageConn>(conn);
        conn->start(
            [this, weak, stage, ends, request, cmdline, keep_open](const Header& h, std::string_view payload,
                                                                   UniqueFd) {
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
                    if (agent_ && agent_->is_open())
                        agent_->send(encode_service_connect({domain, port, request.ident}),
                                     std::move(ends->first));
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
                   std::move(ends->second));
    });
}

void Daemon::run_in_dom0(const ServiceRequest& request, const std::string& cmdline) {
    auto port = allocate_port(0);
    if (!port) {
        refuse(request.ident, "no free data port");
        return;
    }
    auto [ours, theirs] = channel_pair();
    uint32_t p = *port;
    dom0_->start(cmdline, std::move(ours), [this, p](int) { release_port(p, 0); });
    if (agent_ && agent_->is_open()) agent_->send(encode_service_connect({0, p, request.ident}), std::move(theirs));
}

// --- local clients ------------------------------------------------------------

void Daemon::create_socket() {
    if (acceptor_) return;
    ::mkdir(config_.socket_dir.c_str(), 0755);
    socket_path_ = config_.socket_dir + "/qrexec." + std::to_string(config_.domid);
    ::unlink(socket_path_.c_str());
    acceptor_ = std::make_unique<asio::local::stream_protocol::acceptor>(
        io_, asio::local::stream_protocol::endpoint(socket_path_));
    ::chmod(socket_path_.c_str(), 0660);
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
        if (!ec) {
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
            get_u32(payload, 0) != kClientProtocolVersion) {
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
    if (type == MsgType::ServiceConnect) {
        Message m;
        try {
            m = decode_message(h, payload);
        } catch (const ProtocolError&) {
            conn->close("bad SERVICE_CONNECT");
            return;
        }
        agent_->send(encode_service_connect(std::get<ServiceConnect>(m)), std::move(fd));
        return;
    }
    Message m;
    try {
        m = decode_message(h, payload);
    } catch (const ProtocolError& e) {
        conn->close(e.what());
        return;
    }
    ExecParams params = std::get<ExecParams>(m);
    if (params.connect_port == 0) {
        auto port = allocate_port(params.connect_domain);
        if (!port) {
            conn->close("no free data port");
            return;
        }
        params.connect_port = *port;
        port_watchers_[*port] = client;
        std::string reply = encode_header(type, 8);
        for (uint32_t v : {config_.domid, *port})
            for (int i = 0; i < 4; ++i) reply.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
        conn->send(reply);
    } else if (params.connect_port < kFirstDataPort || params.connect_port > kLastDataPort) {
        conn->close("invalid data port");
        return;
    }
    if (params.cmdline.rfind("DEFAULT:", 0) == 0)
        params.cmdline = config_.default_user + params.cmdline.substr(7);
    agent_->send(encode_exec(type, params), std::move(fd));
}

// --- data ports ---------------------------------------------------------------

std::optional<uint32_t> Daemon::allocate_port(uint32_t remote_domain) {
    for (size_t i = 0; i < ports_.size(); ++i) {
        if (!ports_[i]) {
            ports_[i] = remote_domain;
            return static_cast<uint32_t>(kFirstDataPort + i);
        }
    }
    return std::nullopt;
}

void Daemon::release_port(uint32_t port, uint32_t remote_domain) {
    if (port < kFirstDataPort || port > kLastDataPort) {
        log("invalid port in MSG_CONNECTION_TERMINATED: " + std::to_string(port));
        return;
    }
    auto& slot = ports_[port - kFirstDataPort];
    if (!slot || *slot != remote_domain) return;  // not ours to release
    slot.reset();
    auto it = port_watchers_.find(port);
    if (it != port_watchers_.end()) {
        if (auto c = it->second.lock()) c->conn->close("connection terminated");
        port_watchers_.erase(it);
    }
}

}  // namespace aerie::qrexec
