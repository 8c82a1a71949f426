// aerie-air-call: the qubesair.TLSProxy service of a relay qube (docs/air.md).
// A call costs a process start, so this is aerie-air-relay's tls-proxy
// alone, without OpenSSL and the C++ runtime to load: the TLS link is the
// serve daemon's. The argument is LOCAL+SVC[+ARG] (argv[1], else
// $QREXEC_SERVICE_ARGUMENT).
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include "air/tls_proxy.hpp"

int main(int argc, char** argv) {
    const char* argument = argc > 1 ? argv[1] : std::getenv("QREXEC_SERVICE_ARGUMENT");
    try {
        return aerie::air::run_tls_proxy(argument ? argument : "");
    } catch (const std::exception& e) {
        std::fprintf(stderr, "aerie-air: %s\n", e.what());
        return 1;
    }
}
