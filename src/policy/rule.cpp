#include "policy/rule.hpp"

#include <algorithm>
#include <set>

#include "policy/errors.hpp"
#include "policy/text.hpp"

namespace aerie::policy {

std::string_view action_name(Action action) {
    switch (action) {
        case Action::Allow: return "allow";
        case Action::Deny: return "deny";
        case Action::Ask: return "ask";
    }
    return "?";
}

namespace {

bool is_rpcname_char(unsigned char c, bool allow_plus) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '_' || c == '-' || (allow_plus && c == '+');
}

// The characters of s (whole UTF-8 sequences) that are not allowed, sorted
// and unique, as Qubes lists them.
std::vector<std::string> invalid_characters(std::string_view s, bool allow_plus) {
    std::set<std::string> bad;
    for (size_t i = 0; i < s.size();) {
        auto c = static_cast<unsigned char>(s[i]);
        size_t len = c < 0x80 ? 1 : c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
        len = std::min(len, s.size() - i);
        if (len > 1 || !is_rpcname_char(c, allow_plus)) bad.emplace(s.substr(i, len));
        i += len;
    }
    return {bad.begin(), bad.end()};
}

[[noreturn]] void syntax(const std::string& file, long line, std::string message) {
    throw PolicySyntaxError(file, line, std::move(message));
}

Token parse_column_token(std::string_view raw, Column column, const std::string& file, long line) {
    try {
        return parse_token(raw, column);
    } catch (const TokenError& e) {
        syntax(file, line, e.what());
    }
}

// Builds a rule from its columns after SERVICE and ARGUMENT.
Rule build_rule(std::optional<std::string> service, std::optional<std::string> argument,
                std::string_view source, std::string_view target, std::string_view action,
                const std::vector<std::string_view>& params, const std::string& file, long line) {
    Rule rule;
    rule.file = file;
    rule.line = line;
    rule.service = std::move(service);
    rule.argument = std::move(argument);
    rule.source = parse_column_token(source, Column::Source, file, line);
    rule.target = parse_column_token(target, Column::Target, file, line);

    const char* class_name;
    if (action == "allow") {
        rule.action = Action::Allow;
        class_name = "Allow";
    } else if (action == "deny") {
        rule.action = Action::Deny;
        class_name = "Deny";
    } else if (action == "ask") {
        rule.action = Action::Ask;
        class_name = "Ask";
    } else {
        syntax(file, line, "invalid action: " + std::string(action));
    }

    std::vector<std::pair<std::string_view, std::string_view>> kwds;
    for (std::string_view param : params) {
        auto eq = param.find('=');
        if (eq == std::string_view::npos)
            syntax(file, line, "invalid action parameter syntax: " + text::py_repr(param));
        std::string_view key = param.substr(0, eq);
        for (const auto& kv : kwds) {
            if (kv.first == key) syntax(file, line, "parameter given twice: " + text::py_repr(key));
        }
        kwds.emplace_back(key, param.substr(eq + 1));
    }

    // Boolean parameters are checked for every action, before the key set.
    std::optional<bool> notify, autostart;
    for (const auto& [key, value] : kwds) {
        if (key != "notify" && key != "autostart") continue;
        if (value != "yes" && value != "no") {
            syntax(file, line,
                   text::py_repr(key) + " is " + text::py_repr(value) +
                       ", but can be only 'yes' or 'no'");
        }
        (key == "notify" ? notify : autostart) = (value == "yes");
    }

    auto key_allowed = [&](std::string_view key) {
        if (key == "notify") return true;
        if (rule.action == Action::Deny) return false;
        if (key == "target" || key == "user" || key == "autostart") return true;
        return rule.action == Action::Ask && key == "default_target";
    };
    for (const auto& kv : kwds) {
        if (!key_allowed(kv.first)) {
            syntax(file, line,
                   std::string("invalid parameters for action ") + class_name + ": " +
                       text::py_repr_list(params));
        }
    }

    rule.notify = notify.value_or(rule.action == Action::Deny);
    rule.autostart = autostart.value_or(true);
    for (const auto& [key, value] : kwds) {
        if (key == "target") rule.redirect = parse_column_token(value, Column::Redirect, file, line);
        if (key == "user") rule.user = std::string(value);
    }
    for (const auto& [key, value] : kwds) {
        if (key == "default_target")
            rule.default_target = parse_column_token(value, Column::Redirect, file, line);
    }

    if (rule.target.kind == TokenKind::Default && rule.action == Action::Allow && !rule.redirect)
        syntax(file, line, "allow action for @default rule must specify target= option");
    return rule;
}

}  // namespace

void validate_service_and_argument(std::string_view service, std::string_view argument,
                                   std::optional<std::string>* service_out,
                                   std::optional<std::string>* argument_out,
                                   const std::string& file, long line) {
    service_out->reset();
    argument_out->reset();
    if (service != "*") {
        auto bad = invalid_characters(service, /*allow_plus=*/false);
        if (!bad.empty()) {
            syntax(file, line,
                   "service " + text::py_repr(service) + " contains invalid characters: " +
                       text::py_repr_char_tuple(bad));
        }
        *service_out = std::string(service);
    }
    if (argument != "*") {
        auto bad = invalid_characters(argument, /*allow_plus=*/true);
        if (!bad.empty()) {
            syntax(file, line,
                   "argument " + text::py_repr(argument) + " contains invalid characters: " +
                       text::py_repr_char_tuple(bad));
        }
        if (argument.empty() || argument[0] != '+')
            syntax(file, line, "argument " + text::py_repr(argument) + " does not start with +");
        if (!*service_out) syntax(file, line, "only * argument allowed for * service");
        *argument_out = std::string(argument);
    }
}

Rule parse_rule_line(std::string_view line, const std::string& file, long lineno) {
    auto fields = text::split_fields(line);
    if (fields.size() < 5) syntax(file, lineno, "wrong number of fields");
    std::optional<std::string> service, argument;
    validate_service_and_argument(fields[0], fields[1], &service, &argument, file, lineno);
    std::vector<std::string_view> params(fields.begin() + 5, fields.end());
    return build_rule(std::move(service), std::move(argument), fields[2], fields[3], fields[4],
                      params, file, lineno);
}

Rule parse_service_rule_line(const std::optional<std::string>& service,
                             const std::optional<std::string>& argument, std::string_view line,
                             const std::string& file, long lineno) {
    auto fields = text::split_fields(line);
    if (fields.size() < 3) syntax(file, lineno, "wrong number of fields");
    std::vector<std::string_view> params(fields.begin() + 3, fields.end());
    return build_rule(service, argument, fields[0], fields[1], fields[2], params, file, lineno);
}

}  // namespace aerie::policy
