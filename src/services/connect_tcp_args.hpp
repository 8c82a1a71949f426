// qvm-connect-tcp's one argument, "[LOCALPORT]:[VMNAME]:PORT", read as Qubes'
// tool reads it: an empty LOCALPORT is PORT, an empty VMNAME is the
// policy's default target.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace aerie::services {

struct ConnectTcpArgs {
    uint16_t local_port = 0;
    std::string target;  // empty: @default
    uint16_t port = 0;
};

// nullopt with *error: "Please provide PORT" when PORT is missing, "Invalid
// port provided" for a port that is not 1..65535 in decimal (no sign, no
// leading zero: the service side reads it so).
std::optional<ConnectTcpArgs> parse_connect_tcp_args(std::string_view arg, std::string* error = nullptr);

// A decimal port 1..65535 without sign or leading zero.
std::optional<uint16_t> parse_port(std::string_view text);

}  // namespace aerie::services
