// What the qrexec daemon does to the fields of a service request from a qube
// before anything else sees them (Qubes' rules): bytes outside the allowed
// set become '_' in the service name and target; an ident must already be
// clean; the service must be non-empty and must not start with '+'.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "qrexec/protocol.hpp"

namespace aerie::qrexec {

// Replaces every byte outside [A-Za-z0-9_.-] and `extra` by '_'.
std::string sanitize_name(std::string_view untrusted, std::string_view extra);

// A service request after sanitising: the only form the daemon acts on.
struct ServiceRequest {
    std::string service_and_arg;           // "SERVICE+ARG" or "SERVICE"
    std::string target;                    // target as requested
    std::string ident;                     // request id, echoed in SERVICE_CONNECT/REFUSED
    std::optional<std::string> requested_source;  // v4 source_domain, if non-empty
};

// Sanitises a decoded trigger; returns nullopt (with *why set) if it must be
// refused outright.
std::optional<ServiceRequest> sanitize_trigger(const TriggerService& untrusted, std::string* why);

}  // namespace aerie::qrexec
