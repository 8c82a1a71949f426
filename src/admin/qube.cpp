#include "admin/qube.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <random>

namespace aerie::admin {

bool is_qube_class(std::string_view name) {
    return std::find(std::begin(kQubeClasses), std::end(kQubeClasses), name) != std::end(kQubeClasses);
}

std::string new_uuid() {
    std::random_device random;
    unsigned char b[16];
    for (auto& byte : b) byte = static_cast<unsigned char>(random());
    b[6] = (b[6] & 0x0f) | 0x40;  // version 4
    b[8] = (b[8] & 0x3f) | 0x80;  // RFC 4122 variant
    return fmt::format("{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
                       b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
                       b[14], b[15]);
}

NameError qube_name_error(std::string_view name, std::string_view prop) {
    auto fail = [&](std::string with_prop, std::string without) {
        if (prop.empty()) return NameError{"QubesValueError", std::move(without)};
        return NameError{"QubesPropertyValueError", std::string(prop) + std::move(with_prop)};
    };
    auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
    auto digit = [](char c) { return c >= '0' && c <= '9'; };
    auto rest = [&](char c) { return letter(c) || digit(c) || c == '_' || c == '-'; };
    if (name.size() > 31)
        return fail(" value must be shorter than 32 characters", "VM name must be shorter than 32 characters");
    if (!name.empty() && (digit(name[0]) || name[0] == '_' || name[0] == '.' || name[0] == '-'))
        return fail(" cannot start with hyphen, underscore, dot or numbers",
                    "VM name cannot start with hyphen, underscore, dot or numbers");
    if (name.empty() || !letter(name.front()) || !std::all_of(name.begin(), name.end(), rest))
        return fail(" value contains illegal characters", "VM name contains illegal characters");
    if (name == "Domain-0") return {"QubesValueError", "VM name cannot be 'Domain-0'"};
    if (name == "none" || name == "default") return {"QubesValueError", "VM name cannot be 'none' nor 'default'"};
    if (name.size() >= 3 && name.substr(name.size() - 3) == "-dm") return {"QubesValueError", "VM name cannot end with -dm"};
    return {};
}

std::string invalid_qube_name_reason(std::string_view name) { return qube_name_error(name).message; }

bool is_valid_tag(std::string_view tag) {
    auto ok = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    };
    return !tag.empty() && std::all_of(tag.begin(), tag.end(), ok);
}

}  // namespace aerie::admin
