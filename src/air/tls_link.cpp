#include "air/tls_link.hpp"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "air/fd_message.hpp"
#include "air/relay_names.hpp"

namespace aerie::air {

namespace fs = std::filesystem;
using namespace mux;

namespace {

constexpr size_t kInBuffer = 256 * 1024;        // decrypted bytes per decoder feed
constexpr size_t kReadBudget = 1 << 20;          // TLS bytes per event before others get a turn
constexpr size_t kOutHigh = 1 << 20;             // pause local inputs above this much unsent
constexpr size_t kOutLow = 256 * 1024;           // and resume below this
constexpr size_t kWindowUpdate = 256 * 1024;     // credit the peer in steps of this
constexpr uint64_t kMaxWindow = uint64_t(1) << 30;
constexpr size_t kMaxPeerStreams = 256;          // calls from the peer at once
constexpr auto kHandshakeTimeout = std::chrono::seconds(15);
// Each side pings every kPingEvery; a link silent for kSilence is dead (a cut
// link sends nothing, and TCP alone would wait minutes).
constexpr auto kPingEvery = std::chrono::milliseconds(2000);
constexpr auto kSilence = std::chrono::seconds(8);

void set_nonblocking(int fd) {
    int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0 && !(flags & O_NONBLOCK)) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

bool is_socket(int fd) {
    struct stat st {};
    return ::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
}

// The names in a certificate's "qube:NAME" SAN URIs.
std::vector<std::string> cert_names(X509* cert) {
    std::vector<std::string> out;
    auto* names = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
    if (!names) return out;
    for (int i = 0; i < sk_GENERAL_NAME_num(names); ++i) {
        const GENERAL_NAME* name = sk_GENERAL_NAME_value(names, i);
        if (name->type != GEN_URI) continue;
        const ASN1_IA5STRING* uri = name->d.uniformResourceIdentifier;
        std::string text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                         static_cast<size_t>(ASN1_STRING_length(uri)));
        if (text.starts_with("qube:")) out.push_back(text.substr(5));
    }
    GENERAL_NAMES_free(names);
    return out;
}

std::string printable(std::string_view text) {
    std::string out(text);
    for (char& c : out)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
    return out;
}

}  // namespace

struct TlsLink::Stream {
    Stream(EventLoop& l, uint32_t i, bool o, LocalEnds e) : loop(l), id(i), ours(o), ends(std::move(e)) {}
    ~Stream() {
        loop.remove(in_token);
        loop.remove(out_token);
    }
    EventLoop& loop;
    uint32_t id;
    bool ours;  // this side opened it (a call going out)
    LocalEnds ends;
    bool output_is_socket = false;
    EventLoop::Token in_token = 0, out_token = 0;
    uint32_t in_events = 0, out_events = 0;
    uint64_t send_window = kInitialWindow;  // DATA bytes the peer will take
    uint32_t recv_allowed = kInitialWindow; // DATA bytes the peer may still send
    size_t unacked = 0;                     // written out, not yet credited
    qrexec::ByteBuffer pending;             // the peer's data the output has not taken yet
    bool input_done = false;                // no more reading (EOF sent, or not wanted)
    bool peer_eof = false;
    bool output_broken = false;             // its reader went away: data is dropped
    bool finished = false;
    std::optional<int> local_exit;          // theirs: the local process's code
    std::optional<int> remote_exit;         // ours: the EXIT that came
    std::function<void(const StreamResult&)> on_end;
};

TlsLink::TlsLink(EventLoop& loop, uint64_t serial, std::string zone, Role role, fs::path home, Hooks hooks)
    : loop_(loop),
      serial_(serial),
      zone_(std::move(zone)),
      role_(role),
      home_(std::move(home)),
      hooks_(std::move(hooks)),
      in_(new char[kInBuffer]),
      next_id_(role == Role::Connector ? 1 : 2) {}

TlsLink::~TlsLink() {
    streams_.clear();
    loop_.remove(sock_token_);
    loop_.cancel(handshake_timer_);
    loop_.cancel(heartbeat_timer_);
}

