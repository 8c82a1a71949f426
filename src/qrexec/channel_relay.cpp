#include "qrexec/channel_relay.hpp"

#include <sys/socket.h>

#include <array>
#include <memory>

namespace aerie::qrexec {

namespace {

class ChannelRelay : public std::enable_shared_from_this<ChannelRelay> {
public:
    ChannelRelay(asio::io_context& io, UniqueFd a, UniqueFd b) : a_(io), b_(io) {
        a_.assign(asio::local::stream_protocol(), a.release());
        b_.assign(asio::local::stream_protocol(), b.release());
    }
    void start() {
        pump(a_, b_, buf_ab_);
        pump(b_, a_, buf_ba_);
    }

private:
    using Socket = asio::local::stream_protocol::socket;
    using Buffer = std::array<char, 65536>;

    void pump(Socket& from, Socket& to, Buffer& buf) {
        auto self = shared_from_this();
        from.async_read_some(
            asio::buffer(buf), [self, &from, &to, &buf](const asio::error_code& ec, size_t n) {
                if (ec || n == 0) return self->end(from, to);
                asio::async_write(to, asio::buffer(buf.data(), n),
                                  [self, &from, &to, &buf](const asio::error_code& wec, size_t) {
                                      if (wec) return self->end(from, to);
                                      self->pump(from, to, buf);
                                  });
            });
    }

    // One direction is over: its reader sees EOF; the last one closes both.
    void end(Socket& from, Socket& to) {
        asio::error_code ignored;
        to.shutdown(asio::socket_base::shutdown_send, ignored);
        from.shutdown(asio::socket_base::shutdown_receive, ignored);
        if (++ended_ == 2) {
            a_.close(ignored);
            b_.close(ignored);
        }
    }

    Socket a_, b_;
    Buffer buf_ab_{}, buf_ba_{};
    int ended_ = 0;
};

}  // namespace

void start_channel_relay(asio::io_context& io, UniqueFd a, UniqueFd b) {
    std::make_shared<ChannelRelay>(io, std::move(a), std::move(b))->start();
}

}  // namespace aerie::qrexec
