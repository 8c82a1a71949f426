#include "policy/evaluate.hpp"

#include <algorithm>
#include <set>

#include "policy/errors.hpp"
#include "policy/text.hpp"

namespace aerie::policy {

namespace {

// A request's source or target after normalisation.
struct Qube {
    TokenKind kind = TokenKind::Name;
    std::string text;            // as asked (after the dom0 alias), e.g. "work", "uuid:..."
    const Domain* dom = nullptr;  // the qube it designates, if it exists
};

// Thrown inside evaluation; turned into a Deny decision at the boundary.
struct Denied {
    std::string reason;
    bool notify = true;
};

[[noreturn]] void deny(std::string reason, bool notify = true) {
    throw Denied{std::move(reason), notify};
}

bool designates(std::string_view value, const Domain* d) {
    if (!d) return false;
    if (value == d->name) return true;
    std::string_view uuid;
    return is_uuid_designator(value, &uuid) && !d->uuid.empty() && uuid == d->uuid;
}

struct Context {
    const Policy& policy;
    const SystemInfo& system;
    std::string service;
    std::string argument;
    Qube caller;  // who actually called
    Qube source;  // whom the policy judges
    Qube target;
    std::optional<std::string> policy_source;
    std::string uuid_key;  // storage behind source_keys()

    // The source's default disposable template, as named in its properties.
    std::optional<std::string> default_dispvm() const {
        if (source.dom) return source.dom->default_dispvm;
        return std::nullopt;
    }

