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
    std::string service;                          // without the argument
    std::string argument;                         // "+..." ("+" alone when there is none)
    std::string source;                           // the calling qube
    std::string target;                           // what it asked for (name, uuid:..., @keyword, or empty)
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

    // Allow: the target as the policy resolved it, spelled as Qubes' engine
    // keeps it: the requested or target= text ("work", "uuid:...", "dom0",
    // dom0's uuid), "dom0" for @adminvm, "@dispvm:TPL" (TPL as written, or the
    // caller's default_dispvm for @dispvm), or a RemoteVM.
    std::string resolved_target;

    // Allow: the fields of the answer text.
    std::string user = "DEFAULT";
    std::string target;  // resolved_target as printed: "dom0" for dom0, the relay for a RemoteVM
    std::optional<std::string> target_uuid;  // "uuid:..." or "@dispvm:uuid:..."
    bool autostart = true;
    std::string requested_target;              // the caller's target after checking: "@default" if absent
    std::optional<std::string> service;        // set when redirected to a relay
    std::optional<std::string> policy_source;  // set when a relay spoke for a RemoteVM
    // Allow: set when the policy allows the call but it cannot be made
    // (a call to the caller itself, a RemoteVM without relay or transport):
    // the answer is a deny, except to a caller that only evaluates, as Qubes'.
    std::optional<std::string> refusal;

    // Ask: who the user may choose, sorted; and the suggested one. Spelled as
    // Qubes lists them: names (a target= as written), "dom0", "@dispvm:TPL".
    std::vector<std::string> ask_targets;
    std::optional<std::string> default_target;

    // Normalised request, kept so an ask can be answered later.
    std::string caller;  // the qube that made the call (a relay, for remote sources)
    std::string source;  // whom the policy judged (the RemoteVM, for remote sources)
    std::string service_name;
    std::string argument;
};

// Evaluates the request as Qubes' engine does (policy.evaluate): the first
// matching rule, and the checks of its action. Never throws for bad request
// data: it denies. Where Qubes' engine fails with an internal error (its
// daemon then answers nothing, which its callers take as a deny), this denies.
Decision evaluate(const Policy& policy, const SystemInfo& system, const Request& request);

// Completes an ask: `chosen` is the target the user picked (nullopt: the user
// said no), which must be one of ask_targets as spelled there. Returns an
// Allow or a Deny.
Decision answer_ask(const Policy& policy, const SystemInfo& system, const Decision& ask,
                    const std::optional<std::string>& chosen);

// The target a "yes" means under --assume-yes-for-ask: the requested target
// as checked (requested_target), which is a valid choice only when ask_targets
// spell it the same way.
std::string assumed_ask_choice(const SystemInfo& system, const Decision& ask);

// Is the answer to this decision an allow? (just_evaluate: the checks of
// running the call are not made.)
bool answer_allows(const Decision& decision, bool just_evaluate = false);

// The answer text for the daemon (the lines of qrexec-policy-exec's output,
// each ending in a newline; the policy daemon's socket sends it without the
// last one). With just_evaluate an allow is only "result=allow" and an ask is
// a deny.
std::string render_answer(const Decision& decision, bool just_evaluate = false);

// The decision qrexec-policy-exec and the policy daemon answer with for one
// request and their two flags: an ask is answered with the requested target
// under assume_yes_for_ask (also when only evaluating), else it is a deny.
Decision decide(const Policy& policy, const SystemInfo& system, const Request& request, bool just_evaluate,
                bool assume_yes_for_ask);

}  // namespace aerie::policy
