// Text helpers that reproduce Python's view of a policy file, and the linter's
// line-by-line check.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "policy/loader.hpp"
#include "policy/text.hpp"

namespace aerie::policy {
namespace {

using SV = std::vector<std::string_view>;

TEST(PolicyText, SplitLinesLikeUniversalNewlines) {
    EXPECT_EQ(text::split_lines("a\nb\r\nc\rd"), (SV{"a", "b", "c", "d"}));
    EXPECT_EQ(text::split_lines("a\n"), (SV{"a"}));
    EXPECT_EQ(text::split_lines("a\n\nb"), (SV{"a", "", "b"}));
    EXPECT_EQ(text::split_lines("\r\r\n"), (SV{"", ""}));
    EXPECT_EQ(text::split_lines(""), SV{});
}

TEST(PolicyText, StripAndSplitUsePythonWhitespace) {
    EXPECT_EQ(text::strip(" \t\v\f\r\n\x1c\x1f x y \xc2\xa0\xe2\x80\x83\xe3\x80\x80"), "x y");
    EXPECT_EQ(text::strip("\xc2\x85x\xe2\x80\xa8"), "x");
    EXPECT_EQ(text::strip("\xc3\xa9"), "\xc3\xa9");  // not whitespace
    EXPECT_EQ(text::split_fields("a\tb\xc2\xa0" "c\xe2\x80\xaf" "d  "), (SV{"a", "b", "c", "d"}));
    EXPECT_EQ(text::split_fields("   "), SV{});
    // U+200B ZERO WIDTH SPACE is not whitespace to Python.
    EXPECT_EQ(text::split_fields("a\xe2\x80\x8b" "b"), (SV{"a\xe2\x80\x8b" "b"}));
}

TEST(PolicyText, Utf8Validation) {
    EXPECT_TRUE(text::is_valid_utf8("plain"));
    EXPECT_TRUE(text::is_valid_utf8("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xf4\x8f\xbf\xbf"));
    EXPECT_FALSE(text::is_valid_utf8("\xc3"));
    EXPECT_FALSE(text::is_valid_utf8("\xc1\xbf"));          // overlong
    EXPECT_FALSE(text::is_valid_utf8("\xe0\x9f\xbf"));      // overlong
    EXPECT_FALSE(text::is_valid_utf8("\xed\xbf\xbf"));      // surrogate
    EXPECT_FALSE(text::is_valid_utf8("\xf4\x90\x80\x80"));  // > U+10FFFF
    EXPECT_FALSE(text::is_valid_utf8("\xf8\x88\x80\x80\x80"));
    EXPECT_FALSE(text::is_valid_utf8("\xe2\x28\xa1"));
}

TEST(PolicyText, PythonRepr) {
    EXPECT_EQ(text::py_repr("abc"), "'abc'");
    EXPECT_EQ(text::py_repr(""), "''");
    EXPECT_EQ(text::py_repr("a'b"), "\"a'b\"");
    EXPECT_EQ(text::py_repr("a\"b"), "'a\"b'");
    EXPECT_EQ(text::py_repr("a'b\"c"), "'a\\'b\"c'");
    EXPECT_EQ(text::py_repr("back\\slash"), "'back\\\\slash'");
    EXPECT_EQ(text::py_repr("\t\n\r\x01\x7f"), "'\\t\\n\\r\\x01\\x7f'");
    EXPECT_EQ(text::py_repr("caf\xc3\xa9"), "'caf\xc3\xa9'");
    EXPECT_EQ(text::py_repr("\xe2\x82\xac\xf0\x9f\x98\x80"), "'\xe2\x82\xac\xf0\x9f\x98\x80'");
    // Non-printable characters are escaped as Python does.
    EXPECT_EQ(text::py_repr("\xc2\x80\xc2\x9f"), "'\\x80\\x9f'");      // C1 controls
    EXPECT_EQ(text::py_repr("\xc2\xa0\xc2\xad"), "'\\xa0\\xad'");      // NBSP, soft hyphen
    EXPECT_EQ(text::py_repr("\xef\xbb\xbf" "a"), "'\\ufeffa'");           // BOM
    EXPECT_EQ(text::py_repr("\xe2\x80\x8b\xe2\x80\xae"), "'\\u200b\\u202e'");
    EXPECT_EQ(text::py_repr("\xee\x80\x80"), "'\\ue000'");                // private use
    EXPECT_EQ(text::py_repr("\xef\xbf\xbe"), "'\\ufffe'");                // noncharacter
    EXPECT_EQ(text::py_repr("\xf3\xa0\x80\x81"), "'\\U000e0001'");       // language tag
    EXPECT_EQ(text::py_repr("\xf4\x8f\xbf\xbd"), "'\\U0010fffd'");       // plane 16
    // Bytes that are not UTF-8 at all are shown as bytes.
    EXPECT_EQ(text::py_repr("a\xff" "b"), "'a\\xffb'");
    EXPECT_EQ(text::py_repr_char_tuple({"!"}), "('!',)");
    EXPECT_EQ(text::py_repr_char_tuple({"!", "@"}), "('!', '@')");
    EXPECT_EQ(text::py_repr_char_tuple({}), "()");
    EXPECT_EQ(text::py_repr_list({"a=b", "c"}), "['a=b', 'c']");
    EXPECT_EQ(text::py_repr_list({}), "[]");
}

std::vector<std::string> lint(std::string_view data, bool service_format = false) {
    std::vector<std::string> out;
    for (const auto& e : lint_policy_text("f.policy", data, service_format)) out.push_back(e.what());
    return out;
}

TEST(PolicyLint, ReportsEveryBadLine) {
    EXPECT_EQ(lint("svc * work\n"
                   "svc * work @anyvm allow\n"
                   "!foo\n"
                   "!include a b\n"
                   "!include-service a!b * x\n"
                   "svc * work @foo deny\n"
                   "!include anything\n"
                   "\xff\n"),
              (std::vector<std::string>{
                  "f.policy:1: wrong number of fields",
                  "f.policy:3: invalid directive",
                  "f.policy:4: invalid number of params",
                  "f.policy:5: service 'a!b' contains invalid characters: ('!',)",
                  "f.policy:6: invalid target token: '@foo'",
                  "f.policy:8: line is not valid UTF-8 text",
              }));
    EXPECT_EQ(lint("# fine\n!compat-4.0\n!include-dir d\n"), std::vector<std::string>{});
}

TEST(PolicyLint, ServiceFormat) {
    // The same substitutions and directives as the loader accepts.
    EXPECT_EQ(lint("$anyvm $dispvm allow,target=$dispvm:x\n"
                   "$include:/etc/qubes-rpc/policy/include/x\n"
                   "work\n"
                   "!include x\n"
                   "work personal allow,foo=bar\n"
                   "!include-dir x\n"
                   "$include:a b\n",
                   true),
              (std::vector<std::string>{
                  "f.policy:3: wrong number of fields",
                  "f.policy:5: invalid parameters for action Allow: ['foo=bar']",
                  "f.policy:6: invalid directive",
                  "f.policy:7: invalid number of params",
              }));
}

}  // namespace
}  // namespace aerie::policy
