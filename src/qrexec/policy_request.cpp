#include "qrexec/policy_request.hpp"

#include <exception>

#include "policy/evaluate.hpp"

namespace aerie::qrexec {

namespace {

void set_error(std::string* error, std::string message) {
    if (error) *error = std::move(message);
}

bool parse_yes_no(std::string_view value, bool& out) {
    if (value == "yes") {
        out = true;
        return true;
    }
    if (value == "no") {
        out = false;
        return true;
    }
    return false;
}

}  // namespace

std::optional<size_t> policy_request_end(std::string_view buffer) {
    if (!buffer.empty() && buffer[0] == '\n') return 1;
    auto pos = buffer.find("\n\n");
    if (pos == std::string_view::npos) return std::nullopt;
    return pos + 2;
}

std::optional<PolicyRequest> parse_policy_request(std::string_view text, std::string* error) {
    if (text.size() > kMaxPolicyRequestBytes) {
        set_error(error, "request too long");
        return std::nullopt;
    }
    for (char c : text) {
        if (static_cast<unsigned char>(c) >= 0x80) {
            set_error(error, "non-ASCII byte in request");
            return std::nullopt;
        }
    }
    PolicyRequest r;
    bool seen_source = false, seen_target = false, seen_service = false;
    bool seen_assume = false, seen_just = false;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string_view line =
            text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
        pos = nl == std::string_view::npos ? text.size() : nl + 1;
        if (line.empty()) {
            if (pos != text.size()) {
                set_error(error, "data after the end of the request");
                return std::nullopt;
            }
            break;
        }
        auto eq = line.find('=');
        if (eq == std::string_view::npos) {
            set_error(error, "invalid line (no '=')");
            return std::nullopt;
        }
        std::string_view key = line.substr(0, eq);
        std::string value(line.substr(eq + 1));
        auto once = [&](bool& seen) {
            if (seen) {
                set_error(error, "duplicate argument " + std::string(key));
                return false;
            }
            seen = true;
            return true;
        };
        auto once_opt = [&](std::optional<std::string>& field) {
            if (field) {
                set_error(error, "duplicate argument " + std::string(key));
                return false;
            }
            field = value;
            return true;
        };
        bool ok = true;
        if (key == "source") {
            ok = once(seen_source);
            r.source = value;
        } else if (key == "intended_target") {
            ok = once(seen_target);
            r.intended_target = value;
        } else if (key == "service_and_arg") {
            ok = once(seen_service);
            r.service_and_arg = value;
        } else if (key == "requested_source") {
            ok = once_opt(r.requested_source);
        } else if (key == "domain_id") {
            ok = once_opt(r.domain_id);
        } else if (key == "process_ident") {
            ok = once_opt(r.process_ident);
        } else if (key == "assume_yes_for_ask" || key == "just_evaluate") {
            bool& seen = key == "just_evaluate" ? seen_just : seen_assume;
            bool& flag = key == "just_evaluate" ? r.just_evaluate : r.assume_yes_for_ask;
            ok = once(seen);
            if (ok && !parse_yes_no(value, flag)) {
                set_error(error,
                          "invalid bool value " + value + " for argument " + std::string(key));
                ok = false;
            }
        } else {
            set_error(error, "unknown argument " + std::string(key));
            ok = false;
        }
        if (!ok) return std::nullopt;
    }
    if (!seen_source || !seen_target || !seen_service) {
        set_error(error, "required argument missing");
        return std::nullopt;
    }
    return r;
}

std::string answer_policy_request(const policy::Policy& pol, const policy::SystemInfo& system,
                                  const PolicyRequest& request, std::string* deny_reason) {
    auto deny = [&](std::string why) {
        set_error(deny_reason, std::move(why));
        return std::string(kPolicyDenyReply);
    };
    try {
        auto req = policy::Request::from_service_and_arg(request.service_and_arg, request.source,
                                                         request.intended_target);
        if (request.requested_source && !request.requested_source->empty())
            req.requested_source = *request.requested_source;
        policy::Decision decision = policy::evaluate(pol, system, req);
        if (decision.verdict == policy::Verdict::Ask && !request.assume_yes_for_ask) {
            if (request.just_evaluate) return deny("ask is not an allow when only evaluating");
            // A relay's call for a remote qube (Qubes Air): no one on this
            // host started it, so no prompt here can vouch for it.
            if (req.requested_source)
                return deny("denied: ask for a call from the remote qube " + *req.requested_source +
                            " (through " + request.source + "): no prompt answers for another zone's qubes");
            return deny("denied for non-interactive ask");
        }
        // Under assume_yes_for_ask an ask is answered with the requested
        // target, also when only evaluating (as Qubes' daemon does).
        if (decision.verdict == policy::Verdict::Ask)
            decision = policy::answer_ask(pol, system, decision, policy::assumed_ask_choice(system, decision));
        if (!policy::answer_allows(decision, request.just_evaluate))
            return deny(decision.refusal ? *decision.refusal : decision.reason);
        std::string text = policy::render_answer(decision, request.just_evaluate);
        text.pop_back();  // Qubes' daemon sends the lines without the last newline
        return text;
    } catch (const std::exception& e) {
        return deny(std::string("error evaluating policy: ") + e.what());
    }
}

}  // namespace aerie::qrexec
