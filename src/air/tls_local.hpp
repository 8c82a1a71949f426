// The local protocol between `aerie-air-relay tls-proxy` (the body of the
// qubesair.TLSProxy service) and the relay's serve daemon, on
// ~/.aerie-air/run/relay.sock:
//
//   tls-proxy -> serve, once, in one sendmsg, with the call's stdin and
//   stdout attached (SCM_RIGHTS, in that order):
//       call ZONE SOURCE TARGET SERVICE\n
//   serve -> tls-proxy, once, when the call is over:
//       exit CODE\n        the remote service ended with CODE
//       reset REASON\n     the call failed (REASON: one printable line)
//
// serve moves the bytes between those two descriptors and the stream itself
// (tls-proxy keeps no copy of them, so the EOFs both ways are serve's), which
// spares a copy of every byte through tls-proxy. tls-proxy closing the
// connection early cancels the call: serve resets the stream.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "qrexec/unique_fd.hpp"

namespace aerie::air {

struct LocalCall {
    std::string zone;
    std::string source;   // the caller's name here
    std::string target;   // the callee's name in `zone`
    std::string service;  // SVC[+ARG]
};

std::filesystem::path relay_socket_path(const std::filesystem::path& home);  // home/run/relay.sock

// Throws AirError (a field empty, holding a space or a control byte, or the
// line over 512 bytes).
void send_call(int sock, const LocalCall& call, int input_fd, int output_fd);

struct ReceivedCall {
    LocalCall call;
    qrexec::UniqueFd input, output;
};
// One recvmsg (the sender sent it in one); throws AirError.
ReceivedCall receive_call(int sock);

std::string format_exit(int code);                // "exit CODE\n"
std::string format_reset(std::string_view why);   // "reset REASON\n", control bytes become '?'

struct CallEnd {
    std::optional<int> exit_code;  // else the call failed with `reason`
    std::string reason;
};
// Throws AirError for anything but the two lines above (without '\n').
CallEnd parse_call_end(std::string_view line);

}  // namespace aerie::air
