// qrexec-daemon: the admin side of one qube. It holds the control channel to
// the qube's agent, serves local clients on <socket-dir>/qrexec.<domid>, and
// decides each service call the qube makes (policy daemon, else the policy
// program), then joins the two ends of the call. A call to "@dispvm:TPL" gets
// a new disposable from the admin daemon (admin.vm.CreateDisposable, Start),
// runs in it, and the disposable is killed (admin.vm.Kill) when the call ends.
#pragma once

#include <asio.hpp>

#include <array>
#include <chrono>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "base/log_text.hpp"
#include "qrexec/agent_link.hpp"
#include "qrexec/child_reaper.hpp"
#include "qrexec/message_conn.hpp"
#include "qrexec/policy_client.hpp"
#include "qrexec/port_pool.hpp"
#include "qrexec/sanitize.hpp"

namespace aerie::qrexec {

struct DaemonConfig {
    uint32_t domid = 0;
    std::string name;
    std::string default_user = "user";
    std::optional<std::string> uuid;
    std::string socket_dir = "/var/run/qubes";
    std::string vchan_dir;  // empty: $VCHAN_SOCKET_DIR
    PolicyClientConfig policy;
    // How long the agent may take to say hello at start, and to come back
    // once its link dropped; then the daemon gives up (exits), and aeried,
    // which watches it, stops the qube.
    std::chrono::seconds startup_timeout{60};
    // Waits between reconnect attempts double up to this.
    std::chrono::milliseconds reconnect_cap{2000};
    // An agent that accepted must say hello within this.
    std::chrono::milliseconds hello_timeout{5000};
    size_t max_pending_calls = 256;
    // Where to ask for a halted target to be started when the policy says
    // autostart (internal.vm.Start); empty: $QUBESD_INTERNAL_SOCKET or the default.
    std::string admin_internal_socket;
    // The admin daemon's main socket (Admin API as dom0), for disposables:
    // admin.vm.CreateDisposable, admin.vm.Start, admin.vm.Kill. Empty:
    // $QUBESD_SOCKET or /var/run/qubesd.sock.
    std::string admin_socket;
    // How long an Admin API call may take before the call it serves fails.
    std::chrono::milliseconds admin_timeout{std::chrono::seconds(120)};
};

class LocalServiceRunner;  // runs dom0's side of calls that target dom0

class Daemon {
public:
    Daemon(asio::io_context& io, DaemonConfig config);
    ~Daemon();
    // Connects to the agent (waiting up to startup_timeout) and starts
    // listening. Throws std::runtime_error on failure.
    void start();
    // Called when the daemon cannot go on (agent gone for good).
    std::function<void(const std::string&)> on_fatal;

    // The link to the agent. While it is Reconnecting the daemon's socket
    // stays, and every caller is turned away at once (closed before HELLO)
    // instead of waiting for a socket that is not there.
    enum class AgentState { Starting, Connected, Reconnecting, Failed };

private:
    struct Client;
    void relay_or_connect(const ServiceRequest& request, const std::string& target, const std::string& cmdline,
                          bool autostart);
    void start_remote_then_relay(const ServiceRequest& request, const std::string& remote, const std::string& relay,
                                 const std::string& cmdline);
    void start_then_connect(const ServiceRequest& request, const std::string& target,
                            const std::string& cmdline);
    // dispvm_template names the template in messages; template_dest is
    // how the admin daemon is told (its name, or "uuid:UUID").
    void call_dispvm(const ServiceRequest& request, const std::string& dispvm_template,
                     const std::string& template_dest, const std::string& cmdline);
    void kill_disposable(const std::string& dest);

