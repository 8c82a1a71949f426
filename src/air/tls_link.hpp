// One TLS connection between two relays and the streams multiplexed on it
// (docs/air.md). Each stream joins a pair of local descriptors (read: sent to
// the peer as DATA; written: the peer's DATA) to a stream on the link, with
// a 1 MiB window each way, so a slow reader holds back only its own stream.
//
// A link is made before its socket exists (the uplink's connect runs on a
// helper thread); streams opened meanwhile wait for the handshake. A lost or
// refused link fails every stream on it with the reason.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "air/mux.hpp"
#include "air/tls_context.hpp"
#include "air/tls_loop.hpp"
#include "air/tls_wire.hpp"
#include "qrexec/byte_buffer.hpp"
#include "qrexec/unique_fd.hpp"

namespace aerie::air {

struct LocalEnds {
    qrexec::UniqueFd input;   // read, sent to the peer (may be the same socket as output)
    qrexec::UniqueFd output;  // the peer's data is written here
};

// How a stream this side opened ended: the remote service's exit code, or
// why it failed.
using StreamResult = std::variant<int, std::string>;

class TlsLink {
public:
    enum class Role { Connector, Acceptor };  // who opened the connection (odd stream ids)

    struct Hooks {
        // The peer opened a stream: the local ends to join it to, or throw
        // AirError (its text goes back in a RESET).
        std::function<LocalEnds(TlsLink& link, uint32_t stream, const mux::OpenRequest& open)> on_open;
        // The link is gone (after every stream was failed); `reason` says why.
        std::function<void(TlsLink& link, const std::string& reason)> on_closed;
        // The handshake is done.
        std::function<void(TlsLink& link)> on_ready;
    };

    TlsLink(EventLoop& loop, uint64_t serial, std::string zone, Role role, std::filesystem::path home, Hooks hooks);
    ~TlsLink();
    TlsLink(const TlsLink&) = delete;
    TlsLink& operator=(const TlsLink&) = delete;

    uint64_t serial() const { return serial_; }
    const std::string& zone() const { return zone_; }
    Role role() const { return role_; }
    bool closed() const { return state_ == State::Closed; }
    bool ready() const { return state_ == State::Ready; }
    size_t stream_count() const { return streams_.size(); }

    // The connected socket (for a connector, once the uplink made it):
    // starts the handshake. Fails the link on a missing key or pin.
    void attach(qrexec::UniqueFd sock);
    // Gives up (the uplink could not connect, say).
    void fail(const std::string& reason);

    // Opens a stream to the peer; `on_end` gets its result. Returns its id.
    uint32_t open_stream(const mux::OpenRequest& open, LocalEnds ends, std::function<void(const StreamResult&)> on_end);
    // Ends a stream from this side (its caller went away): RESET to the peer.
    void reset_stream(uint32_t stream, const std::string& reason);
    // The local process of a stream the peer opened ended with `code`: EXIT
    // goes to the peer once its output was read to the end.
    void local_exited(uint32_t stream, int code);

    // The names the peer's certificate carries (qube:NAME URIs) that it also
    // exports (peers/<zone>/names): who may call from there.
    const std::vector<std::string>& allowed_sources() const { return allowed_sources_; }

private:
    enum class State { Connecting, Handshake, Ready, Closed };
    struct Stream;

    void on_socket(uint32_t events);
    void handshake();
    void read_tls();
    void flush();
    void heartbeat();
    std::string io_failure(const std::string& fallback);
    void on_frame(const mux::Event& e);
    void on_open_frame(uint32_t id, const mux::OpenRequest& open);
    void on_data(Stream& s, std::string_view bytes);
    void protocol_error(const std::string& what);

    Stream& add_stream(uint32_t id, LocalEnds ends, bool ours);
    void on_input(Stream& s);
    void on_output(Stream& s);
    void write_out(Stream& s, std::string_view bytes);
    void close_output(Stream& s);
    void credit(Stream& s, size_t bytes);
    void input_ended(Stream& s);
    void maybe_finish(Stream& s);
    void finish(Stream& s, std::optional<StreamResult> result);
    void update_interest(Stream& s);
    void update_all_inputs();
    bool can_send() const;
    void send_control(const std::string& frame);
    Stream* find(uint32_t id);

    EventLoop& loop_;
    uint64_t serial_;
    std::string zone_;
    Role role_;
    std::filesystem::path home_;
    Hooks hooks_;
    State state_ = State::Connecting;

    qrexec::UniqueFd sock_;
    EventLoop::Token sock_token_ = 0;
    EventLoop::Token handshake_timer_ = 0;
    EventLoop::Token heartbeat_timer_ = 0;
    std::chrono::steady_clock::time_point last_heard_;  // the peer's last bytes
    TlsWire wire_;  // outlives ssl_, whose BIO uses it
    SslCtxPtr ctx_;
    SslPtr ssl_;
    std::string pinned_der_;
    std::vector<std::string> allowed_sources_;

    qrexec::ByteBuffer out_;        // frames not yet taken by TLS
    bool out_full_ = false;         // above the high mark: local inputs paused
    std::unique_ptr<char[]> in_;    // decrypted bytes, fed to the decoder
    mux::Decoder decoder_;
    uint32_t next_id_;
    uint32_t last_peer_id_ = 0;
    std::map<uint32_t, std::unique_ptr<Stream>> streams_;
    std::shared_ptr<int> alive_ = std::make_shared<int>(0);  // for tasks posted to the loop
};

}  // namespace aerie::air
