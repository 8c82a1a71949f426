// The token table: which designator may stand in which column, what it parses
// to, and the exact error for every place it may not stand.
#include <gtest/gtest.h>

#include <array>
#include <string>

#include "policy/errors.hpp"
#include "policy/token.hpp"
#include "policy_test_support.hpp"

namespace aerie::policy {
namespace {

using test::parse_error;

constexpr std::array<Column, 4> kColumns{Column::Source, Column::Target, Column::Redirect,
                                         Column::IntendedTarget};

struct Row {
    const char* token;
    TokenKind kind;
    // SOURCE, TARGET, target=/default_target=, what a caller may request
    std::array<bool, 4> allowed;
};

// The spec's table, row by row (plus the dom0 spellings of @adminvm).
const Row kTable[] = {
    {"work", TokenKind::Name, {true, true, true, true}},
    {"uuid:11111111-1111-4111-8111-111111111111", TokenKind::Name, {true, true, true, true}},
    {"*", TokenKind::Wildcard, {true, true, false, false}},
    {"@anyvm", TokenKind::AnyVM, {true, true, false, false}},
    {"@adminvm", TokenKind::AdminVM, {true, true, true, true}},
    {"dom0", TokenKind::AdminVM, {true, true, true, true}},
    {"uuid:00000000-0000-0000-0000-000000000000", TokenKind::AdminVM, {true, true, true, true}},
    {"@default", TokenKind::Default, {false, true, false, true}},
    {"@type:AppVM", TokenKind::Type, {true, true, false, false}},
    {"@tag:work-tag", TokenKind::Tag, {true, true, false, false}},
    {"@dispvm", TokenKind::DispVM, {false, true, true, true}},
    {"@dispvm:default-dvm", TokenKind::DispVMTemplate, {true, true, true, true}},
    {"@dispvm:uuid:33333333-3333-4333-8333-333333333333", TokenKind::DispVMTemplate,
     {true, true, true, true}},
    {"@dispvm:@tag:dvm-tag", TokenKind::DispVMTag, {true, true, false, false}},
};

TEST(PolicyToken, EveryRowOfTheTableInEveryColumn) {
    for (const Row& row : kTable) {
        for (size_t i = 0; i < kColumns.size(); ++i) {
            Column column = kColumns[i];
            SCOPED_TRACE(std::string(row.token) + " in " + std::string(column_name(column)));
            if (row.allowed[i]) {
                Token t = parse_token(row.token, column);
                EXPECT_EQ(t.kind, row.kind);
            } else {
                try {
                    parse_token(row.token, column);
                    ADD_FAILURE() << "accepted";
                } catch (const TokenError& e) {
                    EXPECT_EQ(std::string(e.what()), "invalid " + std::string(column_name(column)) +
                                                         " token: '" + row.token + "'");
                }
            }
        }
    }
}

TEST(PolicyToken, ColumnNamesAreQubesClassNames) {
    EXPECT_EQ(column_name(Column::Source), "source");
    EXPECT_EQ(column_name(Column::Target), "target");
    EXPECT_EQ(column_name(Column::Redirect), "redirect");
    EXPECT_EQ(column_name(Column::IntendedTarget), "intendedtarget");
}

TEST(PolicyToken, TextAndValueOfEachKind) {
    Token name = parse_token("work", Column::Target);
    EXPECT_EQ(name.text, "work");
    EXPECT_EQ(name.value, "work");
    EXPECT_FALSE(name.is_keyword());

    Token uuid = parse_token("uuid:11111111-1111-4111-8111-111111111111", Column::Source);
    EXPECT_EQ(uuid.value, "uuid:11111111-1111-4111-8111-111111111111");

    Token type = parse_token("@type:TemplateVM", Column::Source);
    EXPECT_EQ(type.value, "TemplateVM");
    EXPECT_TRUE(type.is_keyword());
    EXPECT_EQ(parse_token("@tag:a.b-c", Column::Target).value, "a.b-c");
    EXPECT_EQ(parse_token("@dispvm:default-dvm", Column::Redirect).value, "default-dvm");
    EXPECT_EQ(parse_token("@dispvm:uuid:abc", Column::IntendedTarget).value, "uuid:abc");
    Token dvmtag = parse_token("@dispvm:@tag:t", Column::Target);
    EXPECT_EQ(dvmtag.value, "t");
    EXPECT_EQ(dvmtag.text, "@dispvm:@tag:t");
}

TEST(PolicyToken, Dom0AndItsUuidAreAdminVm) {
    for (const char* raw : {"dom0", "@adminvm", "uuid:00000000-0000-0000-0000-000000000000"}) {
        for (Column column : kColumns) {
            Token t = parse_token(raw, column);
            EXPECT_EQ(t.kind, TokenKind::AdminVM) << raw;
            EXPECT_EQ(t.text, "@adminvm") << raw;
        }
    }
    // Another uuid stays a name, and tokens compare by kind and normalised text.
    EXPECT_EQ(parse_token("uuid:00000000-0000-0000-0000-000000000001", Column::Target).kind,
              TokenKind::Name);
    EXPECT_EQ(parse_token("dom0", Column::Target), parse_token("@adminvm", Column::Source));
    EXPECT_FALSE(parse_token("work", Column::Target) == parse_token("@adminvm", Column::Target));
}

std::string token_error(const char* raw, Column column) {
    try {
        parse_token(raw, column);
    } catch (const TokenError& e) {
        return e.what();
    }
    return "no error";
}

TEST(PolicyToken, EmptyValueAfterPrefixIsAnError) {
    EXPECT_EQ(token_error("@tag:", Column::Source), "invalid empty @tag: token: '@tag:'");
    EXPECT_EQ(token_error("@tag:", Column::Target), "invalid empty @tag: token: '@tag:'");
    EXPECT_EQ(token_error("@type:", Column::Target), "invalid empty @type: token: '@type:'");
    EXPECT_EQ(token_error("@dispvm:", Column::Source), "invalid empty @dispvm: token: '@dispvm:'");
    EXPECT_EQ(token_error("@dispvm:", Column::Redirect),
              "invalid empty @dispvm: token: '@dispvm:'");
    EXPECT_EQ(token_error("@dispvm:", Column::IntendedTarget),
              "invalid empty @dispvm: token: '@dispvm:'");
    EXPECT_EQ(token_error("@dispvm:@tag:", Column::Target),
              "invalid empty @dispvm:@tag: token: '@dispvm:@tag:'");
    // A prefix the column does not admit is just an invalid token there.
    EXPECT_EQ(token_error("@tag:", Column::Redirect), "invalid redirect token: '@tag:'");
    EXPECT_EQ(token_error("@type:", Column::IntendedTarget),
              "invalid intendedtarget token: '@type:'");
    EXPECT_EQ(token_error("@dispvm:@tag:", Column::Redirect),
              "invalid redirect token: '@dispvm:@tag:'");
}

TEST(PolicyToken, UnknownKeywordsAreInvalid) {
    EXPECT_EQ(token_error("@uuid:11111111-1111-4111-8111-111111111111", Column::Target),
              "invalid target token: '@uuid:11111111-1111-4111-8111-111111111111'");
    EXPECT_EQ(token_error("@uuid:", Column::Source), "invalid source token: '@uuid:'");
    EXPECT_EQ(token_error("@foo", Column::Target), "invalid target token: '@foo'");
    EXPECT_EQ(token_error("@ANYVM", Column::Source), "invalid source token: '@ANYVM'");
    EXPECT_EQ(token_error("@", Column::Target), "invalid target token: '@'");
    EXPECT_EQ(token_error("@anyvm:x", Column::Target), "invalid target token: '@anyvm:x'");
    EXPECT_EQ(token_error("@dispvm:@foo", Column::Target), "invalid target token: '@dispvm:@foo'");
    EXPECT_EQ(token_error("@type:@x", Column::Source), "invalid source token: '@type:@x'");
    EXPECT_EQ(token_error("", Column::Redirect), "invalid empty redirect token: ''");
}

TEST(PolicyToken, UuidDesignator) {
    std::string_view uuid;
    EXPECT_TRUE(is_uuid_designator("uuid:abc", &uuid));
    EXPECT_EQ(uuid, "abc");
    EXPECT_FALSE(is_uuid_designator("work", &uuid));
    EXPECT_FALSE(is_uuid_designator("uuid", nullptr));
}

// The same table seen through whole policy lines: the column decides the message.
TEST(PolicyToken, ColumnsInPolicyLines) {
    const std::string f = test::kFile + ":1: ";
    EXPECT_EQ(parse_error("svc * @default work allow"), f + "invalid source token: '@default'");
    EXPECT_EQ(parse_error("svc * @dispvm work allow"), f + "invalid source token: '@dispvm'");
    EXPECT_EQ(parse_error("svc * work @foo allow"), f + "invalid target token: '@foo'");
    EXPECT_EQ(parse_error("svc * work @anyvm allow target=@anyvm"),
              f + "invalid redirect token: '@anyvm'");
    EXPECT_EQ(parse_error("svc * work @anyvm allow target=*"), f + "invalid redirect token: '*'");
    EXPECT_EQ(parse_error("svc * work @anyvm ask target=@default"),
              f + "invalid redirect token: '@default'");
    EXPECT_EQ(parse_error("svc * work @anyvm ask default_target=@type:AppVM"),
              f + "invalid redirect token: '@type:AppVM'");
    EXPECT_EQ(parse_error("svc * work @anyvm ask default_target=@tag:x"),
              f + "invalid redirect token: '@tag:x'");
    EXPECT_EQ(parse_error("svc * work @anyvm ask default_target=@dispvm:@tag:x"),
              f + "invalid redirect token: '@dispvm:@tag:x'");
    EXPECT_EQ(parse_error("svc * @tag: @anyvm deny"), f + "invalid empty @tag: token: '@tag:'");
    EXPECT_EQ(parse_error("svc * work @anyvm allow target="), f + "invalid empty redirect token: ''");

    // Every allowed placement parses.
    EXPECT_EQ(parse_error("svc * @dispvm:default-dvm @dispvm:@tag:t allow\n"
                          "svc * @dispvm:@tag:t @dispvm deny\n"
                          "svc * @type:AppVM @tag:x ask target=@dispvm default_target=dom0\n"
                          "svc * * * allow target=@dispvm:default-dvm\n"
                          "svc * uuid:x @default ask default_target=uuid:y\n"
                          "svc * @adminvm @adminvm allow target=@adminvm\n"),
              "no error");
}

}  // namespace
}  // namespace aerie::policy