    Policy::SourceKeys source_keys() {
        Policy::SourceKeys keys;
        if (source.kind == TokenKind::AdminVM) {
            keys.keys[keys.count++] = "@adminvm";
        } else if (source.dom) {
            keys.keys[keys.count++] = source.dom->name;
            if (!source.dom->uuid.empty()) {
                uuid_key = "uuid:" + source.dom->uuid;
                keys.keys[keys.count++] = uuid_key;
            }
        } else {
            keys.keys[keys.count++] = source.text;
        }
        return keys;
    }
};

// The qube itself, as @type: and @tag: see it: "@dispvm:X" designates a new
// disposable, not its template X, so it has no type or tags of its own.
const Domain* own_domain(const Qube& q) {
    return q.kind == TokenKind::DispVMTemplate ? nullptr : q.dom;
}

// Does a rule's SOURCE or TARGET token match the request's qube?
bool match(const Token& rule, const Qube& other, const Context& c) {
    switch (rule.kind) {
        case TokenKind::Wildcard: return true;
        case TokenKind::AnyVM: return other.kind != TokenKind::AdminVM;
        case TokenKind::AdminVM: return other.kind == TokenKind::AdminVM;
        case TokenKind::Name:
            if (other.kind != TokenKind::Name) return false;
            return other.dom ? designates(rule.value, other.dom) : rule.value == other.text;
        case TokenKind::Default: return other.kind == TokenKind::Default;
        case TokenKind::Type: {
            const Domain* d = own_domain(other);
            return d && d->type == rule.value;
        }
        case TokenKind::Tag: {
            const Domain* d = own_domain(other);
            return d && d->has_tag(rule.value);
        }
        case TokenKind::DispVM: return other.kind == TokenKind::DispVM;
        case TokenKind::DispVMTemplate:
            if (other.kind == TokenKind::DispVM) {
                auto dvm = c.default_dispvm();
                if (!dvm) return false;
                return rule.value == *dvm || designates(rule.value, c.system.find(*dvm));
            }
            return other.kind == TokenKind::DispVMTemplate && designates(rule.value, other.dom);
        case TokenKind::DispVMTag: {
            const Domain* d = nullptr;
            if (other.kind == TokenKind::DispVM) {
                if (auto dvm = c.default_dispvm()) d = c.system.find(*dvm);
            } else if (other.kind == TokenKind::DispVMTemplate) {
                d = other.dom;
            }
            return d && d->template_for_dispvms && d->has_tag(rule.value);
        }
    }
    return false;
}

bool match_but_target(const Rule& rule, const Context& c) {
    return (!rule.argument || *rule.argument == c.argument) && match(rule.source, c.source, c);
}

bool match_rule(const Rule& rule, const Context& c) {
    return match_but_target(rule, c) && match(rule.target, c.target, c);
}

Qube dispvm_template_qube(const SystemInfo& system, std::string_view name) {
    const Domain* d = system.find(name);
    if (!d || !d->template_for_dispvms) deny("not a template for dispvm: " + std::string(name));
    return Qube{TokenKind::DispVMTemplate, "@dispvm:" + std::string(name), d};
}

// A target token (what the caller asked, a target= or a user's choice) as a
// qube. A name that does not exist is @default when asked by the caller
// (so a qube learns nothing of what exists) and denied otherwise.
Qube target_qube(const SystemInfo& system, std::string_view raw, bool from_caller) {
    Token token;
    try {
        token = parse_token(raw.empty() ? std::string_view("@default") : raw,
                            Column::IntendedTarget);
    } catch (const TokenError& e) {
        deny(e.what());
    }
    switch (token.kind) {
        case TokenKind::Name: {
            const Domain* d = system.find(token.value);
            if (!d) {
                if (from_caller) return Qube{TokenKind::Default, "@default", nullptr};
                deny("invalid target: '" + token.value + "'");
            }
            if (d->is_admin()) return Qube{TokenKind::AdminVM, "@adminvm", nullptr};
            return Qube{TokenKind::Name, token.text, d};
        }
        case TokenKind::DispVMTemplate: return dispvm_template_qube(system, token.value);
        default: return Qube{token.kind, token.text, nullptr};
    }
}

Qube source_qube(const SystemInfo& system, std::string_view name) {
    if (name == "dom0" || name == "@adminvm" ||
        (name.substr(0, 5) == "uuid:" && name.substr(5) == kDom0Uuid))
        return Qube{TokenKind::AdminVM, "@adminvm", &system.dom0()};
    if (name.empty() || name[0] == '@') deny("invalid source: '" + std::string(name) + "'");
    const Domain* d = system.find(name);
    if (d && d->is_admin()) return Qube{TokenKind::AdminVM, "@adminvm", d};
    return Qube{TokenKind::Name, d ? d->name : std::string(name), d};
}

// A "@dispvm:X" is a new disposable, never X itself (nor the caller, even
// when the caller is X).
bool same_qube(const Qube& a, const Qube& b) {
    if (a.kind != b.kind) return false;
    if (a.kind == TokenKind::AdminVM) return true;
    if (a.dom && b.dom) return a.dom == b.dom;
    return a.text == b.text;
}

// Targets reachable without starting anything (autostart=no).
bool allowed_without_autostart(const Qube& target) {
    switch (target.kind) {
        case TokenKind::AdminVM: return true;
        case TokenKind::Name: return target.dom && target.dom->power_state == "Running";
        default: return false;
    }
}

Decision base_decision(const Context& c) {
    Decision d;
    d.caller = c.caller.dom ? c.caller.dom->name : c.caller.text;
    d.source = c.source.dom ? c.source.dom->name : c.source.text;
    if (c.source.kind == TokenKind::AdminVM) d.source = "dom0";
    if (c.caller.kind == TokenKind::AdminVM) d.caller = "dom0";
    d.service_name = c.service;
    d.argument = c.argument;
    d.requested_target = c.target.text;
    d.policy_source = c.policy_source;
    return d;
}

Decision resolve_allow(const Context& c, const Rule& rule, Qube target) {
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
        target = dispvm_template_qube(c.system, *dvm);
        target.text = "@dispvm:" + target.dom->name;
    }
    if (!rule.autostart && !allowed_without_autostart(target)) {
        std::string name = target.dom && target.kind == TokenKind::Name ? target.dom->name : target.text;
        deny("target " + name + " is denied because it would require autostart");
    }
    if (same_qube(target, c.source)) deny("loopback qrexec connection not supported");

