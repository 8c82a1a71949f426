// The TCP side of a TLS link as OpenSSL sees it: a BIO over our own buffers,
// so that the records of many SSL_write calls leave in one large send and
// one large recv feeds many records. Per-segment costs of the socket (system
// calls, the peer's wake-ups) dominate bulk transfer otherwise: OpenSSL's
// socket BIO sends every 16 KiB record on its own.
#pragma once

#include <openssl/bio.h>

#include <cstddef>

#include "qrexec/byte_buffer.hpp"

namespace aerie::air {

struct TlsWire {
    int fd = -1;                  // the TCP socket (non-blocking)
    qrexec::ByteBuffer in;        // received, not yet taken by OpenSSL
    qrexec::ByteBuffer out;       // records not yet sent
    int error = 0;                // errno of a failed send or recv
    bool eof = false;             // the peer closed its side

    // Sends what `out` holds, as far as the socket takes it. False on an
    // error (in `error`); `out` keeps what did not fit.
    bool send_out();
};

// A BIO reading and writing through `wire` (which must outlive it).
// Writes are refused (retry) while `out` holds more than its bound; reads
// return EOF once the peer closed.
BIO* make_wire_bio(TlsWire* wire);

}  // namespace aerie::air
