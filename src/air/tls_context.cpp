#include "air/tls_context.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <cstdio>

#include "air/fd_message.hpp"

namespace aerie::air {

namespace fs = std::filesystem;

namespace {

// SSL ex_data slots: the pinned DER, and whether the pin refused the peer.
int pin_index() {
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}
int refused_index() {
    static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
    return index;
}

// Replaces OpenSSL's chain verification: the peer's leaf certificate must be
// the pinned one. The handshake proves the peer holds its key.
int verify_pinned(X509_STORE_CTX* store, void*) {
    auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    auto* pinned = ssl ? static_cast<const std::string*>(SSL_get_ex_data(ssl, pin_index())) : nullptr;
    X509* leaf = X509_STORE_CTX_get0_cert(store);
    bool match = false;
    if (pinned && leaf) {
        unsigned char* der = nullptr;
        int len = i2d_X509(leaf, &der);
        match = len > 0 && static_cast<size_t>(len) == pinned->size() && pinned->compare(0, pinned->size(),
                                                                                         reinterpret_cast<char*>(der),
                                                                                         static_cast<size_t>(len)) == 0;
        OPENSSL_free(der);
    }
    if (!match) {
        if (ssl) SSL_set_ex_data(ssl, refused_index(), reinterpret_cast<void*>(1));
        X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
    }
    return match ? 1 : 0;
}

}  // namespace

std::string tls_error_text(const std::string& fallback) {
    unsigned long code = ERR_get_error();
    std::string text = fallback;
    if (code) {
        char buf[256];
        ERR_error_string_n(code, buf, sizeof buf);
        // "error:0A000412:SSL routines::sslv3 alert bad certificate": the reason is the last field.
        std::string all(buf);
        auto colon = all.rfind(':');
        text = colon == std::string::npos ? all : all.substr(colon + 1);
    }
    ERR_clear_error();
    return text;
}

SslCtxPtr make_tls_context(const fs::path& home, bool server) {
    SslCtxPtr ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()));
    if (!ctx) throw AirError("TLS: " + tls_error_text("no context"));
    SSL_CTX* c = ctx.get();
    SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(c, TLS1_3_VERSION);
    // AES-GCM where the CPU has AES instructions, else ChaCha20 (the server picks).
    SSL_CTX_set_ciphersuites(c, "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256");
    SSL_CTX_set1_groups_list(c, "X25519:P-256");
    SSL_CTX_set_options(c, SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_num_tickets(c, 0);
    SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
    // Writes may go out in part and be retried from a buffer that moved.
    SSL_CTX_set_mode(c, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    // No read-ahead: the wire BIO (tls_wire.hpp) buffers, and OpenSSL would
    // move what is left in its own buffer to the front at every record.
    SSL_CTX_set_read_ahead(c, 0);
    fs::path key = home / "tls" / "key.pem", cert = home / "tls" / "cert.pem";
    if (SSL_CTX_use_certificate_file(c, cert.c_str(), SSL_FILETYPE_PEM) != 1)
        throw AirError("this relay's certificate " + cert.string() + ": " + tls_error_text("unreadable"));
    if (SSL_CTX_use_PrivateKey_file(c, key.c_str(), SSL_FILETYPE_PEM) != 1)
        throw AirError("this relay's key " + key.string() + ": " + tls_error_text("unreadable"));
    if (SSL_CTX_check_private_key(c) != 1) throw AirError("this relay's key does not match its certificate");
    SSL_CTX_set_verify(c, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    SSL_CTX_set_cert_verify_callback(c, verify_pinned, nullptr);
    return ctx;
}

SslPtr make_tls_connection(SSL_CTX* ctx, BIO* bio, bool server, const std::string* pinned_der) {
    SslPtr ssl(SSL_new(ctx));
    if (!ssl || !bio) {
        BIO_free(bio);
        throw AirError("TLS: " + tls_error_text("no connection"));
    }
    SSL_set_bio(ssl.get(), bio, bio);
    SSL_set_ex_data(ssl.get(), pin_index(), const_cast<std::string*>(pinned_der));
    if (server)
        SSL_set_accept_state(ssl.get());
    else
        SSL_set_connect_state(ssl.get());
    return ssl;
}

bool tls_pin_refused(SSL* ssl) { return SSL_get_ex_data(ssl, refused_index()) != nullptr; }

std::string read_cert_der(const fs::path& pem_file) {
    FILE* f = std::fopen(pem_file.c_str(), "r");
    if (!f) throw AirError("no certificate pinned at " + pem_file.string());
    X509* cert = PEM_read_X509(f, nullptr, nullptr, nullptr);
    std::fclose(f);
    if (!cert) {
        ERR_clear_error();
        throw AirError(pem_file.string() + " holds no certificate");
    }
    unsigned char* der = nullptr;
    int len = i2d_X509(cert, &der);
    X509_free(cert);
    if (len <= 0) throw AirError(pem_file.string() + ": " + tls_error_text("unreadable"));
    std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
    OPENSSL_free(der);
    return out;
}

}  // namespace aerie::air
