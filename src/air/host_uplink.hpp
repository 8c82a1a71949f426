// The host's side of the Qubes Air uplink (docs/air.md), in aeried: a Unix
// socket per running qube (<runtime>/<qube>/air/uplink.sock, seen inside at
// /run/aerie-air/uplink.sock) that answers `connect ZONE` with a TCP
// connection to the zone's host and registers `listen`ers; and, with
// --air-listen, the TCP acceptor where peer hosts connect, whose
// connections are handed to the listener of the relay for the zone their
// preamble names (starting the relay and its serve daemon when needed).
//
// A qube is hostile: everything is asynchronous on aeried's loop, every
// read is bounded in size and time, and every refusal is answered
// `error REASON` (uplink) or closed (TCP), and logged.
#pragma once

#include <asio.hpp>

#include <chrono>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "air/uplink.hpp"

namespace aerie::admin {
class EventHub;
class Lifecycle;
class Model;
class QubesDb;
class Registry;
struct Qube;
}  // namespace aerie::admin

namespace aerie::air {

// "host:port", "[v6]:port" or "name:port" (port 1..65535); nullopt otherwise.
struct HostPort {
    std::string host;
    std::string port;
};
std::optional<HostPort> parse_host_port(std::string_view text);

struct HostUplinkConfig {
    std::filesystem::path bin_dir;            // qrexec-client, to start a relay's serve daemon
    std::filesystem::path qrexec_socket_dir;  // its --socket-dir
    std::filesystem::path log_dir;            // <relay>.air-serve.log: what that start said
    std::string listen;                       // --air-listen ADDR:PORT; empty: no peer hosts
};

class HostUplink {
public:
    // Adds its launch hook to `lifecycle`: a qube that starts gets its socket.
    HostUplink(asio::io_context& io, admin::Registry& registry, admin::EventHub& events, admin::Lifecycle& lifecycle,
               HostUplinkConfig config);
    ~HostUplink();
    HostUplink(const HostUplink&) = delete;
    HostUplink& operator=(const HostUplink&) = delete;

    // At daemon start, after adoption: sockets of the qubes that run; the
    // TCP acceptor (throws when --air-listen is malformed or cannot bind).
    void sync();

    static constexpr size_t kMaxRequests = 16;  // open uplink connections per qube
    static constexpr size_t kMaxIncoming = 64;  // peer connections not handed over yet
    static constexpr auto kRequestTimeout = std::chrono::seconds(5);
    static constexpr auto kConnectTimeout = std::chrono::seconds(5);
    static constexpr auto kPreambleTimeout = std::chrono::seconds(5);
    static constexpr auto kListenerTimeout = std::chrono::seconds(10);

private:
    struct Endpoint;
    struct Request;
    struct Incoming;
    using EndpointPtr = std::shared_ptr<Endpoint>;
    using RequestPtr = std::shared_ptr<Request>;
    using IncomingPtr = std::shared_ptr<Incoming>;

    // The relay side: uplink.sock of each running qube.
    void open_endpoint(const std::string& qube, const std::filesystem::path& air_dir);
    void close_endpoint(const std::string& qube);
    void accept_request(const EndpointPtr& ep);
    void read_request(const EndpointPtr& ep, const RequestPtr& req);
    void refuse(const EndpointPtr& ep, const RequestPtr& req, const std::string& reason);
    void connect_zone(const EndpointPtr& ep, const RequestPtr& req, const std::string& zone);
    void register_listener(const EndpointPtr& ep, const RequestPtr& req);
    void drop_listener(const EndpointPtr& ep, const std::string& why);

    // The peer side: connections from other hosts.
    void open_acceptor();
    void accept_incoming();
    void read_preamble(const IncomingPtr& in);
    void route(const IncomingPtr& in);
    void deliver(const std::string& relay);
    void hand_over(const EndpointPtr& ep, const IncomingPtr& in);
    void give_up(const IncomingPtr& in, const std::string& why);
    void spawn_serve(const std::string& relay);

    // The RemoteVMs whose feature air-zone is `zone`.
    std::vector<const admin::Qube*> remotes_in(std::string_view zone) const;
    void log(const std::string& line) const;

    asio::io_context& io_;
    admin::Registry& registry_;
    admin::Model& model_;
    admin::Lifecycle& lifecycle_;
    HostUplinkConfig config_;
    uint64_t next_id_ = 1;
    std::map<std::string, EndpointPtr> endpoints_;  // running qube -> its socket
    std::unique_ptr<asio::ip::tcp::acceptor> acceptor_;
    asio::steady_timer accept_pause_;  // after an accept error (no descriptors left, ...)
    std::shared_ptr<size_t> incoming_ = std::make_shared<size_t>(0);  // peer connections open
    std::map<std::string, std::deque<IncomingPtr>> waiting_;         // relay -> connections for it
    std::set<std::string> starting_;                                  // relays we are starting
    std::map<std::string, std::chrono::steady_clock::time_point> spawned_;  // serve daemon started at
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace aerie::air
