#include "policy/evaluate.hpp"

#include <algorithm>
#include <set>

#include "policy/errors.hpp"
#include "policy/text.hpp"

// Qubes' engine compares qubes as strings: what the caller asked, what a rule
// wrote. A name and "uuid:<its uuid>" match each other through the system
// info, but a target keeps the spelling it was given all the way to the
// answer ("target=uuid:..."), and the loopback check compares spellings.
// This file reproduces those rules; docs/policy.md lists them.

namespace aerie::policy {

namespace {

// Thrown inside evaluation; turned into a Deny decision at the boundary.
struct Denied {
    std::string reason;
    bool notify = true;
};

[[noreturn]] void deny(std::string reason, bool notify = true) {
    throw Denied{std::move(reason), notify};
}

// Where Qubes' engine stops with an internal error (a missing key in its
// system info): its daemon closes without an answer, which is a deny.
[[noreturn]] void engine_error(const std::string& what) {
    deny("policy evaluation error: " + what);
}

bool starts_with(std::string_view s, std::string_view prefix) {
    return s.substr(0, prefix.size()) == prefix;
}

// The three spellings of dom0.
bool is_dom0(std::string_view s) {
    return s == "@adminvm" || s == "dom0" || (starts_with(s, "uuid:") && s.substr(5) == kDom0Uuid);
}

// A request's target after checking, as the caller spelled it.
struct Target {
    TokenKind kind = TokenKind::Default;  // Name, AdminVM, Default, DispVM or DispVMTemplate
    std::string text;
};

struct Context {
    const Policy& policy;
    const SystemInfo& system;
    std::string service;
    std::string argument;
    std::string caller;  // who actually called
    std::string source;  // whom the policy judges (spelled as given)
    bool relayed = false;
    Target target;
    std::string other_key;  // storage behind source_keys()

    // "name" or "uuid:<uuid>" in the system info (as Qubes' lookup by key).
    const Domain* find(std::string_view key) const { return system.find(key); }

    // The source's default_dispvm, if the source is known and has one.
    std::optional<std::string> default_dispvm() const {
        const Domain* d = find(source);
        return d ? d->default_dispvm : std::nullopt;
    }

