// The relay's TLS identity (docs/air.md: tls/key.pem, tls/cert.pem): an
// Ed25519 key and a self-signed certificate naming the exported qubes as
// SAN URIs "qube:<name>". OpenSSL 3; everything is PEM text.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "air/fd_message.hpp"  // AirError

namespace aerie::air {

// A new Ed25519 private key (PKCS#8 PEM). Throws AirError.
std::string new_ed25519_key_pem();

// A self-signed certificate for `key_pem`: CN "aerie-air ZONE", a SAN URI
// "qube:NAME" for each of `names`, valid from now for `days`, a random
// serial. Throws AirError.
std::string self_signed_cert_pem(std::string_view key_pem, std::string_view zone,
                                 const std::vector<std::string>& names, int days = 3650);

// The names in a certificate's "qube:NAME" SAN URIs, in order. Throws
// AirError when `cert_pem` is no certificate.
std::vector<std::string> cert_qube_names(std::string_view cert_pem);

}  // namespace aerie::air
