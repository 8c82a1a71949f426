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

std::string invalid_qube_name_reason(std::string_view name) {
    if (name.size() > 31) return "name value must be shorter than 32 characters";
    auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
    auto rest = [&](char c) { return letter(c) || (c >= '0' && c <= '9') || c == '_' || c == '-'; };
    if (name.empty() || !letter(name.front()) || !std::all_of(name.begin(), name.end(), rest))
        return "VM name contains illegal characters";
    if (name == "none" || name == "default") return "VM name cannot be 'none' nor 'default'";
    if (name == "Domain-0") return "VM name cannot be 'Domain-0'";
    if (name.size() >= 3 && name.substr(name.size() - 3) == "-dm") return "VM name cannot end with '-dm'";
    return {};
}

bool is_valid_tag(std::string_view tag) {
    auto ok = [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    };
    return !tag.empty() && std::all_of(tag.begin(), tag.end(), ok);
}

}  // namespace aerie::admin
