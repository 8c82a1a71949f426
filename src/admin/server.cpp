#include "admin/server.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <system_error>
#include <unordered_map>

#include "base/limited_log.hpp"

namespace aerie::admin {

// --- EventHub -----------------------------------------------------------------

uint64_t EventHub::subscribe(Sink sink) {
    uint64_t id = next_id_++;
    sinks_.emplace(id, Subscriber{std::move(sink)});
    return id;
}

void EventHub::unsubscribe(uint64_t id) {
    auto it = sinks_.find(id);
    if (it == sinks_.end() || it->second.removed) return;
    // While publishing, the sink may be the one running: only mark it.
    if (publishing_) {
        it->second.removed = true;
        ++removed_;
    } else {
        sinks_.erase(it);
    }
}

void EventHub::publish(std::string_view subject, std::string_view event,
                       const std::vector<std::pair<std::string, std::string>>& kwargs) {
    for (const auto& observer : observers_) observer(subject, event, kwargs);
    std::string encoded = encode_event(subject, event, kwargs);
    // Published from within a sink: deliver after the current event, so every
    // subscriber sees the events in the same order.
    if (publishing_) {
        queued_.push_back(std::move(encoded));
        return;
    }
    struct Guard {
        EventHub& hub;
        ~Guard() {
            hub.publishing_ = false;
            hub.queued_.clear();
            hub.sweep();
        }
    } guard{*this};
    publishing_ = true;
    deliver(encoded);
    while (!queued_.empty()) {
        std::string next = std::move(queued_.front());
        queued_.pop_front();
        deliver(next);
    }
}

void EventHub::deliver(const std::string& encoded) {
    // Subscribers added by a sink start with the next event.
    uint64_t end = next_id_;
    for (auto it = sinks_.begin(); it != sinks_.end() && it->first < end; ++it) {
        Subscriber& s = it->second;
        if (s.removed) continue;
        if (!s.sink(encoded) && !s.removed) {
            s.removed = true;
            ++removed_;
        }
    }
}

void EventHub::sweep() {
    std::erase_if(sinks_, [](const auto& entry) { return entry.second.removed; });
    removed_ = 0;
}

// --- the server ---------------------------------------------------------------

namespace {

using Socket = asio::local::stream_protocol::socket;

constexpr size_t kReadChunk = 16384;
constexpr std::chrono::milliseconds kAcceptRetry{100};

// A handler's failure names the caller's method: escaped, bounded and rate-limited per caller.
void log(const std::string& caller, const std::string& message) {
    static base::LimitedLog failures("aeried");
    failures.line(caller, message);
}

}  // namespace

struct ApiServer::Impl : std::enable_shared_from_this<Impl> {
    Impl(asio::io_context& io_context, std::filesystem::path socket_path, Dispatcher d, EventHub* hub,
         ServerLimits l)
        : io(io_context),
          path(std::move(socket_path)),
          dispatcher(std::move(d)),
          events(hub),
          limits(l),
          retry(io_context) {}

    void listen(unsigned mode);
    void accept();
    void on_accept(Socket socket);
    void stop_accepting();
    void close_connections();

    asio::io_context& io;
    std::filesystem::path path;
    Dispatcher dispatcher;
    EventHub* events;
    ServerLimits limits;
    std::unique_ptr<asio::local::stream_protocol::acceptor> acceptor;
    asio::steady_timer retry;
    // Identifies our socket file, so close() never removes a successor's.
    dev_t dev = 0;
    ino_t ino = 0;
    std::unordered_map<Connection*, std::shared_ptr<Connection>> connections;
};

// One client: read the request to EOF, answer, then close or stream events.
struct ApiServer::Connection : std::enable_shared_from_this<Connection> {
    Connection(std::shared_ptr<Impl> server, Socket s)
        : impl(std::move(server)), socket(std::move(s)), timer(impl->io) {}

    void start();
    void close();

private:
    void read_request();
    void on_request();
    void answer(ApiResponse response);
    void start_stream(std::string initial, const std::string& subject, EventHub* events,
                      std::function<bool(const std::string&)> filter);
    bool push_event(const std::string& encoded);
    void watch_hangup();
    void send(std::string bytes);
    void write_next();

