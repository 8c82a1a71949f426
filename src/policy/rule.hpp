// One policy rule (a line of a .policy file, or of an old-format file pulled
// in by !include-service) and the parsing of such lines.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/token.hpp"

namespace aerie::policy {

enum class Action : uint8_t { Allow, Deny, Ask };

std::string_view action_name(Action action);  // "allow", "deny", "ask"

struct Rule {
    std::optional<std::string> service;   // nullopt: "*"
    std::optional<std::string> argument;  // nullopt: "*"; else starts with '+'
    Token source;
    Token target;
    Action action = Action::Deny;
    std::optional<Token> redirect;        // target=
    std::optional<Token> default_target;  // default_target= (ask)
    std::optional<std::string> user;      // user=
    bool notify = false;
    bool autostart = true;
    std::string file;
    long line = 0;

    // "FILE:LINE", as it appears in denial reasons.
    std::string location() const { return file + ":" + std::to_string(line); }
};

// Checks SERVICE and ARGUMENT columns; "*" becomes nullopt. Throws
// PolicySyntaxError with Qubes' message.
void validate_service_and_argument(std::string_view service, std::string_view argument,
                                   std::optional<std::string>* service_out,
                                   std::optional<std::string>* argument_out,
                                   const std::string& file, long line);

// Parses "SERVICE ARGUMENT SOURCE TARGET ACTION [KEY=VALUE ...]" (already
// stripped, not a comment or directive). Throws PolicySyntaxError.
Rule parse_rule_line(std::string_view line, const std::string& file, long lineno);

// Parses an old-format line "SOURCE TARGET ACTION[,KEY=VALUE...]" for the given
// service and argument (already validated; nullopt is "*"). The caller has
// applied the $ -> @ and , -> space substitutions.
Rule parse_service_rule_line(const std::optional<std::string>& service,
                             const std::optional<std::string>& argument, std::string_view line,
                             const std::string& file, long lineno);

}  // namespace aerie::policy