    Decision d = base_decision(c);
    d.verdict = Verdict::Allow;
    d.rule = &rule;
    d.notify = rule.notify;
    d.autostart = rule.autostart;
    d.user = rule.user && !rule.user->empty() ? *rule.user : "DEFAULT";
    switch (target.kind) {
        case TokenKind::AdminVM:
            d.target = "dom0";
            break;
        case TokenKind::DispVMTemplate:
            d.target = "@dispvm:" + target.dom->name;
            d.target_uuid = "@dispvm:uuid:" + target.dom->uuid;
            break;
        default: {
            const Domain* dom = target.dom;
            if (dom->type == "RemoteVM") {
                // A qube on another host: the call goes to its relay, which
                // runs the transport service with the real target in the argument.
                const Domain* relay = dom->relayvm ? c.system.find(*dom->relayvm) : nullptr;
                if (!relay) deny("RemoteVM " + dom->name + " has no existing relayvm");
                if (!dom->transport_rpc) deny("RemoteVM " + dom->name + " has no transport_rpc");
                if (c.caller.dom == relay) deny("loopback qrexec connection not supported");
                d.target = relay->name;
                d.target_uuid = "uuid:" + relay->uuid;
                d.user = "DEFAULT";
                d.service = *dom->transport_rpc + "+" + dom->name + "+" + c.service + c.argument;
            } else {
                d.target = dom->name;
                d.target_uuid = "uuid:" + dom->uuid;
            }
        }
    }
    return d;
}

// The concrete targets a rule's target token stands for, as ask lists them.
void expand(const Token& token, const SystemInfo& system, std::set<std::string>& out) {
    auto add_domain = [&](const Domain& d) { out.insert(d.is_admin() ? "@adminvm" : d.name); };
    auto add_dvm_templates = [&](std::string_view tag) {
        for (const auto& [name, d] : system.domains()) {
            if (d.template_for_dispvms && (tag.empty() || d.has_tag(tag))) out.insert("@dispvm:" + name);
        }
    };
    switch (token.kind) {
        case TokenKind::Name:
            if (const Domain* d = system.find(token.value)) add_domain(*d);
            break;
        case TokenKind::Wildcard:
        case TokenKind::AnyVM:
            for (const auto& [name, d] : system.domains()) {
                if (!d.is_admin() || token.kind == TokenKind::Wildcard) add_domain(d);
            }
            add_dvm_templates({});
            out.insert("@dispvm");
            break;
        case TokenKind::AdminVM: out.insert("@adminvm"); break;
        case TokenKind::Default: break;
        case TokenKind::Type:
        case TokenKind::Tag:
            for (const auto& [name, d] : system.domains()) {
                if (token.kind == TokenKind::Type ? d.type == token.value : d.has_tag(token.value))
                    add_domain(d);
            }
            break;
        case TokenKind::DispVM: out.insert("@dispvm"); break;
        case TokenKind::DispVMTemplate:
            if (const Domain* d = system.find(token.value); d && d->template_for_dispvms)
                out.insert("@dispvm:" + d->name);
            break;
        case TokenKind::DispVMTag: add_dvm_templates(token.value); break;
    }
}

// Replaces keywords by what they mean for this source ("@dispvm" -> its
// default disposable template, "@adminvm" -> dom0).
std::optional<std::string> concrete_target(const Context& c, const std::string& t) {
    if (t == "@adminvm") return std::string("dom0");
    if (t == "@dispvm") {
        auto dvm = c.default_dispvm();
        if (!dvm) return std::nullopt;
        const Domain* d = c.system.find(*dvm);
        if (!d || !d->template_for_dispvms) return std::nullopt;
        return "@dispvm:" + d->name;
    }
    return t;
}

Qube choice_qube(const SystemInfo& system, const std::string& choice) {
    if (choice == "dom0") return Qube{TokenKind::AdminVM, "@adminvm", nullptr};
    return target_qube(system, choice, /*from_caller=*/false);
}

// A target= or default_target= as ask lists it: an existing qube (or
// disposable template) by its name, even when the policy gives its uuid.
std::string ask_name(const SystemInfo& system, const Token& token) {
    if (token.kind == TokenKind::Name || token.kind == TokenKind::DispVMTemplate) {
        if (const Domain* d = system.find(token.value))
            return token.kind == TokenKind::Name ? d->name : "@dispvm:" + d->name;
    }
    return token.text;
}

Decision resolve_ask(Context& c, const Rule& rule) {
    std::set<std::string> raw;
    if (rule.redirect) {
        raw.insert(ask_name(c.system, *rule.redirect));
    } else {
        auto candidates = c.policy.candidates(c.service, c.source_keys());
        for (auto it = candidates.rbegin(); it != candidates.rend(); ++it) {
            const Rule& r = **it;
            if (!match_but_target(r, c)) continue;
            std::set<std::string> expansion;
            expand(r.redirect ? *r.redirect : r.target, c.system, expansion);
            for (const auto& t : expansion) {
                if (r.action == Action::Deny)
                    raw.erase(t);
                else
                    raw.insert(t);
            }
        }
    }

    std::string source_name = c.source.kind == TokenKind::AdminVM ? "dom0"
                              : c.source.dom                      ? c.source.dom->name
                                                                  : c.source.text;
    std::set<std::string> targets;
    for (const auto& t : raw) {
        auto concrete = concrete_target(c, t);
        if (!concrete || *concrete == source_name) continue;
        const Domain* d = c.system.find(*concrete);
        if (d && d->internal) continue;
        if (!rule.autostart) {
            Qube q;
            try {
                q = choice_qube(c.system, *concrete);
            } catch (const Denied&) {
                continue;
            }
            if (!allowed_without_autostart(q)) continue;
        }
        targets.insert(*concrete);
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
    d.ask_targets.assign(targets.begin(), targets.end());
    if (rule.default_target) {
        std::string dt = ask_name(c.system, *rule.default_target);
        if (auto concrete = concrete_target(c, dt); concrete && targets.count(*concrete))
            d.default_target = *concrete;
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

// Builds the context: source (and requested_source) and target normalisation.
Context make_context(const Policy& policy, const SystemInfo& system, const Request& request) {
    Context c{policy, system, request.service, request.argument, {}, {}, {}, std::nullopt, {}};
    if (c.service.empty() || !valid_call_name(c.service, false))
        deny("invalid service: " + text::py_repr(c.service));
    if (c.argument.empty()) c.argument = "+";
    if (c.argument[0] != '+') deny("argument does not start with +");
    if (!valid_call_name(c.argument, true)) deny("invalid argument: " + text::py_repr(c.argument));
    c.caller = source_qube(system, request.source);
    c.source = c.caller;
    if (request.requested_source && !request.requested_source->empty()) {
        const std::string& wanted = *request.requested_source;
        const Domain* remote = system.find(wanted);
        if (!remote) deny("unknown requested source qube");
        if (remote->type != "RemoteVM") deny("requested source is only authorized for RemoteVM");
        bool is_relay = remote->relayvm && c.caller.dom && designates(*remote->relayvm, c.caller.dom);
        if (!is_relay) deny(request.source + " is not a relay for " + wanted);
        c.source = Qube{TokenKind::Name, remote->name, remote};
        c.policy_source = remote->name;
    }
    c.target = target_qube(system, request.target, /*from_caller=*/true);
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
            case Action::Deny: deny("denied by policy " + rule->location(), rule->notify);
            case Action::Allow:
                return resolve_allow(c, *rule,
                                     rule->redirect ? target_qube(system, rule->redirect->text, false)
                                                    : c.target);
            case Action::Ask: return resolve_ask(c, *rule);
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
    try {
        if (ask.verdict != Verdict::Ask || !ask.rule) deny("not an ask decision");
        const Rule& rule = *ask.rule;
        if (!chosen) deny("denied by the user " + rule.location(), rule.notify);
        if (std::find(ask.ask_targets.begin(), ask.ask_targets.end(), *chosen) ==
            ask.ask_targets.end())
            deny("target " + *chosen + " is not a valid choice");
        Request again;
        again.service = ask.service_name;
        again.argument = ask.argument;
        again.source = ask.caller;
        again.target = ask.requested_target;
        if (ask.policy_source) again.requested_source = ask.policy_source;
        Context c = make_context(policy, system, again);
        return resolve_allow(c, rule, choice_qube(system, *chosen));
    } catch (const Denied& why) {
        return denied(why);
    }
}

std::string assumed_ask_choice(const SystemInfo& system, const Decision& ask) {
    const std::string& t = ask.requested_target;
    if (t == "@adminvm") return "dom0";
    if (t == "@dispvm") {
        const Domain* src = system.find(ask.source);
        if (src && src->default_dispvm) {
            const Domain* d = system.find(*src->default_dispvm);
            if (d) return "@dispvm:" + d->name;
        }
        return t;
    }
    if (t.rfind("@dispvm:", 0) == 0) {
        if (const Domain* d = system.find(t.substr(8))) return "@dispvm:" + d->name;
        return t;
    }
    if (const Domain* d = system.find(t)) return d->is_admin() ? "dom0" : d->name;
    return t;
}

std::string render_answer(const Decision& d, bool just_evaluate) {
    if (d.verdict != Verdict::Allow) return "result=deny\n";
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

}  // namespace aerie::policy
