#include "qrexec/agent.hpp"

#include <signal.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <thread>

#include "qrexec/channel_relay.hpp"
#include "qrexec/log_lines.hpp"
#include "qrexec/vchan.hpp"

namespace aerie::qrexec {

namespace {

// Listens on a Unix socket path (a stale file is replaced).
std::unique_ptr<asio::local::stream_protocol::acceptor> listen_at(asio::io_context& io,
                                                                  const std::string& path) {
    std::error_code ec;
    std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
    UniqueFd fd = vchan_listen(path);
    return std::make_unique<asio::local::stream_protocol::acceptor>(io, asio::local::stream_protocol(),
                                                                    fd.release());
}

}  // namespace

Agent::Agent(asio::io_context& io, AgentConfig config)
    : io_(io), config_(std::move(config)), reaper_(io), runner_(io, reaper_, CmdlineUser::Required),
      session_wait_(reaper_) {
    if (config_.vchan_dir.empty()) config_.vchan_dir = vchan_socket_dir();
}

void Agent::log(const std::string& message) const { log_agent_line(message); }

// SIGUSR1 from a service (QREXEC_AGENT_PID): a signalfd tells who sent it.
// Threads started later inherit the blocked mask; services get it cleared.
void Agent::watch_sigusr1() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    ::pthread_sigmask(SIG_BLOCK, &set, nullptr);
    int fd = ::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (fd < 0) {
        log("signalfd: SIGUSR1 from services is ignored");
        return;
    }
    sigusr1_ = std::make_unique<asio::posix::stream_descriptor>(io_, fd);
    arm_sigusr1();
}

void Agent::arm_sigusr1() {
    sigusr1_->async_wait(asio::posix::stream_descriptor::wait_read, [this](const asio::error_code& ec) {
        if (ec) return;
        signalfd_siginfo info;
        while (::read(sigusr1_->native_handle(), &info, sizeof info) == sizeof info)
            runner_.use_stdin_socket(static_cast<pid_t>(info.ssi_pid));
        arm_sigusr1();
    });
}

void Agent::start() {
    control_ = listen_at(io_, vchan_socket_path(config_.vchan_dir, config_.domid, 0, kControlPort));
    clients_ = listen_at(io_, config_.agent_socket);
    ::chmod(config_.agent_socket.c_str(), 0666);
    runner_.announce_agent_pid = true;
    watch_sigusr1();
    accept_daemon();
    accept_client();
}

// --- the daemon -------------------------------------------------------------

void Agent::accept_daemon() {
    control_->async_accept([this](const asio::error_code& ec, asio::local::stream_protocol::socket s) {
        if (ec == asio::error::operation_aborted) return;
        if (!ec) {
            if (daemon_ && daemon_->is_open()) {
                log("refusing a second daemon connection");
            } else {
                daemon_version_ = 0;
                daemon_ = MessageConn::create(io_, UniqueFd(s.release()), {kMaxPayload, true});
                daemon_->start(
                    [this](const Header& h, std::string_view p, UniqueFd fd) {
                        on_daemon_message(h, p, std::move(fd));
                    },
                    [this](const std::string& reason) {
                        log("daemon disconnected: " + reason);
                        // Calls waiting for a decision will never get one.
                        auto waiting = std::move(waiting_);
                        waiting_.clear();
                        for (auto& [ident, caller] : waiting) caller->conn->close("daemon gone");
                    });
                daemon_->send(encode_hello(kProtocolVersion), descriptor_marker());
            }
        }
        accept_daemon();
    });
}