void TlsLink::attach(qrexec::UniqueFd sock) {
    if (state_ != State::Connecting) return;
    sock_ = std::move(sock);
    ::fcntl(sock_.get(), F_SETFD, FD_CLOEXEC);
    set_nonblocking(sock_.get());
    // TCP options (no Nagle, keepalive, user timeout) are the host's: it set
    // them when it made the socket (air/host_uplink.cpp).
    bool server = role_ == Role::Acceptor;
    try {
        pinned_der_ = read_cert_der(home_ / "peers" / zone_ / "cert.pem");
        ctx_ = make_tls_context(home_, server);
        wire_.fd = sock_.get();
        ssl_ = make_tls_connection(ctx_.get(), make_wire_bio(&wire_), server, &pinned_der_);
    } catch (const AirError& e) {
        return fail(e.what());
    }
    state_ = State::Handshake;
    sock_token_ = loop_.add(sock_.get(), EPOLLIN, [this](uint32_t events) { on_socket(events); });
    handshake_timer_ = loop_.after(std::chrono::duration_cast<std::chrono::milliseconds>(kHandshakeTimeout),
                                   [this] { fail("the TLS handshake with zone " + zone_ + " timed out"); });
    handshake();
}

void TlsLink::on_socket(uint32_t) {
    if (state_ == State::Handshake) return handshake();
    if (state_ != State::Ready) return;
    read_tls();
    flush();
}

void TlsLink::handshake() {
    ERR_clear_error();
    int r = SSL_do_handshake(ssl_.get());
    int err = r == 1 ? SSL_ERROR_NONE : SSL_get_error(ssl_.get(), r);
    // Whatever the handshake wrote waits in the wire buffer.
    if (!wire_.send_out()) return fail("the TLS handshake with zone " + zone_ + " failed: " + io_failure(""));
    uint32_t events = wire_.out.empty() ? EPOLLIN : EPOLLIN | EPOLLOUT;
    if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return loop_.modify(sock_token_, events);
    if (err != SSL_ERROR_NONE) {
        if (tls_pin_refused(ssl_.get())) {
            ERR_clear_error();
            return fail("zone " + zone_ + " presented a certificate other than the one pinned for it");
        }
        return fail("the TLS handshake with zone " + zone_ + " failed: " + io_failure("the connection closed"));
    }
    loop_.cancel(handshake_timer_);
    state_ = State::Ready;
    last_heard_ = std::chrono::steady_clock::now();
    heartbeat_timer_ = loop_.after(kPingEvery, [this] { heartbeat(); });
    std::vector<std::string> certified;
    if (X509* peer = SSL_get0_peer_certificate(ssl_.get())) certified = cert_names(peer);
    for (auto& name : read_names(home_ / "peers" / zone_ / "names"))
        if (std::find(certified.begin(), certified.end(), name) != certified.end()) allowed_sources_.push_back(name);
    if (hooks_.on_ready) hooks_.on_ready(*this);
    if (state_ != State::Ready) return;
    flush();
    update_all_inputs();
    read_tls();  // data that came with the handshake's last flight waits in OpenSSL
    flush();
}

std::string TlsLink::io_failure(const std::string& fallback) {
    std::string why = wire_.error ? std::strerror(wire_.error) : wire_.eof ? "closed by the other end" : fallback;
    return tls_error_text(why);
}

void TlsLink::read_tls() {
    size_t budget = 0;
    while (state_ == State::Ready) {
        size_t have = 0;
        bool drained = false;
        std::string lost;
        while (have < kInBuffer) {
            size_t got = 0;
            ERR_clear_error();
            if (SSL_read_ex(ssl_.get(), in_.get() + have, kInBuffer - have, &got) == 1) {
                have += got;
                last_heard_ = std::chrono::steady_clock::now();
                continue;
            }
            int err = SSL_get_error(ssl_.get(), 0);
            if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
                drained = true;  // (WANT_WRITE: the wire buffer is full; flush() sends it)
            } else if (err == SSL_ERROR_ZERO_RETURN) {
                lost = "zone " + zone_ + " closed the connection";
            } else {
                std::string why = io_failure("closed by the other end");
                if (why.find("alert") != std::string::npos)  // e.g. it refused our certificate
                    lost = "zone " + zone_ + " refused the connection: " + why;
                else
                    lost = "the connection to zone " + zone_ + " was lost: " + why;
            }
            break;
        }
        try {
            decoder_.feed(std::string_view(in_.get(), have), [this](const Event& e) { on_frame(e); });
        } catch (const MuxError& e) {
            return protocol_error(e.what());
        }
        if (!lost.empty()) return fail(lost);
        if (drained) return;
        budget += have;
        if (budget >= kReadBudget) {
            // What OpenSSL or the wire buffer hold already will not wake
            // epoll: come back for it.
            if (SSL_has_pending(ssl_.get()) || !wire_.in.empty())
                loop_.post([this, alive = std::weak_ptr<int>(alive_)] {
                    if (alive.lock() && state_ == State::Ready) {
                        read_tls();
                        flush();
                    }
                });
            return;
        }
    }
}

