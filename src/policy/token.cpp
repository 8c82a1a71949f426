#include "policy/token.hpp"

#include <array>

#include "policy/errors.hpp"
#include "policy/text.hpp"

namespace aerie::policy {

std::string_view column_name(Column column) {
    switch (column) {
        case Column::Source: return "source";
        case Column::Target: return "target";
        case Column::Redirect: return "redirect";
        case Column::IntendedTarget: return "intendedtarget";
    }
    return "?";
}

namespace {

// Which token kinds each column admits (the spec's token table).
bool allowed(TokenKind kind, Column column) {
    switch (column) {
        case Column::Source:
            return kind != TokenKind::Default && kind != TokenKind::DispVM;
        case Column::Target:
            return true;
        case Column::Redirect:
            return kind == TokenKind::Name || kind == TokenKind::AdminVM ||
                   kind == TokenKind::DispVM || kind == TokenKind::DispVMTemplate;
        case Column::IntendedTarget:
            return kind == TokenKind::Name || kind == TokenKind::AdminVM ||
                   kind == TokenKind::Default || kind == TokenKind::DispVM ||
                   kind == TokenKind::DispVMTemplate;
    }
    return false;
}

struct Exact {
    std::string_view text;
    TokenKind kind;
};
constexpr std::array<Exact, 5> kExacts{{
    {"*", TokenKind::Wildcard},
    {"@adminvm", TokenKind::AdminVM},
    {"@anyvm", TokenKind::AnyVM},
    {"@default", TokenKind::Default},
    {"@dispvm", TokenKind::DispVM},
}};

// Order matters: "@dispvm:@tag:x" first reaches "@dispvm:", whose value starts
// with '@' and so falls through to the longer prefix.
constexpr std::array<Exact, 4> kPrefixes{{
    {"@type:", TokenKind::Type},
    {"@tag:", TokenKind::Tag},
    {"@dispvm:", TokenKind::DispVMTemplate},
    {"@dispvm:@tag:", TokenKind::DispVMTag},
}};

}  // namespace

bool is_uuid_designator(std::string_view name, std::string_view* uuid) {
    if (name.substr(0, 5) != "uuid:") return false;
    if (uuid) *uuid = name.substr(5);
    return true;
}

Token parse_token(std::string_view raw, Column column) {
    std::string_view token = raw;
    if (token == "dom0" || (token.substr(0, 5) == "uuid:" && token.substr(5) == kDom0Uuid))
        token = "@adminvm";

    if (token.empty()) {
        throw TokenError("invalid empty " + std::string(column_name(column)) + " token: ''");
    }

    for (const auto& exact : kExacts) {
        if (token == exact.text) {
            if (!allowed(exact.kind, column)) break;
            return Token{exact.kind, std::string(token), {}, std::string(raw)};
        }
    }

    if (token[0] != '@' && token != "*") {
        return Token{TokenKind::Name, std::string(token), std::string(token), std::string(raw)};
    }

    for (const auto& prefix : kPrefixes) {
        if (!allowed(prefix.kind, column)) continue;
        if (token.substr(0, prefix.text.size()) != prefix.text) continue;
        std::string_view value = token.substr(prefix.text.size());
        if (value.empty()) {
            throw TokenError("invalid empty " + std::string(prefix.text) + " token: " +
                             text::py_repr(token));
        }
        if (value[0] == '@') continue;
        return Token{prefix.kind, std::string(token), std::string(value), std::string(raw)};
    }

    throw TokenError("invalid " + std::string(column_name(column)) + " token: " +
                     text::py_repr(raw));
}

}  // namespace aerie::policy
