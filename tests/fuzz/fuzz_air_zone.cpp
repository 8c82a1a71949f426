// The zone description another host sends when pairing (air/zone.hpp):
// any bytes are read or refused with a ZoneError, never more; what is read
// formats to text that reads back the same.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "air/zone.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace aerie::air;
    std::string_view text(reinterpret_cast<const char*>(data), size);
    Zone zone;
    try {
        zone = parse_zone(text);
    } catch (const ZoneError&) {
        return 0;
    }
    Zone again = parse_zone(format_zone(zone));  // a refusal here is a bug: it escapes and aborts
    if (again.name != zone.name || again.address != zone.address || again.transport != zone.transport ||
        again.tls_cert != zone.tls_cert || again.ssh_key != zone.ssh_key || again.ssh_host_key != zone.ssh_host_key ||
        again.qubes.size() != zone.qubes.size())
        std::abort();
    for (size_t i = 0; i < zone.qubes.size(); ++i)
        if (again.qubes[i].name != zone.qubes[i].name || again.qubes[i].label != zone.qubes[i].label) std::abort();
    return 0;
}
