#include "air/relay_keys.hpp"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>

#include "air/fd_message.hpp"

namespace aerie::air {

namespace {

template <auto Free>
struct Deleter {
    template <typename T>
    void operator()(T* p) const { Free(p); }
};
using Bio = std::unique_ptr<BIO, Deleter<BIO_free_all>>;
using Key = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using Cert = std::unique_ptr<X509, Deleter<X509_free>>;
using Names = std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES_free>>;
using Ext = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION_free>>;
using Bn = std::unique_ptr<BIGNUM, Deleter<BN_free>>;

[[noreturn]] void fail(const std::string& what) { throw AirError(what + " failed (OpenSSL)"); }

Bio read_bio(std::string_view text) {
    Bio bio(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())));
    if (!bio) fail("BIO_new_mem_buf");
    return bio;
}

std::string drain(BIO* bio) {
    char* data = nullptr;
    long len = BIO_get_mem_data(bio, &data);
    return std::string(data, static_cast<size_t>(len));
}

Cert read_cert(std::string_view pem) {
    Bio bio = read_bio(pem);
    Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) throw AirError("not a PEM certificate");
    return cert;
}

void add_extension(X509* cert, int nid, const char* value) {
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, nullptr, nullptr, 0);
    Ext ext(X509V3_EXT_conf_nid(nullptr, &ctx, nid, value));
    if (!ext || !X509_add_ext(cert, ext.get(), -1)) fail("adding a certificate extension");
}

}  // namespace

std::string new_ed25519_key_pem() {
    Key key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
    if (!key) fail("Ed25519 key generation");
    Bio out(BIO_new(BIO_s_mem()));
    if (!out || !PEM_write_bio_PrivateKey(out.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr))
        fail("writing the key");
    return drain(out.get());
}

std::string self_signed_cert_pem(std::string_view key_pem, std::string_view zone,
                                 const std::vector<std::string>& names, int days) {
    Bio in = read_bio(key_pem);
    Key key(PEM_read_bio_PrivateKey(in.get(), nullptr, nullptr, nullptr));
    if (!key) throw AirError("not a PEM private key");
    Cert cert(X509_new());
    if (!cert || !X509_set_version(cert.get(), 2)) fail("X509_new");
    // A random positive 127-bit serial.
    unsigned char serial[16];
    if (RAND_bytes(serial, sizeof serial) != 1) fail("RAND_bytes");
    serial[0] &= 0x7f;
    Bn bn(BN_bin2bn(serial, sizeof serial, nullptr));
    if (!bn || !BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get()))) fail("setting the serial");
    if (!X509_gmtime_adj(X509_getm_notBefore(cert.get()), -300) ||
        !X509_time_adj_ex(X509_getm_notAfter(cert.get()), days, 0, nullptr))
        fail("setting the validity");
    std::string cn = "aerie-air " + std::string(zone);
    X509_NAME* subject = X509_get_subject_name(cert.get());
    if (!X509_NAME_add_entry_by_txt(subject, "CN", MBSTRING_UTF8, reinterpret_cast<const unsigned char*>(cn.c_str()),
                                    -1, -1, 0) ||
        !X509_set_issuer_name(cert.get(), subject) || !X509_set_pubkey(cert.get(), key.get()))
        fail("setting the names");
    add_extension(cert.get(), NID_basic_constraints, "critical,CA:FALSE");
    add_extension(cert.get(), NID_key_usage, "critical,digitalSignature");
    add_extension(cert.get(), NID_ext_key_usage, "serverAuth,clientAuth");
    if (!names.empty()) {
        std::string san;
        for (const auto& name : names) san += (san.empty() ? "URI:qube:" : ",URI:qube:") + name;
        add_extension(cert.get(), NID_subject_alt_name, san.c_str());
    }
    if (!X509_sign(cert.get(), key.get(), nullptr)) fail("signing the certificate");  // Ed25519: no digest
    Bio out(BIO_new(BIO_s_mem()));
    if (!out || !PEM_write_bio_X509(out.get(), cert.get())) fail("writing the certificate");
    return drain(out.get());
}

std::vector<std::string> cert_qube_names(std::string_view cert_pem) {
    Cert cert = read_cert(cert_pem);
    std::vector<std::string> out;
    Names names(static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr)));
    if (!names) return out;
    for (int i = 0; i < sk_GENERAL_NAME_num(names.get()); ++i) {
        const GENERAL_NAME* name = sk_GENERAL_NAME_value(names.get(), i);
        if (name->type != GEN_URI) continue;
        const ASN1_IA5STRING* uri = name->d.uniformResourceIdentifier;
        std::string text(reinterpret_cast<const char*>(ASN1_STRING_get0_data(uri)),
                         static_cast<size_t>(ASN1_STRING_length(uri)));
        if (text.starts_with("qube:")) out.push_back(text.substr(5));
    }
    return out;
}

}  // namespace aerie::air
