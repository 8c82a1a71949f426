#include "services/connect_tcp_args.hpp"

namespace aerie::services {

std::optional<uint16_t> parse_port(std::string_view text) {
    if (text.empty() || text.size() > 5 || text[0] == '0') return std::nullopt;
    unsigned value = 0;
    for (char c : text) {
        if (c < '0' || c > '9') return std::nullopt;
        value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value > 65535) return std::nullopt;
    return static_cast<uint16_t>(value);
}

std::optional<ConnectTcpArgs> parse_connect_tcp_args(std::string_view arg, std::string* error) {
    // Fields as `cut -d: -f1`, `-f2`, `-f3`: more colons are ignored, a
    // missing field is empty.
    std::string_view fields[3];
    size_t start = 0;
    for (int i = 0; i < 3 && start <= arg.size(); ++i) {
        size_t end = arg.find(':', start);
        if (end == std::string_view::npos) end = arg.size();
        fields[i] = arg.substr(start, end - start);
        start = end + 1;
    }
    if (arg.find(':') == std::string_view::npos) fields[1] = fields[2] = {};  // no ':', no PORT
    auto fail = [&](const char* text) {
        if (error) *error = text;
        return std::nullopt;
    };
    if (fields[2].empty()) return fail("Please provide PORT");
    auto port = parse_port(fields[2]);
    auto local = fields[0].empty() ? port : parse_port(fields[0]);
    if (!port || !local) return fail("Invalid port provided");
    return ConnectTcpArgs{*local, std::string(fields[1]), *port};
}

}  // namespace aerie::services
