// The policy daemon's side of its socket protocol (qrexec-policy-daemon,
// /run/qubes/policy.sock): a request of key=value lines ended by an empty
// line, answered with qrexec-policy-exec's output text, then EOF.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

#include "policy/policy.hpp"
#include "policy/system_info.hpp"

namespace aerie::qrexec {

inline constexpr const char* kDefaultPolicySocket = "/run/qubes/policy.sock";
// A request (terminating empty line included) may not be longer.
inline constexpr size_t kMaxPolicyRequestBytes = 65536;
// Qubes' daemon ends its answer without a newline.
inline constexpr std::string_view kPolicyDenyReply = "result=deny";

struct PolicyRequest {
    std::string source;
    std::string intended_target;
    std::string service_and_arg;
    std::optional<std::string> requested_source;  // as sent (may be empty)
    bool assume_yes_for_ask = false;
    bool just_evaluate = false;
    // Sent by upstream's qrexec-daemon; accepted and not used.
    std::optional<std::string> domain_id;
    std::optional<std::string> process_ident;
};

// Length of the request at the start of `buffer`, up to and including the
// empty line that ends it ("\n" at the very start, else the first "\n\n");
// nullopt while it is incomplete.
std::optional<size_t> policy_request_end(std::string_view buffer);

// Parses a request strictly. `text` is the key=value lines, each ending in
// '\n', optionally followed by the terminating empty line and nothing after
// it; a last line without '\n' is accepted too (a client that shut down its
// side after the lines). Refused (nullopt, *error says why): a byte outside
// ASCII, a line without '=', an unknown or duplicate key, a yes/no key with
// another value, a missing source/intended_target/service_and_arg, data after
// the empty line, more than kMaxPolicyRequestBytes.
// Keys: source, intended_target, service_and_arg (required); requested_source,
// assume_yes_for_ask, just_evaluate, domain_id, process_ident (optional).
std::optional<PolicyRequest> parse_policy_request(std::string_view text,
                                                  std::string* error = nullptr);

// The reply text for a request, exactly as Qubes' policy daemon sends it:
// qrexec-policy-exec's output without its last newline. An ask is answered
// with the requested target under assume_yes_for_ask (also with
// just_evaluate), else it is a deny (no one to ask). An empty
// requested_source counts as none. For a deny, *deny_reason (if given) says
// why, for the log.
std::string answer_policy_request(const policy::Policy& policy, const policy::SystemInfo& system,
                                  const PolicyRequest& request, std::string* deny_reason = nullptr);

}  // namespace aerie::qrexec
