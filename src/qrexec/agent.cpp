#include "qrexec/agent.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <thread>

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
    : io_(io), config_(std::move(config)), reaper_(io), runner_(io, reaper_, CmdlineUser::Required) {
    if (config_.vchan_dir.empty()) config_.vchan_dir = vchan_socket_dir();
}

void Agent::log(const std::string& message) const { log_agent_line(message); }

void Agent::start() {
    control_ = listen_at(io_, vchan_socket_path(config_.vchan_dir, config_.domid, 0, kControlPort));
    clients_ = listen_at(io_, config_.agent_socket);
    ::chmod(config_.agent_socket.c_str(), 0666);
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
                        for (auto& [ident, client] : waiting) client->close("daemon gone");
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
        auto it = waiting_.find(sc->ident);
        if (it == waiting_.end()) return;  // the caller gave up
        auto client = std::move(it->second);
        waiting_.erase(it);  // first: closing the client may look for it again
        client->send(encode_service_connect(*sc), std::move(fd));
        client->close_after_flush();
        return;
    }
    if (auto* refused = std::get_if<ServiceRefused>(&m)) {
        auto it = waiting_.find(refused->ident);
        if (it == waiting_.end()) return;
        auto client = std::move(it->second);
        waiting_.erase(it);
        client->send(encode_service_refused(refused->ident));
        client->close_after_flush();
        return;
    }
    log(std::string("ignoring ") + msg_type_name(h.type) + " from daemon");
}

void Agent::run_exec(MsgType type, ExecParams params, UniqueFd channel) {
    uint32_t domain = params.connect_domain, port = params.connect_port;
    auto terminated = [this, domain, port](int) {
        if (daemon_ && daemon_->is_open()) daemon_->send(encode_connection_terminated(domain, port));
    };
    bool just_exec = type == MsgType::JustExec;
    if (channel || just_exec) {
        runner_.start(params.cmdline, std::move(channel), terminated, just_exec);
        return;
    }
    // No channel handed over: connect through the vchan socket directory
    // (the caller is the channel's server), off the event loop.
    std::string path = vchan_socket_path(config_.vchan_dir, domain, config_.domid, port);
    std::thread([this, path, cmdline = params.cmdline, terminated] {
        UniqueFd fd = vchan_connect(path, std::chrono::seconds(10));
        auto raw = std::make_shared<UniqueFd>(std::move(fd));
        asio::post(io_, [this, raw, cmdline, terminated] {
            if (!*raw) {
                log("cannot connect the data channel");
                terminated(kExitProblem);
                return;
            }
            runner_.start(cmdline, std::move(*raw), terminated);
        });
    }).detach();
}

// --- local callers (qrexec-client-vm) -----------------------------------------

void Agent::accept_client() {
    clients_->async_accept([this](const asio::error_code& ec, asio::local::stream_protocol::socket s) {
        if (ec == asio::error::operation_aborted) return;
        if (!ec) {
            auto client = MessageConn::create(io_, UniqueFd(s.release()), {});
            std::weak_ptr<MessageConn> weak = client;
            client->start(
                [this, weak](const Header& h, std::string_view p, UniqueFd) {
                    if (auto c = weak.lock()) on_client_message(c, h, p);
                },
                [this, client](const std::string&) {
                    for (auto it = waiting_.begin(); it != waiting_.end(); ++it) {
                        if (it->second == client) {
                            waiting_.erase(it);
                            break;
                        }
                    }
                });
        }
        accept_client();
    });
}

void Agent::on_client_message(const std::shared_ptr<MessageConn>& client, const Header& h,
                              std::string_view payload) {
    Message m;
    try {
        m = decode_message(h, payload);
    } catch (const ProtocolError& e) {
        client->close(e.what());
        return;
    }
    auto* trigger = std::get_if<TriggerService>(&m);
    if (!trigger || trigger->version < 3) {
        client->close("expected MSG_TRIGGER_SERVICE3/4");
        return;
    }
    std::string ident = "SOCKET" + std::to_string(++next_ident_);
    if (!daemon_ || !daemon_->is_open() || daemon_version_ == 0) {
        client->send(encode_service_refused(ident));
        client->close_after_flush();
        return;
    }
    TriggerService forward = *trigger;
    forward.ident = ident;
    forward.version = daemon_version_ >= 4 ? 4 : 3;
    if (forward.version == 3 && trigger->source_domain && !trigger->source_domain->empty()) {
        client->send(encode_service_refused(ident));  // the daemon cannot take --source-qube
        client->close_after_flush();
        return;
    }
    try {
        daemon_->send(encode_trigger(forward));
    } catch (const ProtocolError& e) {
        client->close(e.what());
        return;
    }
    waiting_[ident] = client;
}

}  // namespace aerie::qrexec