    Policy::SourceKeys source_keys() {
        Policy::SourceKeys keys;
        if (is_dom0(source)) {
            keys.keys[keys.count++] = "@adminvm";
            return keys;
        }
        keys.keys[keys.count++] = source;
        if (const Domain* d = find(source)) {
            other_key = starts_with(source, "uuid:") ? d->name : d->uuid.empty() ? "" : "uuid:" + d->uuid;
            if (!other_key.empty()) keys.keys[keys.count++] = other_key;
        }
        return keys;
    }
};

// Two spellings of qubes: equal, or a name and the uuid of that qube.
bool same_spelled(const Context& c, std::string_view a, std::string_view b) {
    if (starts_with(a, "uuid:")) {
        if (starts_with(b, "uuid:")) return a == b;
        const Domain* d = c.find(b);
        return d && a.substr(5) == d->uuid;
    }
    if (starts_with(b, "uuid:")) {
        const Domain* d = c.find(a);
        return d && b.substr(5) == d->uuid;
    }
    return a == b;
}

// Does a rule's SOURCE or TARGET token match the request's source (kind Name)
// or target? Only a target can be @dispvm or @dispvm:X.
bool match(const Token& rule, std::string_view other, TokenKind other_kind, const Context& c) {
    switch (rule.kind) {
        case TokenKind::Wildcard:
            return true;
        case TokenKind::AnyVM:
            return !is_dom0(other);
        case TokenKind::AdminVM:
            return is_dom0(other);
        case TokenKind::Name:
            return same_spelled(c, rule.value, other);
        case TokenKind::Default:
            return other == "@default";
        case TokenKind::Type: {
            const Domain* d = c.find(other);
            return d && d->type == rule.value;
        }
        case TokenKind::Tag: {
            const Domain* d = c.find(other);
            return d && d->has_tag(rule.value);
        }
        case TokenKind::DispVM:
            return other == "@dispvm";
        case TokenKind::DispVMTemplate:
            if (other_kind == TokenKind::DispVM) {
                // @dispvm stands for the source's default disposable template,
                // by its name as the property holds it.
                auto dvm = c.default_dispvm();
                if (!dvm) engine_error("@dispvm asked by " + c.source + ", which has no default_dispvm");
                return rule.value == *dvm;
            }
            if (other_kind == TokenKind::DispVMTemplate) return same_spelled(c, rule.value, other.substr(8));
            return false;
        case TokenKind::DispVMTag: {
            std::optional<std::string> tpl;
            if (other_kind == TokenKind::DispVM)
                tpl = c.default_dispvm();
            else if (other_kind == TokenKind::DispVMTemplate)
                tpl = std::string(other.substr(8));
            if (!tpl) return false;
            const Domain* d = c.find(*tpl);
            if (!d) engine_error("no such qube: " + *tpl);
            return d->template_for_dispvms && d->has_tag(rule.value);
        }
    }
    return false;
}

bool match_but_target(const Rule& rule, const Context& c) {
    return (!rule.argument || *rule.argument == c.argument) &&
           match(rule.source, c.source, TokenKind::Name, c);
}

bool match_rule(const Rule& rule, const Context& c) {
    return match_but_target(rule, c) && match(rule.target, c.target.text, c.target.kind, c);
}

// A target token (what the caller asked for, or a target=) checked against
// the system info: a name that does not exist becomes @default; a @dispvm:X
// whose X is not a disposable template is denied.
Target checked_target(const SystemInfo& system, const Token& token) {
    switch (token.kind) {
        case TokenKind::Name:
            if (!system.find(token.written)) return Target{TokenKind::Default, "@default"};
            return Target{TokenKind::Name, token.written};
        case TokenKind::DispVMTemplate: {
            const Domain* d = system.find(token.value);
            if (!d || !d->template_for_dispvms) deny("not a template for dispvm: " + token.value);
            return Target{TokenKind::DispVMTemplate, token.written};
        }
        default:
            return Target{token.kind, token.written};
    }
}

Target requested_target(const SystemInfo& system, std::string_view raw) {
    Token token;
    try {
        token = parse_token(raw.empty() ? std::string_view("@default") : raw, Column::IntendedTarget);
    } catch (const TokenError& e) {
        deny(e.what());
    }
    return checked_target(system, token);
}

// May the call go to this target without starting anything (autostart=no)?
bool allowed_without_autostart(const Context& c, const std::string& target) {
    if (is_dom0(target)) return true;
    if (starts_with(target, "@dispvm")) return false;
    const Domain* d = c.find(target);
    if (!d) engine_error("no such qube: " + target);
    return d->power_state == "Running";
}

Decision base_decision(const Context& c) {
    Decision d;
    d.caller = c.caller;
    d.source = c.source;
    d.service_name = c.service;
    d.argument = c.argument;
    d.requested_target = c.target.text;
    if (c.relayed) d.policy_source = c.source;
    return d;
}

// What running an allowed call needs (Qubes' AllowResolution.execute): the
// loopback check, the target's uuid, a RemoteVM's relay. A failure here is a
// refusal: the policy allowed, the call is not made.
void complete_allow(const SystemInfo& system, Decision& d) {
    const std::string& t = d.resolved_target;
    auto refuse = [&](std::string why) { d.refusal = std::move(why); };
    if (d.source == t) return refuse("loopback qrexec connection not supported");
    if (is_dom0(t)) {
        d.target = "dom0";
        d.policy_source.reset();  // Qubes' answer for dom0 has no policy_source
        return;
    }
    if (starts_with(t, "@dispvm:")) {
        const Domain* tpl = system.find(std::string_view(t).substr(8));
        if (!tpl) return refuse("policy evaluation error: no such qube: " + t.substr(8));
        d.target = t;
        d.target_uuid = "@dispvm:uuid:" + tpl->uuid;
        return;
    }
    const Domain* dom = system.find(t);
    if (!dom) return refuse("policy evaluation error: no such qube: " + t);
    if (dom->type != "RemoteVM") {
        d.target = t;
        d.target_uuid = "uuid:" + dom->uuid;
        return;
    }
    // A qube on another host: the call goes to its relay, which runs the
    // transport service with the target (as the caller spelled it) in the argument.
    d.user = "DEFAULT";
    if (!dom->relayvm || dom->relayvm->empty()) return refuse(t + ": relayvm is not set");
    if (!dom->transport_rpc || dom->transport_rpc->empty()) return refuse(t + ": transport RPC is not set");
    const Domain* relay = system.find(*dom->relayvm);
    if (!relay) return refuse("policy evaluation error: no such qube: " + *dom->relayvm);
    // Aerie's own rule (Qubes has none): a call a relay brought in for a
    // remote qube does not go back out through that relay, so no zone can
    // bounce calls between its qubes through this host.
    if (d.policy_source && d.caller == *dom->relayvm)
        return refuse("a call from the remote qube " + *d.policy_source +
                      " may not leave through its relay " + d.caller + " again");
    d.target = *dom->relayvm;
    d.target_uuid = "uuid:" + relay->uuid;
    // The remote qube as the caller spelled it, as Qubes' engine writes it,
    // except a keyword (a `target=` chose the RemoteVM for @default, say):
    // there Qubes' engine writes the keyword, which names no remote qube
    // and leaves the relay nowhere to go; Aerie writes the RemoteVM's name,
    // the form Qubes' RemoteVM documentation gives (docs/policy.md).
    const std::string& remote = starts_with(d.requested_target, "@") ? dom->name : d.requested_target;
    d.service = *dom->transport_rpc + "+" + remote + "+" + d.service_name + d.argument;
}

Decision make_allow(const Context& c, const Rule& rule, std::string target) {
    Decision d = base_decision(c);
    d.verdict = Verdict::Allow;
    d.rule = &rule;
    d.notify = rule.notify;
    d.autostart = rule.autostart;
    d.user = rule.user && !rule.user->empty() ? *rule.user : "DEFAULT";
    d.resolved_target = std::move(target);
    complete_allow(c.system, d);
    return d;
}

Decision resolve_allow(const Context& c, const Rule& rule) {
    Target target = rule.redirect ? checked_target(c.system, *rule.redirect) : c.target;
    if (target.kind == TokenKind::Default) {
        deny("policy define 'allow' action at " + rule.location() +
             " but no target is specified by caller or policy");
    }
    if (target.kind == TokenKind::DispVM) {
        auto dvm = c.default_dispvm();
        if (!dvm) {
            deny("policy define 'allow' action to @dispvm at " + rule.location() +
                 " but no DispVM base is set for this VM");
        }
        target.text = "@dispvm:" + *dvm;
    } else if (target.text == "@adminvm") {
        target.text = "dom0";
    }
    if (!rule.autostart && !allowed_without_autostart(c, target.text))
        deny("target " + target.text + " is denied because it would require autostart", rule.notify);
    return make_allow(c, rule, target.text);
}

// The concrete targets a rule's target token stands for, as ask lists them
// (names; "@adminvm" and "@dispvm" are replaced later).
void expand(const Context& c, const Token& token, std::set<std::string>& out) {
    const auto& domains = c.system.domains();
    switch (token.kind) {
        case TokenKind::Name:
            if (const Domain* d = c.find(token.written)) out.insert(d->name);
            break;
        case TokenKind::AdminVM:
            if (token.written == "@adminvm")
                out.insert("@adminvm");
            else if (const Domain* d = c.find(token.written))
                out.insert(d->name);
            break;
        case TokenKind::Wildcard:
        case TokenKind::AnyVM:
            for (const auto& [name, d] : domains) {
                if (token.kind == TokenKind::Wildcard || !is_dom0(name)) out.insert(name);
                if (d.template_for_dispvms) out.insert("@dispvm:" + name);
            }
            out.insert("@dispvm");
            break;
        case TokenKind::Default:
            break;
        case TokenKind::Type:
        case TokenKind::Tag:
            for (const auto& [name, d] : domains) {
                if (token.kind == TokenKind::Type ? d.type == token.value : d.has_tag(token.value))
                    out.insert(name);
            }
            break;
        case TokenKind::DispVM:
            out.insert("@dispvm");
            break;
        case TokenKind::DispVMTemplate: {
            const Domain* d = c.find(token.value);
            if (!d) engine_error("no such qube: " + token.value);
            if (d->template_for_dispvms) out.insert("@dispvm:" + d->name);
            break;
        }
        case TokenKind::DispVMTag:
            for (const auto& [name, d] : domains) {
                if (d.template_for_dispvms && d.has_tag(token.value)) out.insert("@dispvm:" + name);
            }
            break;
    }
}

// Every target the rules for this service, argument and source allow or ask
// for, walking the rules from the last so that a deny rule removes what the
// rules after it added; then the keywords replaced and the source and
// internal qubes removed.
std::set<std::string> collect_ask_targets(Context& c) {
    const Domain* src = c.find(c.source);
    if (!src) engine_error("no such qube: " + c.source);
    std::set<std::string> targets;
    auto candidates = c.policy.candidates(c.service, c.source_keys());
    for (auto it = candidates.rbegin(); it != candidates.rend(); ++it) {
        const Rule& r = **it;
        if (!match_but_target(r, c)) continue;
        std::set<std::string> expansion;
        expand(c, r.action != Action::Deny && r.redirect ? *r.redirect : r.target, expansion);
        for (const auto& t : expansion) {
            if (r.action == Action::Deny)
                targets.erase(t);
            else
                targets.insert(t);
        }
    }
    if (targets.erase("@dispvm")) {
        if (auto dvm = c.default_dispvm()) targets.insert("@dispvm:" + *dvm);
    }
    if (targets.erase("@adminvm")) targets.insert("dom0");
    targets.erase(src->name);
    targets.erase("uuid:" + src->uuid);
    for (auto it = targets.begin(); it != targets.end();) {
        std::string_view name = *it;
        if (starts_with(name, "@dispvm:")) name.remove_prefix(8);
        const Domain* d = c.find(name);
        if (!d) engine_error("no such qube: " + std::string(name));
        it = d->internal ? targets.erase(it) : std::next(it);
    }
    return targets;
}

Decision resolve_ask(Context& c, const Rule& rule) {
    std::vector<std::string> targets;
    if (rule.redirect) {
        targets.push_back(is_dom0(rule.redirect->written) ? "dom0" : rule.redirect->written);
    } else {
        auto collected = collect_ask_targets(c);
        targets.assign(collected.begin(), collected.end());
    }
    if (!rule.autostart) {
        std::vector<std::string> running;
        for (auto& t : targets)
            if (allowed_without_autostart(c, t)) running.push_back(std::move(t));
        targets = std::move(running);
    }
    if (targets.empty()) {
        deny("policy define 'ask' action at " + rule.location() +
             " but no target is available to choose from");
    }

    Decision d = base_decision(c);
    d.verdict = Verdict::Ask;
    d.rule = &rule;
    d.notify = rule.notify;
    d.autostart = rule.autostart;
    d.user = rule.user && !rule.user->empty() ? *rule.user : "DEFAULT";
    d.ask_targets = std::move(targets);
    if (rule.default_target) {
        std::optional<std::string> dt;
        if (rule.default_target->kind == TokenKind::DispVM) {
            if (auto dvm = c.default_dispvm()) dt = "@dispvm:" + *dvm;
        } else {
            dt = is_dom0(rule.default_target->written) ? "dom0" : rule.default_target->written;
        }
        if (dt && std::find(d.ask_targets.begin(), d.ask_targets.end(), *dt) != d.ask_targets.end())
            d.default_target = dt;
    }
    return d;
}

Decision denied(const Denied& why) {
    Decision d;
    d.verdict = Verdict::Deny;
    d.reason = why.reason;
    d.notify = why.notify;
    return d;
}

// A service name or argument as the policy language can name it (what the
// qrexec daemon leaves after sanitising): anything else could carry control
// characters into the answer text, so it is denied.
bool valid_call_name(std::string_view s, bool allow_plus) {
    return std::all_of(s.begin(), s.end(), [&](char ch) {
        return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
               ch == '.' || ch == '_' || ch == '-' || (allow_plus && ch == '+');
    });
}

// Builds the context: source (and requested_source) and target checks.
Context make_context(const Policy& policy, const SystemInfo& system, const Request& request) {
    Context c{policy, system, request.service, request.argument, request.source, request.source, false,
              {},     {}};
    if (c.service.empty() || !valid_call_name(c.service, false))
        deny("invalid service: " + text::py_repr(c.service));
    if (c.argument.empty()) c.argument = "+";
    if (c.argument[0] != '+') deny("argument does not start with +");
    if (!valid_call_name(c.argument, true)) deny("invalid argument: " + text::py_repr(c.argument));
    if (c.caller.empty() || (c.caller[0] == '@' && c.caller != "@adminvm"))
        deny("invalid source: " + text::py_repr(c.caller));
    c.target = requested_target(system, request.target);
    if (request.requested_source && !request.requested_source->empty()) {
        const std::string& wanted = *request.requested_source;
        const Domain* remote = system.find(wanted);
        if (!remote) deny("unknown requested source qube '" + wanted + "'");
        if (remote->type != "RemoteVM") deny(wanted + ": requested source is only authorized for RemoteVM");
        // The relay as the remote qube's relayvm names it, spelled as the caller.
        if (!remote->relayvm || *remote->relayvm != c.caller)
            deny(c.caller + " is not a relay for " + wanted);
        c.source = wanted;
        c.relayed = true;
    }
    return c;
}

}  // namespace

Request Request::from_service_and_arg(std::string_view service_and_arg, std::string source,
                                      std::string target) {
    Request r;
    auto plus = service_and_arg.find('+');
    if (plus == std::string_view::npos) {
        r.service = std::string(service_and_arg);
        r.argument = "+";
    } else {
        r.service = std::string(service_and_arg.substr(0, plus));
        r.argument = std::string(service_and_arg.substr(plus));
    }
    r.source = std::move(source);
    r.target = std::move(target);
    return r;
}

Decision evaluate(const Policy& policy, const SystemInfo& system, const Request& request) {
    try {
        Context c = make_context(policy, system, request);
        const Rule* rule =
            policy.find(c.service, c.source_keys(), [&](const Rule& r) { return match_rule(r, c); });
        if (!rule) deny("no matching rule found");
        switch (rule->action) {
            case Action::Deny:
                deny("denied by policy " + rule->location(), rule->notify);
            case Action::Allow:
                return resolve_allow(c, *rule);
            case Action::Ask:
                return resolve_ask(c, *rule);
        }
        deny("no matching rule found");
    } catch (const Denied& why) {
        Decision d = denied(why);
        d.requested_target = request.target;
        return d;
    }
}

Decision answer_ask(const Policy& policy, const SystemInfo& system, const Decision& ask,
                    const std::optional<std::string>& chosen) {
    (void)policy;
    try {
        if (ask.verdict != Verdict::Ask || !ask.rule) deny("not an ask decision");
        const Rule& rule = *ask.rule;
        if (!chosen) deny("denied by the user " + rule.location(), rule.notify);
        if (std::find(ask.ask_targets.begin(), ask.ask_targets.end(), *chosen) == ask.ask_targets.end())
            deny("target " + *chosen + " is not a valid choice");
        Decision d = ask;
        d.verdict = Verdict::Allow;
        d.ask_targets.clear();
        d.default_target.reset();
        d.resolved_target = *chosen;
        complete_allow(system, d);
        return d;
    } catch (const Denied& why) {
        return denied(why);
    }
}

std::string assumed_ask_choice(const SystemInfo&, const Decision& ask) {
    return ask.requested_target;
}

bool answer_allows(const Decision& d, bool just_evaluate) {
    return d.verdict == Verdict::Allow && (just_evaluate || !d.refusal);
}

std::string render_answer(const Decision& d, bool just_evaluate) {
    if (!answer_allows(d, just_evaluate)) return "result=deny\n";
    if (just_evaluate) return "result=allow\n";
    std::string out;
    out += "user=" + d.user + "\n";
    out += "result=allow\n";
    out += "target=" + d.target + "\n";
    if (d.target_uuid) out += "target_uuid=" + *d.target_uuid + "\n";
    out += std::string("autostart=") + (d.autostart ? "True" : "False") + "\n";
    out += "requested_target=" + d.requested_target + "\n";
    if (d.service) out += "service=" + *d.service + "\n";
    if (d.policy_source) out += "policy_source=" + *d.policy_source + "\n";
    return out;
}

Decision decide(const Policy& policy, const SystemInfo& system, const Request& request, bool just_evaluate,
                bool assume_yes_for_ask) {
    Decision d = evaluate(policy, system, request);
    if (d.verdict != Verdict::Ask) return d;
    if (assume_yes_for_ask) return answer_ask(policy, system, d, assumed_ask_choice(system, d));
    Decision no = denied(Denied{just_evaluate ? "ask is not an allow when only evaluating"
                                              : "denied for non-interactive ask"});
    no.requested_target = d.requested_target;
    return no;
}

}  // namespace aerie::policy
