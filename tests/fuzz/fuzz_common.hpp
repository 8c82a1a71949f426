// Shared by the policy fuzz targets: a small but varied system, and the
// properties every decision must have whatever the input.
#pragma once

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "policy/evaluate.hpp"
#include "policy/policy.hpp"
#include "policy/system_info.hpp"

namespace aerie::fuzz {

// Every kind of qube the evaluator distinguishes: dom0, app qubes (running or
// not, tagged), a template, disposable templates, an internal qube, a
// RemoteVM with its relay, and a RemoteVM whose relay does not exist.
inline constexpr const char* kSystemInfoJson = R"({"domains": {
  "dom0": {"type": "AdminVM", "tags": [], "uuid": "00000000-0000-0000-0000-000000000000",
           "power_state": "Running", "default_dispvm": "default-dvm"},
  "work": {"type": "AppVM", "tags": ["trusted", "work"], "uuid": "6f1c0d4e-2a7b-4c38-9a51-3c1e8f0b7d21",
           "power_state": "Running", "default_dispvm": "default-dvm"},
  "vault": {"type": "AppVM", "tags": ["offline"], "uuid": "0b5d6f3a-9c2e-4d71-8e44-7a2b1c9d0e53",
            "power_state": "Halted", "default_dispvm": null},
  "personal": {"type": "AppVM", "tags": [], "uuid": "9e7f2c1b-5a4d-4e3f-8b2a-1d0c9e8f7a65",
               "power_state": "Running", "default_dispvm": "no-such-dvm"},
  "untrusted": {"type": "AppVM", "tags": ["untrusted"], "uuid": "1a2b3c4d-0000-4000-8000-000000000001",
                "power_state": "Paused", "default_dispvm": "work"},
  "fedora-40": {"type": "TemplateVM", "tags": [], "uuid": "1a2b3c4d-0000-4000-8000-000000000002",
                "power_state": "Halted"},
  "default-dvm": {"type": "AppVM", "tags": ["dvm"], "uuid": "4c2b8a7e-1f3d-4b6a-9e5c-8d7f6a5b4c32",
                  "power_state": "Halted", "default_dispvm": "default-dvm",
                  "template_for_dispvms": true},
  "online-dvm": {"type": "AppVM", "tags": ["dvm", "net"], "uuid": "",
                 "power_state": "Running", "template_for_dispvms": true},
  "sys-net": {"type": "AppVM", "tags": ["net"], "uuid": "1a2b3c4d-0000-4000-8000-000000000003",
              "power_state": "Running", "internal": true},
  "sys-relay": {"type": "AppVM", "tags": [], "uuid": "1a2b3c4d-0000-4000-8000-000000000004",
                "power_state": "Running"},
  "remote-vault": {"type": "RemoteVM", "tags": [], "uuid": "1a2b3c4d-0000-4000-8000-000000000005",
                   "power_state": "Running", "relayvm": "sys-relay",
                   "transport_rpc": "qubesair.SSHProxy"},
  "remote-orphan": {"type": "RemoteVM", "tags": [], "uuid": "1a2b3c4d-0000-4000-8000-000000000006",
                    "power_state": "Running", "relayvm": "gone"},
  "remote-by-uuid": {"type": "RemoteVM", "tags": [], "uuid": "1a2b3c4d-0000-4000-8000-000000000007",
                     "relayvm": "uuid:1a2b3c4d-0000-4000-8000-000000000004",
                     "transport_rpc": "qubesair.SSHProxy"}
}})";

inline const policy::SystemInfo& system_info() {
    static const policy::SystemInfo info = policy::SystemInfo::from_json(kSystemInfoJson);
    return info;
}

[[noreturn]] inline void violated(const char* what, const std::string& detail) {
    std::fprintf(stderr, "property violated: %s\n%s\n", what, detail.c_str());
    std::abort();
}