    void try_connect_agent();
    void on_agent_hello(const Header& h, std::string_view payload, bool marked);
    void watch_vchan_folder();
    void agent_attempt_failed(const std::string& why);
    void agent_gone_for_good(const std::string& why);
    void on_agent_message(const Header& h, std::string_view payload);
    void agent_violation(const std::string& why);
    void on_agent_closed(const std::string& reason);
    // Bounded: a qube making its link flap or its calls fail must not fill the log.
    void log_link(const std::string& message, const std::string& key = "link");
    void accept_client();
    void on_client_message(const std::shared_ptr<Client>& client, const Header& h,
                           std::string_view payload, UniqueFd fd);
    void handle_trigger(const ServiceRequest& request);
    void client_service_connect(const std::shared_ptr<Client>& client, std::string_view payload, UniqueFd fd);
    void send_port(const std::shared_ptr<Client>& client, MsgType type, uint32_t port, bool channel_taken);
    void on_policy_answer(const ServiceRequest& request, const PolicyAnswer& answer);
    // on_over (if set) keeps the connection to the target's daemon open
    // until the service ends (that daemon closes it) and runs once then, or
    // once the call failed (it is refused first); `served` tells which.
    void connect_to_qube(const ServiceRequest& request, const std::string& target,
                         const std::string& cmdline, std::function<void(bool served)> on_over = nullptr);
    void run_in_dom0(const ServiceRequest& request, const std::string& cmdline);
    void connect_agent_channel(uint32_t port, std::chrono::steady_clock::time_point deadline,
                               std::function<void(UniqueFd)> done);
    void refuse(const std::string& ident, const std::string& why);
    // A client's command that must wait for a data port (its source is at
    // its cap, or only dom0's reserve is left): served in turn as ports free.
    struct WaitingExec {
        std::weak_ptr<Client> client;
        MsgType type;
        ExecParams params;
        UniqueFd fd;
    };
    static constexpr size_t kMaxWaitingPerSource = 256;
    static constexpr size_t kMaxWaiting = 1024;
    void dispatch_exec(const std::shared_ptr<Client>& client, MsgType type, ExecParams params, UniqueFd fd,
                       uint32_t port);
    void serve_waiting();
    void drop_waiting();
    // source: whose call the port serves (PortPool); *why: a refusal.
    std::optional<uint32_t> allocate_port(uint32_t source, uint32_t remote_domain, std::string* why);
    void release_port(uint32_t port, uint32_t remote_domain);
    void create_socket();
    void remove_socket();
    void log(const std::string& message) const;

    asio::io_context& io_;
    DaemonConfig config_;
    std::shared_ptr<MessageConn> agent_;
    uint32_t agent_version_ = 0;
    bool agent_takes_fds_ = false;  // an Aerie agent (its HELLO came with a marker)
    AgentState agent_state_ = AgentState::Starting;
    bool agent_hello_pending_ = false;
    base::UniqueFd vchan_dirfd_;  // the qube's vchan folder, opened once
    // Readable when a name appears in that folder (an inotify descriptor):
    // the agent's socket is tried at once, not after the retry pause.
    asio::posix::stream_descriptor vchan_watch_;
    asio::steady_timer retry_timer_;
    asio::steady_timer give_up_timer_;
    asio::steady_timer hello_timer_;
    Backoff backoff_;
    std::chrono::steady_clock::time_point connected_at_{};
    std::string last_failure_;  // the last reason logged, to log each only once per outage
    std::string fatal_;
    base::LogRateLimiter link_log_{1.0 / 60, 20};
    std::unique_ptr<asio::local::stream_protocol::acceptor> acceptor_;
    std::string socket_path_;
    PortPool ports_;
    std::map<uint32_t, std::deque<WaitingExec>> waiting_;  // by source; no empty queues
    size_t waiting_count_ = 0;
    std::map<uint32_t, std::weak_ptr<Client>> port_watchers_;
    size_t pending_calls_ = 0;
    // Our qube's requests waiting for the policy, by the order they came:
    // a local client may answer one with SERVICE_CONNECT (Qubes' way), once.
    struct UndecidedCall {
        std::string ident;
        bool answered = false;
    };
    std::map<uint64_t, UndecidedCall> undecided_;
    uint64_t next_pending_id_ = 0;
    ChildReaper reaper_;
    std::unique_ptr<LocalServiceRunner> dom0_;
};

}  // namespace aerie::qrexec
