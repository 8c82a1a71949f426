#include "qrexec/agent_request.hpp"

#include <cstdio>

namespace aerie::qrexec {

namespace {

uint32_t get_u32(std::string_view b, size_t at) {
    auto c = [&](size_t i) { return static_cast<uint32_t>(static_cast<unsigned char>(b[at + i])); };
    return c(0) | (c(1) << 8) | (c(2) << 16) | (c(3) << 24);
}

// A fixed-size name field: its last byte counts as NUL (as Qubes forces it),
// the name ends at the first NUL.
std::string_view fixed_name(std::string_view field) {
    field.remove_suffix(1);
    return field.substr(0, field.find('\0'));
}

// The ident is clean: allowed bytes up to a NUL, and only NULs after it.
bool valid_ident(std::string_view field, std::string* ident, std::string* why) {
    for (size_t i = 0; i < field.size(); ++i) {
        auto c = static_cast<unsigned char>(field[i]);
        if ((c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == '-' ||
            c == '.' || c == ' ')
            continue;
        if (c != 0) {
            *why = "bad byte " + std::to_string(c) + " at offset " + std::to_string(i) + " of the request ident";
            return false;
        }
        if (field.find_first_not_of('\0', i) != std::string_view::npos) {
            *why = "a byte other than NUL follows the request ident's terminator";
            return false;
        }
        *ident = std::string(field.substr(0, i));
        return true;
    }
    *why = "the request ident has no NUL terminator";
    return false;
}

// The trailing service name of TRIGGER_SERVICE3/4: NUL-terminated, no other NUL.
bool trailing_name(std::string_view rest, std::string* name, std::string* why) {
    if (rest.back() != '\0') {
        *why = "service name not NUL-terminated";
        return false;
    }
    rest.remove_suffix(1);
    if (size_t nul = rest.find('\0'); nul != std::string_view::npos) {
        *why = "service name contains a NUL byte at offset " + std::to_string(nul);
        return false;
    }
    *name = std::string(rest);
    return true;
}

bool valid_service_name(std::string_view name, std::string* why) {
    if (name.empty()) {
        *why = "empty service name";
        return false;
    }
    if (name[0] == '+') {
        *why = "service name starts with '+'";
        return false;
    }
    return true;
}

AgentViolation violation(uint32_t type, const std::string& what) {
    return AgentViolation{std::string(msg_type_name(type)) + ": " + what};
}

AgentRequest trigger(uint32_t type, std::string_view payload, uint32_t version) {
    const bool v2 = type == static_cast<uint32_t>(MsgType::TriggerService);
    const bool v4 = type == static_cast<uint32_t>(MsgType::TriggerService4);
    if (v2 ? version >= 3 : version < (v4 ? 4u : 3u))
        return violation(type, "not of protocol version " + std::to_string(version));
    const size_t fixed = v2 ? kServiceNameLenV2 + kDomainNameLenV2 + kIdentLen
                            : (v4 ? 2 * kDomainNameLen : kDomainNameLen) + kIdentLen;
    if (v2 ? payload.size() != fixed : payload.size() <= fixed)
        return violation(type, "payload of " + std::to_string(payload.size()) + " bytes");
    if (!v2 && payload.size() - fixed > kMaxServiceNameLen) return violation(type, "service name too long");

    std::string_view service_field, target_field, source_field, ident_field;
    if (v2) {
        service_field = payload.substr(0, kServiceNameLenV2);
        target_field = payload.substr(kServiceNameLenV2, kDomainNameLenV2);
    } else {
        size_t at = 0;
        if (v4) {
            source_field = payload.substr(0, kDomainNameLen);
            at = kDomainNameLen;
        }
        target_field = payload.substr(at, kDomainNameLen);
    }
    ident_field = payload.substr(fixed - kIdentLen, kIdentLen);

    AgentTrigger t;
    std::string why, service;
    if (!valid_ident(ident_field, &t.request.ident, &why)) return AgentRefusal{std::string(ident_field), why};
    if (v2)
        service = std::string(fixed_name(service_field));
    else if (!trailing_name(payload.substr(fixed), &service, &why))
        return AgentRefusal{std::string(ident_field), why};
    if (!valid_service_name(service, &why)) return AgentRefusal{std::string(ident_field), why};
    t.request.service_and_arg = sanitize_name(service, "+");
    t.request.target = sanitize_name(fixed_name(target_field), "@:");
    if (v4) {
        auto source = fixed_name(source_field);
        if (!source.empty()) t.request.requested_source = sanitize_name(source, "@:");
    }
    return t;
}

}  // namespace

AgentRequest classify_agent_message(const Header& h, std::string_view payload, uint32_t version) {
    switch (static_cast<MsgType>(h.type)) {
        case MsgType::TriggerService:
        case MsgType::TriggerService3:
        case MsgType::TriggerService4:
            return trigger(h.type, payload, version);
        case MsgType::ConnectionTerminated: {
            if (payload.size() != 8) return violation(h.type, "payload of " + std::to_string(payload.size()) + " bytes");
            AgentTerminated t{get_u32(payload, 0), get_u32(payload, 4)};
            if (t.port < kFirstDataPort || t.port > kLastDataPort)
                return violation(h.type, "invalid port " + std::to_string(t.port));
            return t;
        }
        default: {
            char buf[32];
            std::snprintf(buf, sizeof buf, "0x%x", h.type);
            return AgentViolation{std::string("unknown message type ") + buf + " from the agent"};
        }
    }
}

std::string encode_service_refused_field(std::string_view ident_field) {
    std::string out = encode_header(MsgType::ServiceRefused, kIdentLen);
    std::string field(ident_field.substr(0, kIdentLen));
    field.resize(kIdentLen, '\0');
    return out + field;
}

}  // namespace aerie::qrexec