void Agent::on_daemon_message(const Header& h, std::string_view payload, UniqueFd fd) {
    Message m;
    try {
        m = decode_message(h, payload);
    } catch (const ProtocolError& e) {
        log(std::string("bad message from daemon: ") + e.what());
        daemon_->close(e.what());
        return;
    }
    if (daemon_version_ == 0) {
        auto* hello = std::get_if<Hello>(&m);
        if (!hello || hello->version < kMinProtocolVersion) {
            daemon_->close("expected HELLO");
            return;
        }
        daemon_version_ = std::min(hello->version, kProtocolVersion);
        return;
    }
    auto type = static_cast<MsgType>(h.type);
    if (type == MsgType::ExecCmdline || type == MsgType::JustExec) {
        run_exec(type, std::get<ExecParams>(m), std::move(fd));
        return;
    }
    if (auto* sc = std::get_if<ServiceConnect>(&m)) {
        connect_caller(*sc, std::move(fd));
        return;
    }
    if (auto* refused = std::get_if<ServiceRefused>(&m)) {
        // As Qubes' agent: the caller's connection is closed with no answer.
        auto it = waiting_.find(refused->ident);
        if (it == waiting_.end()) return;
        auto caller = std::move(it->second);
        waiting_.erase(it);
        caller->conn->close("refused");
        return;
    }
    log(std::string("ignoring ") + msg_type_name(h.type) + " from daemon");
}

void Agent::run_exec(MsgType type, ExecParams params, UniqueFd channel) {
    // A service that waits for the session starts (and connects its data
    // channel) only after qubes.WaitForSession.
    auto held = std::make_shared<UniqueFd>(std::move(channel));
    std::string cmdline = params.cmdline;
    bool deferred = session_wait_.defer(cmdline, runner_.default_user, [this, type, params, held]() mutable {
        start_exec(type, std::move(params), std::move(*held));
    });
    if (!deferred) start_exec(type, std::move(params), std::move(*held));
}

void Agent::start_exec(MsgType type, ExecParams params, UniqueFd channel) {
    uint32_t domain = params.connect_domain, port = params.connect_port;
    auto terminated = [this, domain, port](int) {
        if (daemon_ && daemon_->is_open()) daemon_->send(encode_connection_terminated(domain, port));
    };
    bool just_exec = type == MsgType::JustExec;
    if (channel) {
        runner_.start(params.cmdline, std::move(channel), terminated, just_exec);
        return;
    }
    // No channel handed over: connect through the vchan socket directory
    // (the caller is the channel's server), off the event loop.
    std::string path = vchan_socket_path(config_.vchan_dir, domain, config_.domid, port);
    std::thread([this, path, cmdline = params.cmdline, terminated, just_exec] {
        UniqueFd fd = vchan_connect(path, std::chrono::seconds(10));
        auto raw = std::make_shared<UniqueFd>(std::move(fd));
        asio::post(io_, [this, raw, cmdline, terminated, just_exec] {
            if (!*raw) {
                log("cannot connect the data channel");
                terminated(kExitProblem);
                return;
            }
            runner_.start(cmdline, std::move(*raw), terminated, just_exec);
        });
    }).detach();
}

// --- local callers (qrexec-client-vm) -----------------------------------------
//
// The exchange is Qubes': the caller sends MSG_TRIGGER_SERVICE4 (ident
// "SOCKET"), the agent forwards it with its own ident and, once the daemon
// allowed the call, answers the bare struct exec_params <domain, port> (8
// bytes); a refusal closes the connection with no answer. The caller keeps
// the connection open for the whole call; its end is the call's end
// (MSG_CONNECTION_TERMINATED to the daemon). A caller that marked its request
// with a descriptor gets the data channel attached to the answer when the
// daemon handed one over (docs/qrexec-wire.md).

namespace {
constexpr size_t kMaxWaitingCallers = 1024;
constexpr size_t kMaxTriggerPayload = 2 * kDomainNameLen + kIdentLen + kMaxServiceNameLen + 1;
}  // namespace

void Agent::accept_client() {
    clients_->async_accept([this](const asio::error_code& ec, asio::local::stream_protocol::socket s) {
        if (ec == asio::error::operation_aborted) return;
        if (!ec && waiting_.size() < kMaxWaitingCallers) {
            auto caller = std::make_shared<LocalCaller>();
            caller->conn = MessageConn::create(io_, UniqueFd(s.release()), {kMaxTriggerPayload, true});
            std::weak_ptr<LocalCaller> weak = caller;
            caller->conn->start(
                [this, weak](const Header& h, std::string_view p, UniqueFd marker) {
                    if (auto c = weak.lock()) on_client_message(c, h, p, std::move(marker));
                },
                [this, caller](const std::string&) { on_client_closed(caller); });
        }
        accept_client();
    });
}