void TlsLink::heartbeat() {
    heartbeat_timer_ = 0;
    if (state_ != State::Ready) return;
    if (std::chrono::steady_clock::now() - last_heard_ > kSilence)
        return fail("the connection to zone " + zone_ + " was lost: nothing heard for " +
                    std::to_string(std::chrono::seconds(kSilence).count()) + " seconds");
    std::string ping;
    encode_ping(ping);
    send_control(ping);
    flush();
    if (state_ == State::Ready) heartbeat_timer_ = loop_.after(kPingEvery, [this] { heartbeat(); });
}

void TlsLink::flush() {
    if (state_ != State::Ready) return;
    for (;;) {
        bool stuck = false;  // OpenSSL wants to read first
        while (!out_.empty()) {
            size_t wrote = 0;
            ERR_clear_error();
            if (SSL_write_ex(ssl_.get(), out_.data(), out_.size(), &wrote) == 1) {
                out_.consume(wrote);
                continue;
            }
            int err = SSL_get_error(ssl_.get(), 0);
            if (err == SSL_ERROR_WANT_WRITE) break;  // the wire buffer is full
            if (err == SSL_ERROR_WANT_READ) {
                stuck = true;
                break;
            }
            return fail("the connection to zone " + zone_ + " was lost: " + io_failure("closed by the other end"));
        }
        if (!wire_.send_out())
            return fail("the connection to zone " + zone_ + " was lost: " + io_failure("closed by the other end"));
        if (out_.empty() || !wire_.out.empty() || stuck) break;  // done, or the socket is full
    }
    loop_.modify(sock_token_, wire_.out.empty() ? EPOLLIN : EPOLLIN | EPOLLOUT);
    size_t unsent = out_.size() + wire_.out.size();
    bool full = unsent > (out_full_ ? kOutLow : kOutHigh);
    if (full != out_full_) {
        out_full_ = full;
        update_all_inputs();
    }
}

void TlsLink::send_control(const std::string& frame) {
    std::memcpy(out_.prepare(frame.size()), frame.data(), frame.size());
    out_.commit(frame.size());
}

bool TlsLink::can_send() const { return state_ == State::Ready && !out_full_; }

TlsLink::Stream* TlsLink::find(uint32_t id) {
    auto it = streams_.find(id);
    return it == streams_.end() ? nullptr : it->second.get();
}

void TlsLink::on_frame(const Event& e) {
    if (state_ != State::Ready || e.type == FrameType::Ping) return;
    if (e.type == FrameType::Open) return on_open_frame(e.stream, *e.open);
    Stream* s = find(e.stream);
    if (!s) return;  // a stream that ended here already: what was in flight is dropped
    switch (e.type) {
        case FrameType::Data:
            if (s->peer_eof) return protocol_error("DATA after EOF");
            if (e.bytes.size() > s->recv_allowed) return protocol_error("DATA beyond the window");
            s->recv_allowed -= static_cast<uint32_t>(e.bytes.size());
            write_out(*s, e.bytes);
            break;
        case FrameType::Eof:
            s->peer_eof = true;
            if (s->pending.empty()) close_output(*s);
            maybe_finish(*s);
            break;
        case FrameType::Exit:
            if (!s->ours) return protocol_error("EXIT for a stream it opened");
            s->remote_exit = static_cast<int>(std::min<uint32_t>(e.value, 255));
            s->input_done = true;  // the service is gone: the caller's input goes nowhere
            update_interest(*s);
            maybe_finish(*s);
            break;
        case FrameType::Reset:
            finish(*s, StreamResult(std::string(printable(e.bytes))));
            break;
        case FrameType::Window:
            s->send_window += e.value;
            if (s->send_window > kMaxWindow) return protocol_error("WINDOW beyond 1 GiB");
            update_interest(*s);
            if (s->local_exit) on_input(*s);  // its process ended: no readiness may come
            break;
        case FrameType::Open:
        case FrameType::Ping:
            break;
    }
}

