// qrexec-agent: the qrexec end inside a qube. It listens for its daemon on
// the control channel (vchan port 512), runs the services and commands the
// daemon sends, and forwards the service calls local programs make through
// qrexec-client-vm on the agent socket.
#pragma once

#include <asio.hpp>

#include <map>
#include <memory>
#include <string>

#include "qrexec/child_reaper.hpp"
#include "qrexec/local_service.hpp"
#include "qrexec/message_conn.hpp"
#include "qrexec/session_wait.hpp"

namespace aerie::qrexec {

inline constexpr const char* kDefaultAgentSocket = "/var/run/qubes/qrexec-agent";

struct AgentConfig {
    std::string agent_socket = kDefaultAgentSocket;
    std::string vchan_dir;  // empty: $VCHAN_SOCKET_DIR
    uint32_t domid = 0;     // this qube's domain number ($VCHAN_DOMAIN)
};

class Agent {
public:
    Agent(asio::io_context& io, AgentConfig config);
    void start();  // throws std::system_error if it cannot listen

private:
    void accept_daemon();
    void watch_sigusr1();
    void arm_sigusr1();
    void on_daemon_message(const Header& h, std::string_view payload, UniqueFd fd);
    void run_exec(MsgType type, ExecParams params, UniqueFd channel);
    void start_exec(MsgType type, ExecParams params, UniqueFd channel);
    // A qrexec-client-vm connection: its request, then (once the daemon
    // allowed it) open for the whole call.
    struct LocalCaller {
        std::shared_ptr<MessageConn> conn;
        bool requested = false;
        bool takes_fd = false;  // it marked its request (an Aerie client)
        bool gone = false;      // it closed before the daemon's answer
        bool connected = false;
        // Its end is reported to the daemon (MSG_CONNECTION_TERMINATED) when
        // the daemon left the channel to the socket directory, as Qubes'
        // daemons expect; a daemon that handed the channel over tracks it itself.
        bool report_end = false;
        uint32_t domain = 0, port = 0;
    };
    void accept_client();
    void on_client_message(const std::shared_ptr<LocalCaller>& caller, const Header& h,
                           std::string_view payload, UniqueFd marker);
    void on_client_closed(const std::shared_ptr<LocalCaller>& caller);
    void connect_caller(const ServiceConnect& sc, UniqueFd channel);
    // A Qubes qrexec-client-vm serves the channel in the socket directory:
    // join it to the channel the daemon handed over.
    void relay_for_caller(UniqueFd channel, uint32_t domain, uint32_t port);
    void log(const std::string& message) const;

    asio::io_context& io_;
    AgentConfig config_;
    ChildReaper reaper_;
    LocalServiceRunner runner_;
    SessionWait session_wait_;
    std::unique_ptr<asio::posix::stream_descriptor> sigusr1_;  // signalfd
    std::unique_ptr<asio::local::stream_protocol::acceptor> control_;
    std::unique_ptr<asio::local::stream_protocol::acceptor> clients_;
    std::shared_ptr<MessageConn> daemon_;
    uint32_t daemon_version_ = 0;
    std::map<std::string, std::shared_ptr<LocalCaller>> waiting_;  // ident -> qrexec-client-vm
    uint64_t next_ident_ = 0;
};

}  // namespace aerie::qrexec
