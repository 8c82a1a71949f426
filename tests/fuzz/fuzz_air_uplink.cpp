// The uplink's lines (air/uplink.hpp): a relay's request read by aeried, a
// peer host's preamble, an accept read by a relay. Any bytes are read or
// refused with an AirError, never more; what is read formats back to the
// same line.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "air/uplink.hpp"

namespace {

using namespace aerie::air;

// The formatted line without its '\n' must be the input, byte for byte.
void same(std::string_view formatted, std::string_view input) {
    if (formatted.empty() || formatted.back() != '\n' || formatted.substr(0, formatted.size() - 1) != input)
        std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view line(reinterpret_cast<const char*>(data), size);
    try {
        UplinkRequest r = parse_uplink_request(line);
        same(r.kind == UplinkRequest::Kind::Listen ? std::string(kListen) : format_connect(r.zone), line);
    } catch (const AirError&) {
    }
    try {
        same(format_preamble(parse_preamble(line)), line);
    } catch (const AirError&) {
    }
    try {
        same(format_accept(parse_accept(line)), line);
    } catch (const AirError&) {
    }
    try {
        expect_ok(line);
    } catch (const AirError&) {
    }
    // An error line always fits one message and carries no control byte.
    std::string error = format_error(line);
    if (error.size() > kMaxMessage || error.back() != '\n') std::abort();
    for (size_t i = 0; i + 1 < error.size(); ++i)
        if (static_cast<unsigned char>(error[i]) < 0x20 || error[i] == 0x7f) std::abort();
    return 0;
}
