// Python's spelling of values in Qubes' messages: repr() of a str, as
// qubesd's exceptions write {!r}. The Admin API's text is ASCII.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace aerie::admin {

inline std::string py_repr(std::string_view text) {
    // Python quotes with ' unless the text holds a ' and no ".
    const bool dq = text.find('\'') != std::string_view::npos && text.find('"') == std::string_view::npos;
    const char quote = dq ? '"' : '\'';
    std::string out(1, quote);
    for (unsigned char c : text) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else if (c == '\r')
            out += "\\r";
        else if (c == '\t')
            out += "\\t";
        else if (c == static_cast<unsigned char>(quote))
            (out += '\\') += quote;
        else if (c < 0x20 || c == 0x7f) {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        } else {
            out += static_cast<char>(c);
        }
    }
    out += quote;
    return out;
}

}  // namespace aerie::admin