    std::shared_ptr<Impl> impl;
    Socket socket;
    asio::steady_timer timer;
    std::string request;
    std::deque<std::string> out;
    size_t backlog = 0;  // queued bytes not yet written
    uint64_t subscription = 0;
    EventHub* hub = nullptr;  // the one `subscription` is with
    bool open = true;
    bool requesting = true;  // still reading the request (the read timeout applies)
    bool writing = false;
    bool close_when_drained = false;
};

void ApiServer::Connection::start() {
    timer.expires_after(impl->limits.read_timeout);
    timer.async_wait([self = shared_from_this()](const asio::error_code& ec) {
        // An expiry already queued when the request completed must not count.
        if (!ec && self->requesting) self->close();
    });
    read_request();
}

void ApiServer::Connection::read_request() {
    // Never ask for more than one byte past the limit: that byte is enough to
    // know the request is too long.
    size_t old = request.size();
    size_t chunk = std::min(kReadChunk, kMaxRequestBytes + 1 - old);
    request.resize(old + chunk);
    socket.async_read_some(asio::buffer(request.data() + old, chunk),
                           [self = shared_from_this(), old](const asio::error_code& ec, size_t n) {
                               if (!self->open) return;
                               self->request.resize(old + n);
                               if (ec == asio::error::eof) return self->on_request();
                               if (ec || self->request.size() > kMaxRequestBytes) return self->close();
                               self->read_request();
                           });
}

void ApiServer::Connection::on_request() {
    requesting = false;
    timer.cancel();
    auto parsed = parse_request(request);
    std::string().swap(request);
    if (!parsed) return close();
    ApiResponse response;
    try {
        response = impl->dispatcher(*parsed);
    } catch (const std::exception& e) {
        log(parsed->source, base::clip(parsed->method, 80) + ": " + e.what());
        return close();
    } catch (...) {
        log(parsed->source, base::clip(parsed->method, 80) + ": unknown exception");
        return close();
    }
    if (open) answer(std::move(response));
}

void ApiServer::Connection::answer(ApiResponse response) {
    switch (response.kind) {
        case ApiResponse::Kind::Reply:
            close_when_drained = true;
            send(std::move(response.bytes));
            if (!writing) close();
            return;
        case ApiResponse::Kind::Close:
            return close();
        case ApiResponse::Kind::Events:
            return start_stream(std::move(response.bytes), response.event_subject,
                                response.hub ? response.hub : impl->events, std::move(response.event_filter));
        case ApiResponse::Kind::Later: {
            std::weak_ptr<Connection> weak = shared_from_this();
            auto work = std::move(response.later);
            work([weak](ApiResponse done) {
                auto self = weak.lock();
                if (self && self->open && done.kind != ApiResponse::Kind::Later) self->answer(std::move(done));
            });
            return;
        }
    }
}

void ApiServer::Connection::start_stream(std::string initial, const std::string& subject, EventHub* events,
                                         std::function<bool(const std::string&)> filter) {
    send(std::move(initial));
    if (!open) return;
    hub = events;
    if (hub) {
        std::weak_ptr<Connection> weak = shared_from_this();
        // Events start "1\0SUBJECT\0": a stream about one qube skips the others'.
        std::string prefix = subject.empty() ? std::string() : std::string("1\0", 2) + subject + '\0';
        subscription = hub->subscribe([weak, prefix, filter = std::move(filter)](const std::string& encoded) {
            auto self = weak.lock();
            if (!prefix.empty() && encoded.compare(0, prefix.size(), prefix) != 0) return bool(self);
            if (filter && !filter(encoded)) return bool(self);
            return self && self->push_event(encoded);
        });
    }
    watch_hangup();
}

bool ApiServer::Connection::push_event(const std::string& encoded) {
    if (!open) return false;
    if (backlog + encoded.size() > EventHub::kMaxBacklog) {
        close();
        return false;
    }
    send(encoded);
    return open;
}

// The client has already shut down its side for writing (that ended the
// request), so a read would only report that EOF again. Its closing the
// connection shows up as a hangup instead.
void ApiServer::Connection::watch_hangup() {
    socket.async_wait(Socket::wait_error, [self = shared_from_this()](const asio::error_code& ec) {
        if (ec != asio::error::operation_aborted) self->close();
    });
}

void ApiServer::Connection::send(std::string bytes) {
    if (!open || bytes.empty()) return;
    backlog += bytes.size();
    out.push_back(std::move(bytes));
    if (!writing) write_next();
}

void ApiServer::Connection::write_next() {
    if (out.empty()) {
        writing = false;
        if (close_when_drained) close();
        return;
    }
    writing = true;
    // deque::push_back keeps references valid, so the front buffer stays put.
    asio::async_write(socket, asio::buffer(out.front()),
                      [self = shared_from_this()](const asio::error_code& ec, size_t n) {
                          if (!self->open) return;
                          if (ec) return self->close();
                          self->backlog -= n;
                          self->out.pop_front();
                          self->write_next();
                      });
}

void ApiServer::Connection::close() {
    if (!open) return;
    open = false;
    auto self = shared_from_this();  // the server's map may hold the last reference
    timer.cancel();
    asio::error_code ec;
    socket.close(ec);
    out.clear();
    backlog = 0;
    if (subscription && hub) hub->unsubscribe(subscription);
    impl->connections.erase(this);
}

// --- accepting ----------------------------------------------------------------

void ApiServer::Impl::listen(unsigned mode) {
    // Replace a stale socket, but never another kind of file.
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) ::unlink(path.c_str());
    acceptor = std::make_unique<asio::local::stream_protocol::acceptor>(
        io, asio::local::stream_protocol::endpoint(path.string()));
    if (::chmod(path.c_str(), mode) != 0 || ::lstat(path.c_str(), &st) != 0) {
        int err = errno;
        stop_accepting();
        throw std::system_error(err, std::generic_category(), "cannot set up " + path.string());
    }
    dev = st.st_dev;
    ino = st.st_ino;
}

