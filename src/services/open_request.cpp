#include "services/open_request.hpp"

namespace aerie::services {

namespace {

bool kept_as_is(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-' || c == '+' || c == '@';
}

template <typename T>
std::optional<T> fail(std::string* error, const char* text) {
    if (error) *error = text;
    return std::nullopt;
}

}  // namespace

std::string encode_open_name_block(std::string_view path, bool view_only) {
    std::string block;
    if (view_only) block = kViewOnlyPrefix;
    size_t slash = path.rfind('/');
    std::string_view base = slash == std::string_view::npos ? path : path.substr(slash + 1);
    size_t room = kOpenNameBlockSize - 1 - block.size();
    if (base.size() > room) base = base.substr(base.size() - room);  // keeps the end: the extension
    block += base;
    block.resize(kOpenNameBlockSize, '\0');
    return block;
}

std::optional<OpenFileName> parse_open_name_block(std::string_view block, std::string* error) {
    if (block.size() != kOpenNameBlockSize)
        return fail<OpenFileName>(error, "the file name block is not 256 bytes");
    std::string_view name = block.substr(0, kOpenNameBlockSize - 1);
    name = name.substr(0, name.find('\0'));
    OpenFileName out;
    if (name.substr(0, kViewOnlyPrefix.size()) == kViewOnlyPrefix) {
        out.view_only = true;
        name.remove_prefix(kViewOnlyPrefix.size());
    }
    for (char c : name) {
        if (c == '/') return fail<OpenFileName>(error, "the file name contains '/'");
        out.name += kept_as_is(c) ? c : '_';
    }
    if (out.name.empty()) return fail<OpenFileName>(error, "the file name is empty");
    if (out.name == "." || out.name == "..") return fail<OpenFileName>(error, "the file name is '.' or '..'");
    return out;
}

std::optional<std::string> parse_open_url_line(std::string_view line, std::string* error) {
    if (line.size() > kMaxUrlLine) return fail<std::string>(error, "Invalid URL: longer than 65536 bytes");
    auto blank = [](char c) { return c == ' ' || c == '\t'; };
    while (!line.empty() && blank(line.front())) line.remove_prefix(1);
    while (!line.empty() && blank(line.back())) line.remove_suffix(1);
    for (char c : line) {
        auto b = static_cast<unsigned char>(c);
        if (b < 0x20 || b == 0x7f)
            return fail<std::string>(error, "Invalid URL: it contains a control character");
    }
    for (std::string_view scheme : {"http://", "https://", "ftp://"})
        if (line.substr(0, scheme.size()) == scheme) return std::string(line);
    return fail<std::string>(error, "Invalid URL: only http://, https:// and ftp:// URLs are opened");
}

bool usable_source_name(std::string_view name) {
    return !name.empty() && name.find('/') == std::string_view::npos && name != "." && name != "..";
}

}  // namespace aerie::services
