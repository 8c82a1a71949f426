// Line syntax of policy files: fields, SERVICE/ARGUMENT checks, action
// parameters, and every syntax error message, exactly as Qubes words it.
#include <gtest/gtest.h>

#include <string>

#include "policy/errors.hpp"
#include "policy/rule.hpp"
#include "policy_test_support.hpp"

namespace aerie::policy {
namespace {

using test::parse;
using test::parse_error;

// "FILE:1: " + message, the form of every syntax error on line 1.
std::string line1(const std::string& message) { return test::kFile + ":1: " + message; }

TEST(PolicySyntax, ErrorCarriesFileLineAndMessage) {
    try {
        parse("# comment\n\nsvc * work\n");
        FAIL() << "no error";
    } catch (const PolicySyntaxError& e) {
        EXPECT_EQ(e.file(), test::kFile);
        EXPECT_EQ(e.line(), 3);
        EXPECT_EQ(e.message(), "wrong number of fields");
        EXPECT_EQ(std::string(e.what()), test::kFile + ":3: wrong number of fields");
    }
}

TEST(PolicySyntax, WrongNumberOfFields) {
    EXPECT_EQ(parse_error("svc"), line1("wrong number of fields"));
    EXPECT_EQ(parse_error("svc * work @anyvm"), line1("wrong number of fields"));
    EXPECT_EQ(parse_error("svc * work @anyvm allow"), "no error");
}

TEST(PolicySyntax, InvalidAction) {
    EXPECT_EQ(parse_error("svc * work @anyvm permit"), line1("invalid action: permit"));
    EXPECT_EQ(parse_error("svc * work @anyvm Allow"), line1("invalid action: Allow"));
}

TEST(PolicySyntax, ActionParameterSyntax) {
    EXPECT_EQ(parse_error("svc * work @anyvm allow p"), line1("invalid action parameter syntax: 'p'"));
    EXPECT_EQ(parse_error("svc * work @anyvm allow user=x p"),
              line1("invalid action parameter syntax: 'p'"));
    // No inline comments: "#" after a rule is just another (bad) parameter.
    EXPECT_EQ(parse_error("svc * work @anyvm allow # comment"),
              line1("invalid action parameter syntax: '#'"));
    // Only the first "=" separates key and value.
    Policy p = parse("svc * work @anyvm allow user=a=b");
    EXPECT_EQ(p.rules()[0].user, "a=b");
}

TEST(PolicySyntax, ParameterGivenTwice) {
    EXPECT_EQ(parse_error("svc * work @anyvm allow user=a user=b"),
              line1("parameter given twice: 'user'"));
    EXPECT_EQ(parse_error("svc * work @anyvm deny notify=yes notify=yes"),
              line1("parameter given twice: 'notify'"));
}

TEST(PolicySyntax, BooleanParameters) {
    EXPECT_EQ(parse_error("svc * work @anyvm deny notify=xx"),
              line1("'notify' is 'xx', but can be only 'yes' or 'no'"));
    EXPECT_EQ(parse_error("svc * work @anyvm allow autostart=maybe"),
              line1("'autostart' is 'maybe', but can be only 'yes' or 'no'"));
    EXPECT_EQ(parse_error("svc * work @anyvm ask notify=YES"),
              line1("'notify' is 'YES', but can be only 'yes' or 'no'"));
    // Booleans are checked before the key set (as upstream does).
    EXPECT_EQ(parse_error("svc * work @anyvm deny autostart=x"),
              line1("'autostart' is 'x', but can be only 'yes' or 'no'"));
}

TEST(PolicySyntax, InvalidParametersListAllParameters) {
    EXPECT_EQ(parse_error("svc * work @anyvm allow foo=bar"),
              line1("invalid parameters for action Allow: ['foo=bar']"));
    EXPECT_EQ(parse_error("svc * work @anyvm allow target=work foo=bar"),
              line1("invalid parameters for action Allow: ['target=work', 'foo=bar']"));
    EXPECT_EQ(parse_error("svc * work @anyvm allow default_target=work"),
              line1("invalid parameters for action Allow: ['default_target=work']"));
    EXPECT_EQ(parse_error("svc * work @anyvm deny target=work"),
              line1("invalid parameters for action Deny: ['target=work']"));
    EXPECT_EQ(parse_error("svc * work @anyvm deny user=root"),
              line1("invalid parameters for action Deny: ['user=root']"));
    EXPECT_EQ(parse_error("svc * work @anyvm deny notify=no autostart=no"),
              line1("invalid parameters for action Deny: ['notify=no', 'autostart=no']"));
    EXPECT_EQ(parse_error("svc * work @anyvm ask foo=1"),
              line1("invalid parameters for action Ask: ['foo=1']"));
    // Keys are case-sensitive.
    EXPECT_EQ(parse_error("svc * work @anyvm allow Target=work"),
              line1("invalid parameters for action Allow: ['Target=work']"));
}

TEST(PolicySyntax, AllowedParameterSetsParse) {
    EXPECT_EQ(parse_error("svc * work @anyvm deny notify=no\n"
                          "svc * work @anyvm allow target=personal user=root notify=yes "
                          "autostart=no\n"
                          "svc * work @anyvm ask target=personal default_target=personal "
                          "user=u notify=yes autostart=yes\n"),
              "no error");
}

TEST(PolicySyntax, ParsedRuleFieldsAndDefaults) {
    Policy p = parse(
        "svc +arg work @anyvm deny\n"
        "svc +arg work @anyvm deny notify=no\n"
        "* * work @anyvm allow\n"
        "svc * work @anyvm allow target=dom0 user=root notify=yes autostart=no\n"
        "svc * work @anyvm ask default_target=@dispvm\n");
    const auto& r = p.rules();
    ASSERT_EQ(r.size(), 5u);
    EXPECT_EQ(r[0].service, "svc");
    EXPECT_EQ(r[0].argument, "+arg");
    EXPECT_EQ(r[0].action, Action::Deny);
    EXPECT_TRUE(r[0].notify);  // deny notifies unless told not to
    EXPECT_FALSE(r[1].notify);
    EXPECT_EQ(r[1].line, 2);
    EXPECT_EQ(r[1].file, test::kFile);
    EXPECT_EQ(r[1].location(), test::kFile + ":2");

    EXPECT_FALSE(r[2].service.has_value());  // "*"
    EXPECT_FALSE(r[2].argument.has_value());
    EXPECT_FALSE(r[2].notify);  // allow does not notify by default
    EXPECT_TRUE(r[2].autostart);
    EXPECT_FALSE(r[2].user.has_value());
    EXPECT_FALSE(r[2].redirect.has_value());

    EXPECT_EQ(r[3].redirect->kind, TokenKind::AdminVM);
    EXPECT_EQ(r[3].user, "root");
    EXPECT_TRUE(r[3].notify);
    EXPECT_FALSE(r[3].autostart);

    EXPECT_EQ(r[4].action, Action::Ask);
    EXPECT_FALSE(r[4].notify);
    EXPECT_EQ(r[4].default_target->kind, TokenKind::DispVM);
    EXPECT_EQ(action_name(r[4].action), "ask");
    EXPECT_EQ(action_name(Action::Allow), "allow");
    EXPECT_EQ(action_name(Action::Deny), "deny");
}

TEST(PolicySyntax, ServiceCharacters) {
    EXPECT_EQ(parse_error("qubes.Filecopy_2-x * work @anyvm deny"), "no error");
    EXPECT_EQ(parse_error("a!b * work @anyvm deny"),
              line1("service 'a!b' contains invalid characters: ('!',)"));
    // '+' is allowed in arguments, never in a service name.
    EXPECT_EQ(parse_error("a+b * work @anyvm deny"),
              line1("service 'a+b' contains invalid characters: ('+',)"));
    // Sorted and unique, as Python's tuple(sorted(set(...))).
    EXPECT_EQ(parse_error("z@a!b@ * work @anyvm deny"),
              line1("service 'z@a!b@' contains invalid characters: ('!', '@')"));
    // repr() switches to double quotes when the text holds a single quote.
    EXPECT_EQ(parse_error("a'b * work @anyvm deny"),
              line1("service \"a'b\" contains invalid characters: (\"'\",)"));
    // A non-ASCII character is reported whole.
    EXPECT_EQ(parse_error("caf\xc3\xa9 * work @anyvm deny"),
              line1("service 'caf\xc3\xa9' contains invalid characters: ('\xc3\xa9',)"));
    // A byte-order mark is no whitespace: it sticks to the first field.
    EXPECT_EQ(parse_error("\xef\xbb\xbfsvc * work @anyvm deny"),
              line1("service '\\ufeffsvc' contains invalid characters: ('\\ufeff',)"));
    EXPECT_EQ(parse_error("svc +a\xc2\xad" "b work @anyvm deny"),
              line1("argument '+a\\xadb' contains invalid characters: ('\\xad',)"));
    // Control characters are escaped as repr() does.
    EXPECT_EQ(parse_error("a\x01z * work @anyvm deny"),
              line1("service 'a\\x01z' contains invalid characters: ('\\x01',)"));
}

TEST(PolicySyntax, ArgumentChecks) {
    EXPECT_EQ(parse_error("svc foo work @anyvm deny"), line1("argument 'foo' does not start with +"));
    EXPECT_EQ(parse_error("svc +a!b work @anyvm deny"),
              line1("argument '+a!b' contains invalid characters: ('!',)"));
    // Invalid characters are reported before the missing '+'.
    EXPECT_EQ(parse_error("svc a!b work @anyvm deny"),
              line1("argument 'a!b' contains invalid characters: ('!',)"));
    EXPECT_EQ(parse_error("* +arg work @anyvm deny"), line1("only * argument allowed for * service"));
    EXPECT_EQ(parse_error("svc + work @anyvm deny\nsvc +a+b.c_d-e work @anyvm deny"), "no error");
}

TEST(PolicySyntax, AllowToDefaultNeedsTarget) {
    EXPECT_EQ(parse_error("svc * work @default allow"),
              line1("allow action for @default rule must specify target= option"));
    EXPECT_EQ(parse_error("svc * work @default allow user=root"),
              line1("allow action for @default rule must specify target= option"));
    EXPECT_EQ(parse_error("svc * work @default allow target=personal\n"
                          "svc * work @default ask\n"
                          "svc * work @default deny\n"),
              "no error");
}

TEST(PolicySyntax, LinesAreStrippedAndCommentsSkipped) {
    Policy p = parse(
        "# a comment\n"
        "   # an indented comment\n"
        "\n"
        "  \t  \n"
        "\tsvc\t*  work \t @anyvm   deny  \n"
        "svc\xc2\xa0*\xc2\xa0personal\xc2\xa0@anyvm\xc2\xa0""deny\n");  // U+00A0 splits fields
    ASSERT_EQ(p.size(), 2u);
    EXPECT_EQ(p.rules()[0].line, 5);
    EXPECT_EQ(p.rules()[0].source.text, "work");
    EXPECT_EQ(p.rules()[1].source.text, "personal");
}

TEST(PolicySyntax, LineNumbersFollowUniversalNewlines) {
    // \r\n, lone \r and \n all end a line; a trailing newline adds no line.
    Policy p = parse("svc * work @anyvm deny\r\n\rsvc * personal @anyvm deny\r");
    ASSERT_EQ(p.size(), 2u);
    EXPECT_EQ(p.rules()[0].line, 1);
    EXPECT_EQ(p.rules()[1].line, 3);
    EXPECT_EQ(parse_error("svc * work @anyvm deny\r\n\rsvc * personal @anyvm deny\nbad\n"),
              test::kFile + ":4: wrong number of fields");
}

}  // namespace
}  // namespace aerie::policy