// The answer text is the daemon's whole view of a decision: a deny is one
// line, an allow is key=value lines, each key known and given once.
inline void check_answer(const policy::Decision& d) {
    std::string text = policy::render_answer(d);
    if (!policy::answer_allows(d)) {
        if (text != "result=deny\n") violated("a non-allow renders as result=deny", text);
        // An allow refused when run (loopback, a RemoteVM without relay) is
        // still an allow to a caller that only evaluates, and says why.
        bool allowed = d.verdict == policy::Verdict::Allow;
        if (allowed && (!d.refusal || d.refusal->empty())) violated("a refused allow says why", text);
        if (policy::render_answer(d, true) != (allowed ? "result=allow\n" : "result=deny\n"))
            violated("just_evaluate shows the policy's verdict", text);
        return;
    }
    if (policy::render_answer(d, true) != "result=allow\n")
        violated("an allow renders as result=allow (just_evaluate)", text);
    static const std::set<std::string_view> keys{"user",        "result",       "target",
                                                 "target_uuid", "autostart",    "requested_target",
                                                 "service",     "policy_source"};
    std::set<std::string_view> seen;
    std::string_view rest = text;
    if (rest.empty() || rest.back() != '\n') violated("answer ends with a newline", text);
    while (!rest.empty()) {
        auto nl = rest.find('\n');
        std::string_view line = rest.substr(0, nl);
        rest.remove_prefix(nl + 1);
        auto eq = line.find('=');
        if (eq == std::string_view::npos) violated("answer lines are key=value", text);
        auto key = line.substr(0, eq);
        if (!keys.count(key)) violated("answer keys are known", text);
        if (!seen.insert(key).second) violated("answer keys appear once", text);
        if (line.find('\r') != std::string_view::npos || line.find('\0') != std::string_view::npos)
            violated("answer values hold no CR or NUL", text);
    }
    if (!seen.count("result") || !seen.count("target") || d.target.empty())
        violated("an allow names its target", text);
    if (!d.rule) violated("an allow names its rule", text);
}

inline void check_decision(const policy::Decision& d) {
    check_answer(d);
    if (d.verdict == policy::Verdict::Ask) {
        if (d.ask_targets.empty()) violated("an ask offers a target", "");
        if (!std::is_sorted(d.ask_targets.begin(), d.ask_targets.end()) ||
            std::adjacent_find(d.ask_targets.begin(), d.ask_targets.end()) != d.ask_targets.end())
            violated("ask targets are sorted and unique", "");
        if (d.default_target && std::find(d.ask_targets.begin(), d.ask_targets.end(),
                                          *d.default_target) == d.ask_targets.end())
            violated("the default target is one of the ask targets", *d.default_target);
        if (!d.rule) violated("an ask names its rule", "");
    }
}

// Evaluates and, for an ask, answers it every way a user or the
// --assume-yes-for-ask path could: no, each offered target, an odd choice.
inline void evaluate_all_ways(const policy::Policy& policy, const policy::Request& request,
                              const std::optional<std::string>& odd_choice) {
    const auto& system = system_info();
    policy::Decision d = policy::evaluate(policy, system, request);
    check_decision(d);
    if (d.verdict != policy::Verdict::Ask) {
        // Answering something that is not an ask must deny.
        auto again = policy::answer_ask(policy, system, d, std::string("work"));
        if (again.verdict != policy::Verdict::Deny) violated("answering a non-ask denies", "");
        return;
    }
    auto no = policy::answer_ask(policy, system, d, std::nullopt);
    if (no.verdict != policy::Verdict::Deny) violated("a user's no denies", "");
    check_decision(no);
    for (const auto& t : d.ask_targets) {
        auto yes = policy::answer_ask(policy, system, d, t);
        if (yes.verdict == policy::Verdict::Ask) violated("an answered ask is not an ask", t);
        check_decision(yes);
    }
    auto assumed = policy::assumed_ask_choice(system, d);
    check_decision(policy::answer_ask(policy, system, d, assumed));
    if (odd_choice) {
        auto odd = policy::answer_ask(policy, system, d, *odd_choice);
        check_decision(odd);
        if (odd.verdict == policy::Verdict::Allow &&
            std::find(d.ask_targets.begin(), d.ask_targets.end(), *odd_choice) ==
                d.ask_targets.end())
            violated("only an offered target can be chosen", *odd_choice);
    }
}

}  // namespace aerie::fuzz
