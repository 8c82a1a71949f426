#include "air/tls_wire.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace aerie::air {

namespace {

constexpr size_t kRecvChunk = 256 * 1024;
constexpr size_t kOutBound = 512 * 1024;  // then SSL_write waits for the socket

TlsWire* wire_of(BIO* bio) { return static_cast<TlsWire*>(BIO_get_data(bio)); }

int wire_write(BIO* bio, const char* data, int len) {
    TlsWire* w = wire_of(bio);
    BIO_clear_retry_flags(bio);
    if (w->out.size() >= kOutBound) {
        BIO_set_retry_write(bio);
        return -1;
    }
    std::memcpy(w->out.prepare(static_cast<size_t>(len)), data, static_cast<size_t>(len));
    w->out.commit(static_cast<size_t>(len));
    return len;
}

int wire_read(BIO* bio, char* data, int len) {
    TlsWire* w = wire_of(bio);
    BIO_clear_retry_flags(bio);
    if (w->in.empty()) {
        if (w->eof) return 0;
        ssize_t n;
        do {
            n = ::recv(w->fd, w->in.prepare(kRecvChunk), kRecvChunk, 0);
        } while (n < 0 && errno == EINTR);
        if (n == 0) {
            w->eof = true;
            return 0;
        }
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                BIO_set_retry_read(bio);
            } else {
                w->error = errno;
            }
            return -1;
        }
        w->in.commit(static_cast<size_t>(n));
    }
    size_t take = std::min(w->in.size(), static_cast<size_t>(len));
    std::memcpy(data, w->in.data(), take);
    w->in.consume(take);
    return static_cast<int>(take);
}

long wire_ctrl(BIO* bio, int cmd, long, void*) {
    switch (cmd) {
        case BIO_CTRL_FLUSH:  // the link sends when OpenSSL is done
            return 1;
        case BIO_CTRL_PENDING:
            return static_cast<long>(wire_of(bio)->in.size());
        case BIO_CTRL_WPENDING:
            return static_cast<long>(wire_of(bio)->out.size());
        default:
            return 0;
    }
}

BIO_METHOD* wire_method() {
    static BIO_METHOD* method = [] {
        BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "aerie-air wire");
        BIO_meth_set_write(m, wire_write);
        BIO_meth_set_read(m, wire_read);
        BIO_meth_set_ctrl(m, wire_ctrl);
        BIO_meth_set_create(m, [](BIO* bio) {
            BIO_set_init(bio, 1);
            return 1;
        });
        return m;
    }();
    return method;
}

}  // namespace

bool TlsWire::send_out() {
    while (!out.empty()) {
        ssize_t n = ::send(fd, out.data(), out.size(), MSG_NOSIGNAL);
        if (n > 0) {
            out.consume(static_cast<size_t>(n));
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
        error = n < 0 ? errno : EPIPE;
        return false;
    }
    return true;
}

BIO* make_wire_bio(TlsWire* wire) {
    BIO* bio = BIO_new(wire_method());
    if (bio) BIO_set_data(bio, wire);
    return bio;
}

}  // namespace aerie::air
