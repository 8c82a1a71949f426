// The TLS side of a link between two relays (docs/air.md): TLS 1.3 only,
// both sides authenticated by the relay's own key and certificate, the peer
// accepted only when its certificate is byte for byte the one pinned for its
// zone (peers/<zone>/cert.pem). No CA, no names, no session resumption.
#pragma once

#include <openssl/ssl.h>

#include <filesystem>
#include <memory>
#include <string>

namespace aerie::air {

struct SslCtxFree {
    void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
struct SslFree {
    void operator()(SSL* s) const { SSL_free(s); }
};
using SslCtxPtr = std::unique_ptr<SSL_CTX, SslCtxFree>;
using SslPtr = std::unique_ptr<SSL, SslFree>;

// A context with the relay's identity (home/tls/key.pem, cert.pem), for
// either side of a handshake. Throws AirError naming what is missing.
SslCtxPtr make_tls_context(const std::filesystem::path& home, bool server);

// A connection over `bio` (taken over) that accepts only a peer presenting
// `pinned_der`, which must outlive the SSL object. Throws AirError.
SslPtr make_tls_connection(SSL_CTX* ctx, BIO* bio, bool server, const std::string* pinned_der);

// Whether the handshake failed on the pin (the peer's certificate was not
// the pinned one), so the caller can say so plainly.
bool tls_pin_refused(SSL* ssl);

// The DER bytes of the certificate in a PEM file; throws AirError.
std::string read_cert_der(const std::filesystem::path& pem_file);

// The text of OpenSSL's last error (and clears the queue); `fallback` when none.
std::string tls_error_text(const std::string& fallback);

}  // namespace aerie::air
