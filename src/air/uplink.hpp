// The uplink protocol's words (docs/air.md): parsed once, here, into typed
// values; both aeried and the relay use these.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "air/fd_message.hpp"

namespace aerie::air {

enum class Transport { Tls, Ssh };
std::string_view transport_word(Transport t);           // "tls" / "ssh"
std::optional<Transport> parse_transport(std::string_view word);

// relay -> aeried
struct UplinkRequest {
    enum class Kind { Connect, Listen } kind;
    std::string zone;  // Connect only
};
UplinkRequest parse_uplink_request(std::string_view line);  // throws AirError naming what is wrong
std::string format_connect(std::string_view zone);          // "connect ZONE\n"
inline constexpr std::string_view kListen = "listen\n";

// aeried -> relay
std::string format_ok();                                 // "ok\n"
std::string format_error(std::string_view reason);       // "error REASON\n" (reason's control bytes become '?')
// Throws AirError("REASON") for an error line, AirError for anything but "ok".
void expect_ok(std::string_view line);

struct Accept {
    std::string zone;
    Transport transport;
};
std::string format_accept(const Accept& a);              // "accept ZONE TRANSPORT\n"
Accept parse_accept(std::string_view line);              // throws AirError

// The first line on a connection between hosts.
struct Preamble {
    std::string from_zone;
    Transport transport;
};
inline constexpr size_t kMaxPreamble = 128;
std::string format_preamble(const Preamble& p);          // "aerie-air/1 ZONE TRANSPORT\n"
Preamble parse_preamble(std::string_view line);           // without '\n'; throws AirError

}  // namespace aerie::air