void Agent::on_client_closed(const std::shared_ptr<LocalCaller>& caller) {
    if (caller->connected) {
        caller->connected = false;
        if (caller->report_end && daemon_ && daemon_->is_open())
            daemon_->send(encode_connection_terminated(caller->domain, caller->port));
        return;
    }
    // Still waiting for the daemon: its answer ends the call (see connect_caller).
    caller->gone = true;
}

void Agent::on_client_message(const std::shared_ptr<LocalCaller>& caller, const Header& h,
                              std::string_view payload, UniqueFd marker) {
    auto& client = caller->conn;
    if (caller->requested) {
        // Nothing is expected after the request: its caller is done.
        client->close("unexpected data after the request");
        return;
    }
    Message m;
    try {
        m = decode_message(h, payload);
    } catch (const ProtocolError& e) {
        client->close(e.what());
        return;
    }
    auto* trigger = std::get_if<TriggerService>(&m);
    if (!trigger || trigger->version != 4) {
        log("invalid request from qrexec-client-vm (expected MSG_TRIGGER_SERVICE4)");
        client->close("expected MSG_TRIGGER_SERVICE4");
        return;
    }
    caller->requested = true;
    caller->takes_fd = static_cast<bool>(marker);
    marker.reset();
    std::string ident = "SOCKET" + std::to_string(++next_ident_);
    if (!daemon_ || !daemon_->is_open() || daemon_version_ == 0) {
        client->close("no daemon");
        return;
    }
    TriggerService forward = *trigger;
    forward.ident = ident;
    forward.version = daemon_version_ >= 4 ? 4 : 3;
    if (forward.version == 3 && trigger->source_domain && !trigger->source_domain->empty()) {
        client->close("the daemon cannot take --source-qube");
        return;
    }
    try {
        daemon_->send(encode_trigger(forward));
    } catch (const ProtocolError& e) {
        client->close(e.what());
        return;
    }
    waiting_[ident] = caller;
}

void Agent::connect_caller(const ServiceConnect& sc, UniqueFd channel) {
    auto it = waiting_.find(sc.ident);
    if (it == waiting_.end()) {
        log("MSG_SERVICE_CONNECT with an unknown ident, ignored");
        return;
    }
    auto caller = std::move(it->second);
    waiting_.erase(it);
    if (caller->gone || !caller->conn->is_open()) {
        // The caller left before the answer: the call is over at once
        // (a handed-over channel ends by being closed here).
        if (!channel && daemon_ && daemon_->is_open()) daemon_->send(encode_connection_terminated(sc.connect_domain, sc.connect_port));
        return;
    }
    caller->connected = true;
    caller->report_end = !channel;
    caller->domain = sc.connect_domain;
    caller->port = sc.connect_port;
    std::string params = encode_connect_params(sc.connect_domain, sc.connect_port);
    if (channel && caller->takes_fd) {
        caller->conn->send(std::move(params), std::move(channel));
        return;
    }
    caller->conn->send(std::move(params));
    if (channel) relay_for_caller(std::move(channel), sc.connect_domain, sc.connect_port);
}

void Agent::relay_for_caller(UniqueFd channel, uint32_t domain, uint32_t port) {
    std::string path = vchan_socket_path(config_.vchan_dir, config_.domid, domain, port);
    auto ours = std::make_shared<UniqueFd>(std::move(channel));
    std::thread([this, path, ours] {
        auto theirs = std::make_shared<UniqueFd>(vchan_connect(path, std::chrono::seconds(10)));
        asio::post(io_, [this, ours, theirs] {
            if (!*theirs) {
                log("cannot connect to the caller's data channel");
                return;  // closing ours ends the call for the service side
            }
            start_channel_relay(io_, std::move(*ours), std::move(*theirs));
        });
    }).detach();
}

}  // namespace aerie::qrexec
