#include "policy/text.hpp"

#include <fmt/format.h>

namespace aerie::policy::text {

std::vector<std::string_view> split_lines(std::string_view data) {
    std::vector<std::string_view> lines;
    size_t start = 0;
    for (size_t i = 0; i < data.size(); ++i) {
        char c = data[i];
        if (c == '\n' || c == '\r') {
            lines.push_back(data.substr(start, i - start));
            if (c == '\r' && i + 1 < data.size() && data[i + 1] == '\n') ++i;
            start = i + 1;
        }
    }
    if (start < data.size()) lines.push_back(data.substr(start));
    return lines;
}

namespace {

// Length in bytes of the whitespace character starting at s[i], or 0.
size_t whitespace_at(std::string_view s, size_t i) {
    auto b = static_cast<unsigned char>(s[i]);
    if (b == ' ' || (b >= 0x09 && b <= 0x0d) || (b >= 0x1c && b <= 0x1f)) return 1;
    if (b < 0xc2) return 0;
    auto at = [&](size_t k) -> unsigned {
        return i + k < s.size() ? static_cast<unsigned char>(s[i + k]) : 0u;
    };
    if (b == 0xc2 && (at(1) == 0x85 || at(1) == 0xa0)) return 2;  // U+0085, U+00A0
    if (b == 0xe1 && at(1) == 0x9a && at(2) == 0x80) return 3;    // U+1680
    if (b == 0xe2 && at(1) == 0x80) {
        unsigned c = at(2);
        // U+2000..U+200A, U+2028, U+2029, U+202F
        if ((c >= 0x80 && c <= 0x8a) || c == 0xa8 || c == 0xa9 || c == 0xaf) return 3;
    }
    if (b == 0xe2 && at(1) == 0x81 && at(2) == 0x9f) return 3;  // U+205F
    if (b == 0xe3 && at(1) == 0x80 && at(2) == 0x80) return 3;  // U+3000
    return 0;
}

// Whitespace that ends at s[end-1], scanning backwards; length or 0.
size_t whitespace_before(std::string_view s, size_t end) {
    for (size_t len = 1; len <= 3 && len <= end; ++len) {
        size_t w = whitespace_at(s, end - len);
        if (w == len) return len;
    }
    return 0;
}

}  // namespace

std::string_view strip(std::string_view s) {
    size_t begin = 0;
    while (begin < s.size()) {
        size_t w = whitespace_at(s, begin);
        if (w == 0) break;
        begin += w;
    }
    size_t end = s.size();
    while (end > begin) {
        size_t w = whitespace_before(s, end);
        if (w == 0) break;
        end -= w;
    }
    return s.substr(begin, end - begin);
}

std::vector<std::string_view> split_fields(std::string_view s) {
    std::vector<std::string_view> fields;
    size_t i = 0;
    while (i < s.size()) {
        size_t w = whitespace_at(s, i);
        if (w) {
            i += w;
            continue;
        }
        size_t start = i;
        while (i < s.size() && whitespace_at(s, i) == 0) ++i;
        fields.push_back(s.substr(start, i - start));
    }
    return fields;
}

namespace {

// Decodes the UTF-8 sequence at s[i] into *cp; returns its length in bytes,
// or 0 if it is not well-formed (overlong, surrogate, > U+10FFFF, truncated).
size_t decode_utf8(std::string_view s, size_t i, char32_t* cp) {
    auto b = static_cast<unsigned char>(s[i]);
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    size_t n;
    char32_t c;
    if (b >= 0xc2 && b <= 0xdf) {
        n = 1;
        c = b & 0x1f;
    } else if (b >= 0xe0 && b <= 0xef) {
        n = 2;
        c = b & 0x0f;
    } else if (b >= 0xf0 && b <= 0xf4) {
        n = 3;
        c = b & 0x07;
    } else {
        return 0;
    }
    if (i + n >= s.size()) return 0;  // truncated sequence
    for (size_t k = 1; k <= n; ++k) {
        auto cont = static_cast<unsigned char>(s[i + k]);
        if ((cont & 0xc0) != 0x80) return 0;
        c = (c << 6) | (cont & 0x3f);
    }
    if ((n == 2 && c < 0x800) || (n == 3 && c < 0x10000) || c > 0x10ffff ||
        (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return n + 1;
}

// Python's str.isprintable() for a code point above U+007F: false for the
// categories Cc, Cf, Co, Zs, Zl, Zp and for noncharacters. (Code points that
// are merely unassigned in some Unicode version count as printable here.)
bool is_printable(char32_t c) {
    struct Range {
        char32_t first, last;
    };
    static constexpr Range kNotPrintable[] = {
        {0x80, 0xa0},       {0xad, 0xad},       {0x600, 0x605},     {0x61c, 0x61c},
        {0x6dd, 0x6dd},     {0x70f, 0x70f},     {0x890, 0x891},     {0x8e2, 0x8e2},
        {0x1680, 0x1680},   {0x180e, 0x180e},   {0x2000, 0x200f},   {0x2028, 0x202f},
        {0x205f, 0x2064},   {0x2066, 0x206f},   {0x3000, 0x3000},   {0xe000, 0xf8ff},
        {0xfdd0, 0xfdef},   {0xfeff, 0xfeff},   {0xfff9, 0xfffb},   {0x110bd, 0x110bd},
        {0x110cd, 0x110cd}, {0x13430, 0x1343f}, {0x1bca0, 0x1bca3}, {0x1d173, 0x1d17a},
        {0xe0001, 0xe0001}, {0xe0020, 0xe007f}, {0xf0000, 0x10ffff},
    };
    if ((c & 0xfffe) == 0xfffe) return false;  // U+xxFFFE, U+xxFFFF
    for (const Range& r : kNotPrintable) {
        if (c < r.first) return true;
        if (c <= r.last) return false;
    }
    return true;
}

}  // namespace

bool is_valid_utf8(std::string_view s) {
    for (size_t i = 0; i < s.size();) {
        char32_t cp;
        size_t n = decode_utf8(s, i, &cp);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

std::string py_repr(std::string_view s) {
    bool has_single = s.find('\'') != std::string_view::npos;
    bool has_double = s.find('"') != std::string_view::npos;
    char quote = (has_single && !has_double) ? '"' : '\'';
    std::string out;
    out.reserve(s.size() + 2);
    out += quote;
    for (size_t i = 0; i < s.size();) {
        char ch = s[i];
        auto c = static_cast<unsigned char>(ch);
        if (c >= 0x80) {
            char32_t cp;
            size_t n = decode_utf8(s, i, &cp);
            if (n == 0) {
                out += fmt::format("\\x{:02x}", c);  // not text: show the byte
                ++i;
            } else if (is_printable(cp)) {
                out.append(s.substr(i, n));
                i += n;
            } else {
                out += cp <= 0xff     ? fmt::format("\\x{:02x}", static_cast<unsigned>(cp))
                       : cp <= 0xffff ? fmt::format("\\u{:04x}", static_cast<unsigned>(cp))
                                      : fmt::format("\\U{:08x}", static_cast<unsigned>(cp));
                i += n;
            }
            continue;
        }
        if (ch == quote || ch == '\\') {
            out += '\\';
            out += ch;
        } else if (ch == '\n') {
            out += "\\n";
        } else if (ch == '\r') {
            out += "\\r";
        } else if (ch == '\t') {
            out += "\\t";
        } else if (c < 0x20 || c == 0x7f) {
            out += fmt::format("\\x{:02x}", c);
        } else {
            out += ch;
        }
        ++i;
    }
    out += quote;
    return out;
}

std::string py_repr_char_tuple(const std::vector<std::string>& chars) {
    std::string out = "(";
    for (size_t i = 0; i < chars.size(); ++i) {
        if (i) out += ", ";
        out += py_repr(chars[i]);
    }
    if (chars.size() == 1) out += ",";
    out += ")";
    return out;
}

std::string py_repr_list(const std::vector<std::string_view>& items) {
    std::string out = "[";
    for (size_t i = 0; i < items.size(); ++i) {
        if (i) out += ", ";
        out += py_repr(items[i]);
    }
    out += "]";
    return out;
}

}  // namespace aerie::policy::text
