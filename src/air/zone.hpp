// A zone description: what one host tells another when they pair (Qubes Air
// without aliasing by hand). It names the zone, where its relay can be
// reached, the qrexec service that carries calls there, the qubes it
// exports and its relay's keys. `qvm-air export` writes one, `qvm-air pair`
// reads the peer's, registers each exported qube as a RemoteVM and has the
// relay trust the keys. A zone file comes from another host: it is parsed
// here, once, into checked values.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace aerie::air {

struct ZoneError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

struct ExportedQube {
    std::string name;   // its name in the exporting zone
    std::string label;  // shown on the other side
};

struct Zone {
    std::string name;       // [a-z0-9][a-z0-9-]*, at most 31
    std::string address;    // where the zone's relay is reached (host or host:port), informational here
    std::string transport;  // the relay's qrexec service, e.g. qubesair.SSHProxy
    std::vector<ExportedQube> qubes;
    // The zone relay's credentials (qvm-air export --relay), pinned by the
    // peer's relay at pairing; empty in zone files from before them.
    std::string tls_cert;      // PEM, one CERTIFICATE block
    std::string ssh_key;       // its ssh client key: "ssh-ed25519 BASE64 [COMMENT]"
    std::string ssh_host_key;  // the host key of its sshd, same form
    bool has_credentials() const { return !tls_cert.empty() && !ssh_key.empty() && !ssh_host_key.empty(); }
};

// Throws ZoneError naming what is wrong.
Zone parse_zone(std::string_view json_text);
std::string format_zone(const Zone& zone);

// The rules, for the tool's own arguments too ("" when fine, else why).
std::string invalid_zone_name(std::string_view name);
std::string invalid_transport(std::string_view service);
std::string invalid_tls_cert(std::string_view pem);
std::string invalid_ssh_key(std::string_view line);

// The features by which a RemoteVM made by pairing is known again.
inline constexpr std::string_view kZoneFeature = "air-zone";
inline constexpr std::string_view kAddressFeature = "air-address";

}  // namespace aerie::air
