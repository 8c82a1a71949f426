// The relay's side of the uplink (docs/air.md): ask the host for a
// connection to a peer zone, or listen for the peers' connections.
#pragma once

#include <optional>
#include <string_view>

#include "air/layout.hpp"
#include "air/uplink.hpp"

namespace aerie::air {

// A TCP socket connected to `zone`'s host with the preamble (from
// `own_zone`, `transport`) already written. Throws AirError with the host's
// reason ("no relay route to zone b", "connection refused", ...).
qrexec::UniqueFd uplink_connect(std::string_view zone, std::string_view own_zone, Transport transport,
                                std::string_view uplink_socket = kUplinkSocket);

// Registered as this relay's listener; next() blocks for the next accepted
// connection, std::nullopt when the host closed the uplink.
class UplinkListener {
public:
    explicit UplinkListener(std::string_view uplink_socket = kUplinkSocket);
    int fd() const { return sock_.get(); }  // readable when an accept is due
    struct Accepted {
        Accept what;
        qrexec::UniqueFd sock;
    };
    std::optional<Accepted> next();

private:
    qrexec::UniqueFd sock_;
};

}  // namespace aerie::air