void ApiServer::Impl::accept() {
    if (!acceptor) return;
    acceptor->async_accept([self = shared_from_this()](const asio::error_code& ec, Socket socket) {
        if (!self->acceptor || ec == asio::error::operation_aborted) return;
        if (!ec) {
            self->on_accept(std::move(socket));
            return self->accept();
        }
        // Out of descriptors and the like: retrying at once would only spin.
        log("(accept)", "accept: " + ec.message());
        self->retry.expires_after(kAcceptRetry);
        self->retry.async_wait([self](const asio::error_code& e) {
            if (!e) self->accept();
        });
    });
}

void ApiServer::Impl::on_accept(Socket socket) {
    if (connections.size() >= limits.max_connections) return;  // closed as it goes out of scope
    auto conn = std::make_shared<Connection>(shared_from_this(), std::move(socket));
    connections.emplace(conn.get(), conn);
    conn->start();
}

void ApiServer::Impl::stop_accepting() {
    retry.cancel();
    if (!acceptor) return;
    asio::error_code ec;
    acceptor->close(ec);
    acceptor.reset();
    struct stat st {};
    if (::lstat(path.c_str(), &st) == 0 && st.st_dev == dev && st.st_ino == ino) ::unlink(path.c_str());
}

void ApiServer::Impl::close_connections() {
    auto open = connections;  // close() erases from the map
    for (auto& [ptr, conn] : open) conn->close();
}

// --- ApiServer ------------------------------------------------------------------

ApiServer::ApiServer(asio::io_context& io, std::filesystem::path socket_path, Dispatcher dispatcher,
                     EventHub* events, unsigned mode, ServerLimits limits)
    : impl_(std::make_shared<Impl>(io, std::move(socket_path), std::move(dispatcher), events, limits)) {
    impl_->listen(mode);
    impl_->accept();
}

// Open connections are closed too: none may call the dispatcher or touch the
// event hub once the server is gone.
ApiServer::~ApiServer() {
    impl_->stop_accepting();
    impl_->close_connections();
}

void ApiServer::close() {
    impl_->stop_accepting();
}

size_t ApiServer::open_connections() const {
    return impl_->connections.size();
}

}  // namespace aerie::admin
