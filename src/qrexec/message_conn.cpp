#include "qrexec/message_conn.hpp"

#include "qrexec/vchan.hpp"

#include <fcntl.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace aerie::qrexec {

namespace {

// The messages a descriptor may come with: a data channel (EXEC_CMDLINE,
// JUST_EXEC, SERVICE_CONNECT), or the marker by which an Aerie
// qrexec-client-vm says it takes the channel as a descriptor (TRIGGER_SERVICE*,
// the only message on its connection; docs/qrexec-wire.md). A descriptor is
// given to the next such message read, so a message type that may come just
// before one of these must not be added here.
bool carries_fd(uint32_t type) {
    switch (static_cast<MsgType>(type)) {
        case MsgType::ExecCmdline:
        case MsgType::JustExec:
        case MsgType::ServiceConnect:
        case MsgType::TriggerService:
        case MsgType::TriggerService3:
        case MsgType::TriggerService4: return true;
        default: return false;
    }
}

}  // namespace

std::shared_ptr<MessageConn> MessageConn::create(asio::io_context& io, UniqueFd fd, Options options) {
    return std::shared_ptr<MessageConn>(new MessageConn(io, std::move(fd), options));
}

MessageConn::MessageConn(asio::io_context& io, UniqueFd fd, Options options)
    : sd_(io, fd.release()), options_(options) {
    int flags = ::fcntl(sd_.native_handle(), F_GETFL);
    ::fcntl(sd_.native_handle(), F_SETFL, flags | O_NONBLOCK);
}

MessageConn::~MessageConn() {
    asio::error_code ec;
    sd_.close(ec);
}

void MessageConn::start(MessageHandler on_message, CloseHandler on_close) {
    on_message_ = std::move(on_message);
    on_close_ = std::move(on_close);
    arm_read();
}

void MessageConn::arm_read() {
    if (!open_ || reading_ || paused_ || peer_eof_) return;
    reading_ = true;
    sd_.async_wait(asio::posix::stream_descriptor::wait_read,
                   [self = shared_from_this()](const asio::error_code& ec) {
                       self->reading_ = false;
                       if (ec || !self->open_) return;
                       self->on_readable();
                   });
}

void MessageConn::on_readable() {
    // Read what is there now (bounded, so one busy peer cannot starve others).
    size_t budget = 1 << 20;
    while (open_ && budget > 0) {
        size_t chunk = 256 * 1024;
        std::vector<UniqueFd> fds;
        ssize_t n = recv_with_fds(sd_.native_handle(), in_.prepare(chunk), chunk, MSG_DONTWAIT,
                                  options_.accept_fds ? &fds : nullptr);
        if (n > 0) in_.commit(static_cast<size_t>(n));
        for (auto& fd : fds)
            if (in_fds_.size() < 16) in_fds_.push_back(std::move(fd));
        if (n == 0) {
            // Deliver everything buffered first (reading may be paused).
            peer_eof_ = true;
            parse();
            return;
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) break;
            close(std::string("read error: ") + std::strerror(errno));
            return;
        }
        budget -= std::min(budget, static_cast<size_t>(n));
        if (static_cast<size_t>(n) < chunk) break;
    }
    parse();
    arm_read();
}

void MessageConn::parse() {
    if (in_parse_) return;
    in_parse_ = true;
    auto self = shared_from_this();
    while (open_ && !paused_ && in_.size() >= kHeaderSize) {
        Header h;
        try {
            h = decode_header(in_.view().substr(0, kHeaderSize), options_.max_payload);
        } catch (const ProtocolError& e) {
            in_parse_ = false;
            oversized_ = true;
            close(e.what());
            return;
        }
        if (in_.size() - kHeaderSize < h.len) break;
        std::string_view payload(in_.data() + kHeaderSize, h.len);
        UniqueFd fd;
        bool hello_fd = options_.hello_carries_fd && h.type == static_cast<uint32_t>(MsgType::Hello);
        if ((carries_fd(h.type) || hello_fd) && !in_fds_.empty()) {
            fd = std::move(in_fds_.front());
            in_fds_.pop_front();
        }
        // Handlers may send or close, but never touch in_ (only on_readable
        // does, and it is not re-entered), so the view stays valid:
        // consume() only moves an index.
        in_.consume(kHeaderSize + h.len);
        on_message_(h, payload, std::move(fd));
    }
    in_parse_ = false;
    if (peer_eof_ && open_ && !paused_) {
        if (!in_.empty()) {
            close("peer closed the connection in the middle of a message");
        } else {
            close("peer closed the connection");
        }
    }
}

