// A qrexec message stream on a Unix stream socket, driven by an Asio event
// loop: framed reads with a payload cap (a peer announcing more is cut off
// before anything is allocated), a write queue, optional file descriptors
// received with EXEC/SERVICE_CONNECT messages, and read pausing for
// back-pressure.
#pragma once

#include <asio.hpp>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "qrexec/byte_buffer.hpp"
#include "qrexec/protocol.hpp"
#include "qrexec/unique_fd.hpp"

namespace aerie::qrexec {

class MessageConn : public std::enable_shared_from_this<MessageConn> {
public:
    // fd: the file descriptor passed along with the message, if any.
    using MessageHandler = std::function<void(const Header&, std::string_view payload, UniqueFd fd)>;
    using CloseHandler = std::function<void(const std::string& reason)>;

    struct Options {
        size_t max_payload = kMaxPayload;
        bool accept_fds = false;  // else every received descriptor is closed at once
        // A descriptor may come with HELLO (an Aerie agent's marker). Only
        // where HELLO is the peer's first message: a descriptor goes to the
        // next message of a type that may carry one.
        bool hello_carries_fd = false;
    };

    static std::shared_ptr<MessageConn> create(asio::io_context& io, UniqueFd fd, Options options);
    ~MessageConn();

    void start(MessageHandler on_message, CloseHandler on_close);
    void send(std::string bytes, UniqueFd fd = {});
    // Sends one message; when nothing is queued it goes straight from
    // `payload` to the socket, with no copy.
    void send_message(MsgType type, std::string_view payload);
    // Closes after the write queue has drained.
    void close_after_flush();
    // After the write queue has drained, ends our direction (shutdown
    // SHUT_WR) but keeps reading (and ignoring) until the peer closes, so
    // a peer still sending never meets a closed socket. At most
    // kMaxLingering connections of a process linger; past that this is
    // close_after_flush().
    void linger_after_flush();
    static constexpr int kMaxLingering = 256;
    void close(const std::string& reason);

    void pause_reading();
    void resume_reading();
    size_t pending_write_bytes() const { return pending_bytes_; }
    // Called (once) whenever the write queue becomes empty.
    void on_drained(std::function<void()> callback) { on_drained_ = std::move(callback); }
    bool is_open() const { return open_; }
    // Closed because the peer announced a payload over the cap.
    bool oversized() const { return oversized_; }
    int native_handle() { return sd_.native_handle(); }

private:
    MessageConn(asio::io_context& io, UniqueFd fd, Options options);
    void arm_read();
    void on_readable();
    void parse();
    void flush();
    void arm_write();
    void end_writing();
    static inline int lingering_ = 0;

    struct Outgoing {
        std::string bytes;
        size_t offset = 0;
        UniqueFd fd;
    };

    asio::posix::stream_descriptor sd_;
    Options options_;
    MessageHandler on_message_;
    CloseHandler on_close_;
    std::function<void()> on_drained_;
    ByteBuffer in_;
    std::deque<UniqueFd> in_fds_;
    std::deque<Outgoing> out_;
    size_t pending_bytes_ = 0;
    bool open_ = true;
    bool reading_ = false;
    bool paused_ = false;
    bool writing_ = false;
    bool close_when_flushed_ = false;
    bool linger_ = false;  // counted in lingering_
    bool write_broken_ = false;  // the peer no longer reads (EPIPE)
    bool peer_eof_ = false;      // the peer finished sending
    bool in_parse_ = false;
    bool oversized_ = false;
};

}  // namespace aerie::qrexec