void TlsLink::on_open_frame(uint32_t id, const OpenRequest& open) {
    bool peer_parity = (id % 2 == 1) == (role_ == Role::Acceptor);
    if (!peer_parity || id <= last_peer_id_) return protocol_error("OPEN with a stream id out of order");
    last_peer_id_ = id;
    try {
        size_t theirs = 0;
        for (auto& [_, s] : streams_) theirs += s->ours ? 0 : 1;
        if (theirs >= kMaxPeerStreams) throw AirError("too many calls from zone " + zone_ + " at once");
        add_stream(id, hooks_.on_open(*this, id, open), false);
    } catch (const std::exception& e) {
        std::string frame;
        encode_reset(frame, id, e.what());
        send_control(frame);
        flush();
    }
}

void TlsLink::protocol_error(const std::string& what) {
    fail("zone " + zone_ + " broke the protocol (" + what + ")");
}

// Throws (and then leaves nothing behind) when the loop refuses a descriptor.
TlsLink::Stream& TlsLink::add_stream(uint32_t id, LocalEnds ends, bool ours) {
    auto owned = std::make_unique<Stream>(loop_, id, ours, std::move(ends));
    Stream& s = *owned;
    set_nonblocking(s.ends.input.get());
    set_nonblocking(s.ends.output.get());
    s.output_is_socket = is_socket(s.ends.output.get());
    s.in_token = loop_.add(s.ends.input.get(), 0, [this, &s](uint32_t) { on_input(s); });
    s.out_token = loop_.add(s.ends.output.get(), 0, [this, &s](uint32_t) { on_output(s); });
    streams_.emplace(id, std::move(owned));
    update_interest(s);
    return s;
}

uint32_t TlsLink::open_stream(const OpenRequest& open, LocalEnds ends,
                              std::function<void(const StreamResult&)> on_end) {
    uint32_t id = next_id_;
    if (state_ == State::Closed || id > 0xfffffff0u) {
        on_end(StreamResult(std::string("the connection to zone " + zone_ + " is closed")));
        return 0;
    }
    std::string frame;
    encode_open(frame, id, open);  // throws MuxError for fields the peer would refuse
    Stream& s = add_stream(id, std::move(ends), true);
    s.on_end = std::move(on_end);
    next_id_ += 2;
    send_control(frame);
    flush();
    return id;
}

void TlsLink::reset_stream(uint32_t id, const std::string& reason) {
    Stream* s = find(id);
    if (!s) return;
    std::string frame;
    encode_reset(frame, id, reason);
    send_control(frame);
    finish(*s, std::nullopt);
    flush();
}

void TlsLink::local_exited(uint32_t id, int code) {
    Stream* s = find(id);
    if (!s || s->ours) return;
    s->local_exit = code;
    // What it wrote before it ended is in the socket: read it to the end.
    // Nothing more may come (a descendant holding the socket keeps it from
    // EOF), so "no data now" ends the input too.
    if (s->input_done) return maybe_finish(*s);
    if (s->send_window > 0 && can_send()) on_input(*s);
}

void TlsLink::on_input(Stream& s) {
    if (s.finished || s.input_done || s.send_window == 0 || !can_send()) return;
    size_t want = std::min<uint64_t>(kMaxPayload, s.send_window);
    char* at = out_.prepare(kHeaderSize + want);
    ssize_t n;
    do {
        n = ::read(s.ends.input.get(), at + kHeaderSize, want);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        encode_header(at, FrameType::Data, s.id, static_cast<uint32_t>(n));
        out_.commit(kHeaderSize + static_cast<size_t>(n));
        s.send_window -= static_cast<size_t>(n);
        if (s.send_window == 0) update_interest(s);
        flush();
        return;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && !s.local_exit) return;
    input_ended(s);  // EOF, an error, or nothing more from a process that ended
}

void TlsLink::input_ended(Stream& s) {
    if (s.input_done) return;
    s.input_done = true;
    loop_.remove(s.in_token);
    s.in_token = 0;
    s.ends.input.reset();
    std::string frame;
    encode_eof(frame, s.id);
    send_control(frame);
    flush();
    maybe_finish(s);
}

