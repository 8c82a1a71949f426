#include "admin/qube.hpp"

#include <algorithm>

namespace aerie::admin {

bool is_qube_class(std::string_view name) {
    return std::find(std::begin(kQubeClasses), std::end(kQubeClasses), name) != std::end(kQubeClasses);
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
