// The client side of a qrexec daemon's socket (<socket-dir>/qrexec.<qube>),
// as qrexec-client and another qube's daemon speak it: the daemon says HELLO
// (client protocol 3) first, the client answers, sends one request
// (EXEC_CMDLINE, JUST_EXEC or SERVICE_CONNECT) and, when it left the port to
// the daemon, reads the data port the daemon chose.
//
// Aerie's extension, which an upstream peer never sees: a client may attach
// one end of a fresh socketpair to its request (SCM_RIGHTS), offering it as
// the call's data channel. An Aerie daemon that hands that end to its agent
// says so by attaching a descriptor to its reply (it carries no meaning and
// is closed at once). A reply without one (an upstream daemon, which drops
// what it was offered) means the channel is the vchan socket of the chosen
// port, as Qubes connects it. See docs/architecture.md.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "qrexec/protocol.hpp"
#include "qrexec/unique_fd.hpp"

namespace aerie::qrexec {

// Connects to <socket_dir>/qrexec.<qube> (retrying while it is missing,
// until `timeout`) and does the client handshake. On failure returns an
// invalid fd and sets *why.
UniqueFd connect_daemon_socket(const std::string& socket_dir, const std::string& qube,
                               std::chrono::milliseconds timeout, std::string* why);

struct DataPortGrant {
    uint32_t domain = 0;  // the daemon's qube
    uint32_t port = 0;
    bool channel_taken = false;  // the daemon accepted the offered channel end
};

// Sends `type` with connect_domain, port 0 and `body` (the command line with
// its NUL, or the 32-byte ident), offering `offered` (-1: none), and reads
// the daemon's answer: the same message type with (domain, port).
std::optional<DataPortGrant> request_data_port(int daemon, MsgType type, uint32_t connect_domain,
                                               std::string_view body, int offered, std::string* why);

// The ident field of SERVICE_CONNECT: `ident` NUL-padded to 32 bytes
// (truncated to 31 as Qubes does).
std::string ident_field(std::string_view ident);

}  // namespace aerie::qrexec