void TlsLink::write_out(Stream& s, std::string_view bytes) {
    if (s.output_broken || !s.ends.output) return credit(s, bytes.size());
    if (s.pending.empty()) {
        ssize_t n;
        do {
            n = ::write(s.ends.output.get(), bytes.data(), bytes.size());
        } while (n < 0 && errno == EINTR);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
            s.output_broken = true;
            close_output(s);
            return credit(s, bytes.size());
        }
        size_t wrote = n > 0 ? static_cast<size_t>(n) : 0;
        credit(s, wrote);
        bytes.remove_prefix(wrote);
        if (bytes.empty()) return;
    }
    std::memcpy(s.pending.prepare(bytes.size()), bytes.data(), bytes.size());
    s.pending.commit(bytes.size());
    update_interest(s);
}

void TlsLink::on_output(Stream& s) {
    if (s.finished) return;
    while (!s.pending.empty()) {
        ssize_t n = ::write(s.ends.output.get(), s.pending.data(), s.pending.size());
        if (n > 0) {
            s.pending.consume(static_cast<size_t>(n));
            credit(s, static_cast<size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        s.output_broken = true;  // the reader went away
        credit(s, s.pending.size());
        s.pending.clear();
        break;
    }
    update_interest(s);
    if (s.peer_eof || s.output_broken) close_output(s);
    maybe_finish(s);
    flush();
}

void TlsLink::credit(Stream& s, size_t bytes) {
    s.unacked += bytes;
    if (s.unacked < kWindowUpdate || s.peer_eof) return;
    std::string frame;
    encode_window(frame, s.id, static_cast<uint32_t>(s.unacked));
    send_control(frame);
    s.recv_allowed += static_cast<uint32_t>(s.unacked);
    s.unacked = 0;
}

void TlsLink::close_output(Stream& s) {
    if (!s.ends.output) return;
    loop_.remove(s.out_token);
    s.out_token = 0;
    if (s.output_is_socket) ::shutdown(s.ends.output.get(), SHUT_WR);
    s.ends.output.reset();
}

void TlsLink::maybe_finish(Stream& s) {
    if (s.finished) return;
    if (s.ours) {
        if (s.remote_exit && (s.pending.empty() || s.output_broken)) {
            close_output(s);
            finish(s, StreamResult(*s.remote_exit));
        }
    } else if (s.local_exit && s.input_done) {
        std::string frame;
        encode_exit(frame, s.id, static_cast<uint32_t>(*s.local_exit));
        send_control(frame);
        finish(s, std::nullopt);
        flush();
    }
}

void TlsLink::finish(Stream& s, std::optional<StreamResult> result) {
    if (s.finished) return;
    s.finished = true;
    loop_.remove(s.in_token);
    loop_.remove(s.out_token);
    s.in_token = s.out_token = 0;
    s.ends.input.reset();
    s.ends.output.reset();
    auto on_end = std::move(s.on_end);
    auto it = streams_.find(s.id);
    // A handler of this stream may be running: destroy it afterwards.
    loop_.post([owned = std::shared_ptr<Stream>(std::move(it->second))] {});
    streams_.erase(it);
    if (result && on_end) on_end(*result);
}

void TlsLink::update_interest(Stream& s) {
    if (s.finished) return;
    bool reading = !s.input_done && s.send_window > 0 && can_send();
    uint32_t in = reading ? uint32_t(EPOLLIN) : 0;
    uint32_t out = !s.pending.empty() && s.ends.output ? uint32_t(EPOLLOUT) : 0;
    if (s.in_token && in != s.in_events) loop_.modify(s.in_token, in);
    if (s.out_token && out != s.out_events) loop_.modify(s.out_token, out);
    s.in_events = in;
    s.out_events = out;
}

void TlsLink::update_all_inputs() {
    for (auto& [id, s] : streams_) update_interest(*s);
}

void TlsLink::fail(const std::string& reason) {
    if (state_ == State::Closed) return;
    state_ = State::Closed;
    loop_.cancel(handshake_timer_);
    loop_.cancel(heartbeat_timer_);
    heartbeat_timer_ = 0;
    loop_.remove(sock_token_);
    sock_token_ = 0;
    while (!streams_.empty()) {
        Stream& s = *streams_.begin()->second;
        if (s.ours)
            finish(s, StreamResult(reason));
        else
            finish(s, std::nullopt);
    }
    ssl_.reset();
    sock_.reset();
    if (hooks_.on_closed) hooks_.on_closed(*this, reason);
}

}  // namespace aerie::air
