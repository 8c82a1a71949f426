// What a caller sends to qubes.OpenInVM (the 256-byte name block) and
// qubes.OpenURL (one line) (services/open_request.hpp): any bytes are read
// or refused, never more; a name read is a plain file name made only of the
// bytes kept, and re-encoding it reads back the same; a URL read has no
// control character and an allowed scheme.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "services/open_request.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace aerie::services;
    std::string_view input(reinterpret_cast<const char*>(data), size);

    std::string block(input.substr(0, kOpenNameBlockSize));
    if (size >= 1 && (data[0] & 1)) block.resize(kOpenNameBlockSize, '\0');
    if (auto name = parse_open_name_block(block)) {
        if (name->name.empty() || name->name == "." || name->name == ".." ||
            name->name.size() >= kOpenNameBlockSize)
            std::abort();
        for (char c : name->name)
            if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == '-' || c == '+' || c == '@'))
                std::abort();
        auto again = parse_open_name_block(encode_open_name_block(name->name, name->view_only));
        if (!again || again->name != name->name || again->view_only != name->view_only) std::abort();
    }

    if (auto url = parse_open_url_line(input)) {
        if (url->size() > kMaxUrlLine) std::abort();
        for (unsigned char c : *url)
            if (c < 0x20 || c == 0x7f) std::abort();
        if (url->rfind("http://", 0) != 0 && url->rfind("https://", 0) != 0 && url->rfind("ftp://", 0) != 0)
            std::abort();
    }
    return 0;
}
