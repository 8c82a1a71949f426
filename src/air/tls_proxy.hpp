// The body of qubesair.TLSProxy (docs/air.md): the call LOCAL+SVC[+ARG],
// with this process's stdin and stdout, is handed to the relay's serve
// daemon (started if none runs: aerie-air-relay next to this program), and
// the result is the remote service's exit code (air/tls_local.hpp has the
// protocol). Throws AirError naming what failed.
#pragma once

#include <string_view>

namespace aerie::air {

int run_tls_proxy(std::string_view argument);

}  // namespace aerie::air
