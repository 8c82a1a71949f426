// What every Admin API handler gets: the request, the calling qube and the
// destination qube, resolved once before the handler runs.
#pragma once

#include "admin/api.hpp"
#include "admin/api_error.hpp"

namespace aerie::admin {

struct AdminApi::Call {
    const ApiRequest& request;
    Qube* src;
    Qube* dest;
    bool stream = false;  // admin.Events: keep the connection for events
    EventHub* hub = nullptr;  // the events the stream follows (nullptr: the daemon's)
    std::function<bool(const std::string&)> event_filter;  // which of them it passes
    // Set by a handler whose answer comes later (a qube starting).
    std::function<void(ApiResponse::Completion)> later;

    const std::string& arg() const { return request.arg; }
    const std::string& payload() const { return request.payload; }
    bool dest_is_dom0() const { return dest->is_admin(); }
    // qubesd's enforce(): a failed check closes the connection silently.
    static void enforce(bool ok, const std::string& reason) {
        if (!ok) throw protocol_error(reason);
    }
};

// Text of a value in an event's keyword arguments (Python's str()).
inline std::string event_value(const PropertyDef& def, const std::string& text) {
    return def.type == PropType::Vm && text.empty() ? "None" : text;
}

}  // namespace aerie::admin
