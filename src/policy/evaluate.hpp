// Deciding one qrexec call: request normalisation, first-match evaluation,
// and the resolution of allow / deny / ask into the answer the daemon acts on.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "policy/policy.hpp"
#include "policy/system_info.hpp"

namespace aerie::policy {

struct Request {
    std::string service;   // without the argument
    std::string argument;  // "+..." ("+" alone when there is none)
    std::string source;    // the calling qube
    std::string target;    // what it asked for (name, uuid:..., @keyword, or empty)
    std::optional<std::string> requested_source;  // a relay speaking for a RemoteVM

    // Splits "SERVICE+ARG" at the first '+'.
    static Request from_service_and_arg(std::string_view service_and_arg, std::string source,
                                        std::string target);
};

enum class Verdict { Allow, Deny, Ask };

struct Decision {
    Verdict verdict = Verdict::Deny;
    const Rule* rule = nullptr;  // the rule that decided, if any
    std::string reason;          // for deny: why (logged, never sent to the qube)
    bool notify = false;

    // Allow: the fields of the answer text.
    std::string user = "DEFAULT";
    std::string target;                      // qube name, "dom0", "@dispvm:TPL" or the relay
    std::optional<std::string> target_uuid;  // "uuid:..." or "@dispvm:uuid:..."
    bool autostart = true;
    std::string requested_target;
    std::optional<std::string> service;        // set when redirected to a relay
    std::optional<std::string> policy_source;  // set when a relay spoke for a RemoteVM

    // Ask: who the user may choose, sorted; and the suggested one.
    std::vector<std::string> ask_targets;
    std::optional<std::string> default_target;

    // Normalised request, kept so an ask can be answered later.
    std::string caller;  // the qube that made the call (a relay, for remote sources)
    std::string source;  // whom the policy judged (the RemoteVM, for remote sources)
    std::string service_name;
    std::string argument;
};

// Evaluates the request. Never throws for bad request data: it denies.
Decision evaluate(const Policy& policy, const SystemInfo& system, const Request& request);

// Completes an ask: `chosen` is the target the user picked (nullopt: the user
// said no). Returns an Allow or a Deny.
Decision answer_ask(const Policy& policy, const SystemInfo& system, const Decision& ask,
                    const std::optional<std::string>& chosen);

// The target a "yes" means under --assume-yes-for-ask: the requested target,
// in the form ask_targets uses.
std::string assumed_ask_choice(const SystemInfo& system, const Decision& ask);

// The answer text for the daemon (the lines of qrexec-policy-exec's output).
// With just_evaluate an allow is only "result=allow" and an ask is a deny.
std::string render_answer(const Decision& decision, bool just_evaluate = false);

}  // namespace aerie::policy
