// The qube designators of the policy language (names, "*" and @-keywords) and
// where each may stand: SOURCE and TARGET columns, target=/default_target=
// ("redirect") and what a caller may ask for ("intendedtarget").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace aerie::policy {

enum class TokenKind : uint8_t {
    Name,            // a qube name, or uuid:<UUID>
    Wildcard,        // *
    AnyVM,           // @anyvm
    AdminVM,         // @adminvm (also written dom0 or dom0's uuid:)
    Default,         // @default
    Type,            // @type:T
    Tag,             // @tag:T
    DispVM,          // @dispvm
    DispVMTemplate,  // @dispvm:NAME
    DispVMTag,       // @dispvm:@tag:T
};

enum class Column : uint8_t { Source, Target, Redirect, IntendedTarget };

// Name of the column as Qubes spells it in "invalid <column> token" messages.
std::string_view column_name(Column column);

inline constexpr std::string_view kDom0Uuid = "00000000-0000-0000-0000-000000000000";

struct Token {
    TokenKind kind = TokenKind::Name;
    std::string text;     // normalised text: "@adminvm" for dom0, "@tag:x", "work"
    std::string value;    // the part after the prefix (@type:, @tag:, @dispvm:, ...);
                          // the name itself for Name
    std::string written;  // as the policy wrote it ("dom0", "uuid:0000...", "@adminvm")

    bool is_keyword() const { return !text.empty() && text[0] == '@'; }
    bool operator==(const Token& other) const { return kind == other.kind && text == other.text; }
};

// Parses one token for one column. Throws TokenError with Qubes' message
// ("invalid target token: '@foo'", "invalid empty @tag: token: '@tag:'").
Token parse_token(std::string_view raw, Column column);

// True if a literal name token (or @dispvm:<value>) designates a qube by
// uuid: and returns the bare uuid in *uuid.
bool is_uuid_designator(std::string_view name, std::string_view* uuid);

}  // namespace aerie::policy
