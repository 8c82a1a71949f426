// The policy engine's view of the qubes, fetched live from the admin daemon:
// internal.GetSystemInfo on its internal socket (qubesd framing), as Qubes'
// policy daemon does for every request.
#pragma once

#include <chrono>
#include <string>

namespace aerie::qrexec {

// $QUBESD_INTERNAL_SOCKET, else /var/run/qubesd.internal.sock.
std::string default_internal_socket();

// The JSON text of the system info. Throws std::runtime_error naming the
// socket and what went wrong (no daemon, refused, timeout, an exception).
std::string fetch_system_info_json(const std::string& socket_path,
                                   std::chrono::milliseconds timeout = std::chrono::seconds(5));

}  // namespace aerie::qrexec