void MessageConn::send(std::string bytes, UniqueFd fd) {
    if (!open_ || write_broken_) return;
    pending_bytes_ += bytes.size();
    out_.push_back(Outgoing{std::move(bytes), 0, std::move(fd)});
    if (!writing_) flush();
}

void MessageConn::send_message(MsgType type, std::string_view payload) {
    if (!open_ || write_broken_) return;
    std::string header = encode_header(type, static_cast<uint32_t>(payload.size()));
    size_t sent = 0;
    if (out_.empty() && !writing_) {
        iovec iov[2] = {{header.data(), header.size()}, {const_cast<char*>(payload.data()), payload.size()}};
        msghdr msg{};
        msg.msg_iov = iov;
        msg.msg_iovlen = 2;
        ssize_t n;
        do {
            n = ::sendmsg(sd_.native_handle(), &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
        } while (n < 0 && errno == EINTR);
        if (n > 0) sent = static_cast<size_t>(n);
        if (sent == header.size() + payload.size()) {
            if (on_drained_) on_drained_();
            return;
        }
    }
    // Queue what is left (the slow path copies).
    std::string rest = header + std::string(payload);
    send(rest.substr(sent));
}

void MessageConn::flush() {
    auto self = shared_from_this();
    while (open_ && !out_.empty()) {
        Outgoing& o = out_.front();
        ssize_t n = send_with_fd(sd_.native_handle(), o.bytes.data() + o.offset, o.bytes.size() - o.offset,
                                 o.fd ? o.fd.get() : -1, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                arm_write();
                return;
            }
            if (errno == EPIPE || errno == ECONNRESET) {
                // The peer stopped reading; what it sent before may still be
                // unread here, so keep reading until its EOF.
                write_broken_ = true;
                out_.clear();
                pending_bytes_ = 0;
                if (close_when_flushed_) close("peer closed the connection");
                return;
            }
            close(std::string("write error: ") + std::strerror(errno));
            return;
        }
        o.fd.reset();  // passed with the first bytes
        o.offset += static_cast<size_t>(n);
        pending_bytes_ -= static_cast<size_t>(n);
        if (o.offset == o.bytes.size()) out_.pop_front();
    }
    if (out_.empty()) {
        if (close_when_flushed_) {
            close("done");
            return;
        }
        if (linger_) end_writing();
        if (on_drained_) on_drained_();
    }
}

void MessageConn::arm_write() {
    if (writing_) return;
    writing_ = true;
    sd_.async_wait(asio::posix::stream_descriptor::wait_write,
                   [self = shared_from_this()](const asio::error_code& ec) {
                       self->writing_ = false;
                       if (ec || !self->open_) return;
                       self->flush();
                   });
}

void MessageConn::close_after_flush() {
    close_when_flushed_ = true;
    if (out_.empty()) close("done");
}

void MessageConn::linger_after_flush() {
    if (!open_ || linger_ || close_when_flushed_) return;
    if (lingering_ >= kMaxLingering) return close_after_flush();
    linger_ = true;
    ++lingering_;
    if (out_.empty()) end_writing();
    resume_reading();  // what comes now is only read to find the peer's end
}

void MessageConn::end_writing() {
    ::shutdown(sd_.native_handle(), SHUT_WR);
    if (write_broken_ || peer_eof_) close("done");
}

void MessageConn::close(const std::string& reason) {
    if (!open_) return;
    open_ = false;
    if (linger_) --lingering_;
    asio::error_code ec;
    sd_.cancel(ec);
    sd_.close(ec);
    out_.clear();
    in_fds_.clear();
    auto handler = std::move(on_close_);
    on_close_ = nullptr;
    on_message_ = nullptr;
    on_drained_ = nullptr;
    if (handler) handler(reason);
}

void MessageConn::pause_reading() { paused_ = true; }

void MessageConn::resume_reading() {
    if (!paused_) return;
    paused_ = false;
    parse();
    arm_read();
}

}  // namespace aerie::qrexec
