// aerie-air-relay tls-proxy LOCAL+SVC[+ARG]: what qubesair.TLSProxy does
// (aerie-air-call, the service itself, is the same without OpenSSL to load).
#include "air/fd_message.hpp"
#include "air/relay_command.hpp"
#include "air/tls_proxy.hpp"

namespace aerie::air {

namespace {

int tls_proxy(const std::vector<std::string>& args) {
    if (args.size() != 1) throw AirError("usage: aerie-air-relay tls-proxy LOCAL+SERVICE[+ARG]");
    return run_tls_proxy(args[0]);
}

const RelayCommandRegistration registration("tls-proxy", "LOCAL+SERVICE[+ARG]", tls_proxy);

}  // namespace

}  // namespace aerie::air
