// What the qrexec daemon makes of one message from its qube's agent, by the
// rules of Qubes' qrexec-daemon (R4.3), parsed once here from the raw bytes:
//   - a service request (TRIGGER_SERVICE of the version the agent speaks:
//     v2 below protocol 3, TRIGGER_SERVICE3 at 3, TRIGGER_SERVICE4 from 4),
//     sanitised: bytes outside the allowed set become '_';
//   - a request to refuse: a bad ident (bytes outside [A-Za-z0-9_.- ], no
//     NUL, or anything but NULs after it), a service name that is empty,
//     starts with '+', lacks its terminating NUL or holds another NUL. The
//     refusal echoes the 32 ident bytes exactly as they came;
//   - MSG_CONNECTION_TERMINATED for a data port;
//   - a violation, after which Qubes' daemon exits: a message the agent's
//     protocol version does not have, a request too short to hold its fixed
//     fields or longer than a service name may be, a CONNECTION_TERMINATED
//     that is not exactly 8 bytes or names a port outside the data ports,
//     any other message type.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <variant>

#include "qrexec/protocol.hpp"
#include "qrexec/sanitize.hpp"

namespace aerie::qrexec {

struct AgentTrigger {
    ServiceRequest request;
};
struct AgentRefusal {
    std::string ident_field;  // the 32 bytes as received
    std::string why;
};
struct AgentTerminated {
    uint32_t domain = 0;
    uint32_t port = 0;
};
struct AgentViolation {
    std::string why;
};
using AgentRequest = std::variant<AgentTrigger, AgentRefusal, AgentTerminated, AgentViolation>;

// protocol_version: the version agreed at HELLO (2..4).
AgentRequest classify_agent_message(const Header& header, std::string_view payload, uint32_t protocol_version);

// MSG_SERVICE_REFUSED carrying a 32-byte ident field as it is.
std::string encode_service_refused_field(std::string_view ident_field);

}  // namespace aerie::qrexec
