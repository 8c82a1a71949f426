#include "qrexec/sanitize.hpp"

namespace aerie::qrexec {

namespace {

bool base_allowed(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-' || c == '.';
}

}  // namespace

std::string sanitize_name(std::string_view untrusted, std::string_view extra) {
    std::string out(untrusted);
    for (char& ch : out) {
        auto c = static_cast<unsigned char>(ch);
        if (!base_allowed(c) && extra.find(ch) == std::string_view::npos) ch = '_';
    }
    return out;
}

std::optional<ServiceRequest> sanitize_trigger(const TriggerService& t, std::string* why) {
    for (char ch : t.ident) {
        auto c = static_cast<unsigned char>(ch);
        if (!base_allowed(c) && ch != ' ') {
            *why = "invalid character in request ident";
            return std::nullopt;
        }
    }
    ServiceRequest r;
    r.ident = t.ident;
    r.service_and_arg = sanitize_name(t.service_name, "+");
    r.target = sanitize_name(t.target_domain, "@:");
    if (t.source_domain && !t.source_domain->empty())
        r.requested_source = sanitize_name(*t.source_domain, "@:");
    if (r.service_and_arg.empty() || r.service_and_arg[0] == '+') {
        *why = "empty service name";
        return std::nullopt;
    }
    return r;
}

}  // namespace aerie::qrexec
