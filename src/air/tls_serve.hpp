// The relay's serve daemon (docs/air.md), one per relay qube: it takes the
// calls of `tls-proxy` on ~/.aerie-air/run/relay.sock (air/tls_local.hpp),
// keeps one TLS link per peer zone (air/tls_link.hpp) made through the
// host's uplink, and runs what the peers' links ask for: qrexec-client-vm
// for a stream, sshd -i for an SSH connection.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "air/tls_link.hpp"
#include "air/tls_local.hpp"
#include "air/tls_loop.hpp"
#include "air/uplink_client.hpp"

namespace aerie::air {

struct ServeOptions {
    std::filesystem::path home;     // ~/.aerie-air
    std::string uplink;             // the host's uplink socket
    std::filesystem::path qubesdb;  // the relay's QubesDB folder
};

class Serve {
public:
    Serve(EventLoop& loop, ServeOptions options);
    ~Serve();
    // Listens on relay.sock, watches children, registers with the uplink
    // (retrying while there is none). Throws AirError.
    void start();

private:
    struct Client;
    struct Child {
        uint64_t link;    // 0: forgotten (sshd)
        uint32_t stream;
    };

    void on_listener();
    void on_client(Client& c);
    void drop_client(Client& c);
    void route(Client& c, ReceivedCall call);
    void end_call(uint64_t client, const StreamResult& result);

    void register_uplink();
    void on_uplink();
    void on_accept(UplinkListener::Accepted accepted);

    TlsLink& new_link(const std::string& zone, TlsLink::Role role);
    TlsLink* link(uint64_t serial);
    void connect(TlsLink& link);
    LocalEnds run_incoming(TlsLink& link, uint32_t stream, const mux::OpenRequest& open);
    void on_link_closed(TlsLink& link, const std::string& reason);

    pid_t spawn_on_socket(const std::vector<std::string>& argv, int sock);
    void on_sigchld();

    EventLoop& loop_;
    ServeOptions options_;
    qrexec::UniqueFd listener_, sigchld_;
    EventLoop::Token listener_token_ = 0, sigchld_token_ = 0, uplink_token_ = 0;
    std::unique_ptr<UplinkListener> uplink_;
    std::string uplink_state_;  // the last thing logged about it, so a retry logs only changes

    uint64_t next_serial_ = 1;
    std::map<uint64_t, std::unique_ptr<TlsLink>> links_;
    std::map<std::string, uint64_t> current_;  // zone -> the link new calls take
    std::map<uint64_t, std::unique_ptr<Client>> clients_;
    std::map<pid_t, Child> children_;
};

// A line in the daemon's log (stderr), with the time.
void serve_log(const std::string& line);

}  // namespace aerie::air
