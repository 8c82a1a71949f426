// The Admin API socket server: accepts connections on a Unix socket, reads
// one request to the client's EOF (qubesd framing, wire.hpp), hands the
// parsed request to the dispatcher and writes its answer. An admin.Events
// answer keeps the connection open and streams every published event to it.
// One Asio event loop; nothing a client sends (garbage, oversized requests,
// stalls, disconnects, a stream it never reads) blocks the other clients.
#pragma once

#include <asio.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "admin/wire.hpp"

namespace aerie::admin {

// What the dispatcher answers to one request.
class EventHub;

struct ApiResponse {
    enum class Kind {
        Reply,   // write `bytes` (an encoded reply), then close
        Close,   // close without a reply (permission or protocol error)
        Events,  // write `bytes` ("1\0" + initial events), then stream events
        Later,   // `later` is called with a completion; the answer comes through it
    } kind = Kind::Close;
    std::string bytes;
    // Events: only events of this subject (a qube's name); empty for all.
    std::string event_subject;
    // Later: work that ends on the event loop (a qube starting); it calls the
    // completion once, with the real answer. The work goes on if the client
    // leaves meanwhile.
    using Completion = std::function<void(ApiResponse)>;
    std::function<void(Completion)> later;
    // Events: the hub the stream follows (nullptr: the server's; admin.vm.Stats
    // has one of its own).
    EventHub* hub = nullptr;
    // Events: which events the stream passes (besides event_subject); empty: all.
    std::function<bool(const std::string& encoded_event)> event_filter;

    static ApiResponse reply(std::string bytes) {
        ApiResponse r;
        r.kind = Kind::Reply;
        r.bytes = std::move(bytes);
        return r;
    }
    static ApiResponse close() { return {}; }
    static ApiResponse events(std::string initial) {
        ApiResponse r;
        r.kind = Kind::Events;
        r.bytes = std::move(initial);
        return r;
    }
    static ApiResponse deferred(std::function<void(Completion)> work) {
        ApiResponse r;
        r.kind = Kind::Later;
        r.later = std::move(work);
        return r;
    }
};

using Dispatcher = std::function<ApiResponse(const ApiRequest&)>;

// Fans events out to admin.Events streams. A subscriber that falls more than
// kMaxBacklog bytes behind is dropped (its connection closed).
class EventHub {
public:
    using Sink = std::function<bool(const std::string& encoded_event)>;  // false: drop me
    using Kwargs = std::vector<std::pair<std::string, std::string>>;
    // Parts of the daemon that react to events (disposables to clean up, preloads
    // to refill), as qubesd's event handlers do. Called before the streams get
    // the event; an observer must not publish from within (it posts its work).
    using Observer = std::function<void(std::string_view subject, std::string_view event, const Kwargs& kwargs)>;
    static constexpr size_t kMaxBacklog = 16 << 20;

    void observe(Observer observer) { observers_.push_back(std::move(observer)); }
    uint64_t subscribe(Sink sink);
    void unsubscribe(uint64_t id);
    // Encodes once (encode_event) and gives the bytes to every subscriber.
    void publish(std::string_view subject, std::string_view event,
                 const std::vector<std::pair<std::string, std::string>>& kwargs = {});
    size_t subscribers() const { return sinks_.size() - removed_; }

private:
    struct Subscriber {
        Sink sink;
        bool removed = false;  // unsubscribed while publishing; erased afterwards
    };
    void deliver(const std::string& encoded);
    void sweep();

    uint64_t next_id_ = 1;
    std::vector<Observer> observers_;
    std::map<uint64_t, Subscriber> sinks_;
    size_t removed_ = 0;
    bool publishing_ = false;
    std::deque<std::string> queued_;  // published from within a sink, delivered in order
};

struct ServerLimits {
    size_t max_connections = 4096;
    std::chrono::milliseconds read_timeout{60000};  // whole request, from connect to EOF
};

class ApiServer {
public:
    // Binds `socket_path` (an old socket file there is replaced) with `mode`.
    // SOURCE is trusted on these sockets, as in qubesd: only root (and the
    // qrexec daemon, which supplies the calling qube) can connect.
    ApiServer(asio::io_context& io, std::filesystem::path socket_path, Dispatcher dispatcher,
              EventHub* events, unsigned mode = 0600, ServerLimits limits = {});
    ~ApiServer();  // also closes the open connections (no dispatcher or hub use after it)
    ApiServer(const ApiServer&) = delete;
    ApiServer& operator=(const ApiServer&) = delete;

    void close();  // stops accepting and removes the socket file; open connections go on
    size_t open_connections() const;

private:
    struct Impl;
    struct Connection;
    std::shared_ptr<Impl> impl_;
};

}  // namespace aerie::admin
