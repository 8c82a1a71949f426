// Fuzzes the admin daemon's request parser (bytes from any local client or,
// through qrexec, from a qube) and the client's reply parser.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "admin/wire.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
    std::string_view data(reinterpret_cast<const char*>(bytes), size);
    if (auto r = aerie::admin::parse_request(data)) {
        // A parsed request encodes back to a request that parses the same.
        auto again = aerie::admin::parse_request(aerie::admin::encode_request(*r));
        if (!again || again->method != r->method || again->arg != r->arg || again->dest != r->dest ||
            again->payload != r->payload)
            std::abort();
    }
    (void)aerie::admin::parse_reply(data);
    return 0;
}
