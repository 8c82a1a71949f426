// Matching of SOURCE and TARGET tokens against a request, and of SERVICE and
// ARGUMENT: each rule of the spec's "Matching" section.
#include <gtest/gtest.h>

#include <string>

#include "policy_test_support.hpp"

namespace aerie::policy {
namespace {

using test::eval;

const std::string kWorkByUuid = std::string("uuid:") + test::kWorkUuid;
const std::string kDvmByUuid = std::string("uuid:") + test::kDefaultDvmUuid;

class PolicyMatch : public ::testing::Test {
protected:
    SystemInfo sys = test::standard_system();

    // True if a single "SERVICE ARG SOURCE TARGET deny" rule matches the call.
    bool matches(const std::string& rule_source, const std::string& rule_target,
                 const std::string& source, const std::string& target,
                 const std::string& service_arg = "svc * ", const std::string& call = "svc") {
        Policy p = test::parse(service_arg + rule_source + " " + rule_target + " deny\n");
        Decision d = eval(p, sys, call, source, target);
        EXPECT_EQ(d.verdict, Verdict::Deny);
        if (d.reason == "denied by policy " + test::at(1)) return true;
        EXPECT_EQ(d.reason, "no matching rule found");
        return false;
    }
    bool source_matches(const std::string& rule_source, const std::string& source) {
        return matches(rule_source, "*", source, "work");
    }
    bool target_matches(const std::string& rule_target, const std::string& target,
                        const std::string& source = "work") {
        return matches("*", rule_target, source, target);
    }
    bool call_matches(const std::string& service_arg, const std::string& call) {
        return matches("*", "*", "work", "personal", service_arg + " ", call);
    }
};

const char* const kDom0Forms[] = {"dom0", "@adminvm", "uuid:00000000-0000-0000-0000-000000000000"};

TEST_F(PolicyMatch, Dom0AdminVmAndItsUuidAreTheSameQube) {
    for (const char* rule : kDom0Forms) {
        for (const char* request : kDom0Forms) {
            EXPECT_TRUE(source_matches(rule, request)) << rule << " / " << request;
            EXPECT_TRUE(target_matches(rule, request)) << rule << " / " << request;
        }
    }
}

TEST_F(PolicyMatch, NothingElseMatchesDom0) {
    for (const std::string rule : {"work", "@anyvm", "@type:AppVM", "@tag:shared", "*"}) {
        bool wildcard = rule == "*";
        EXPECT_EQ(source_matches(rule, "dom0"), wildcard) << rule;
        EXPECT_EQ(target_matches(rule, "dom0"), wildcard) << rule;
        EXPECT_EQ(target_matches(rule, "@adminvm"), wildcard) << rule;
    }
    // ...and dom0's spellings match nothing but dom0.
    EXPECT_FALSE(source_matches("dom0", "work"));
    EXPECT_FALSE(target_matches("@adminvm", "work"));
    EXPECT_FALSE(target_matches("@adminvm", ""));
    EXPECT_FALSE(target_matches("dom0", "@dispvm"));
}

TEST_F(PolicyMatch, NamesAndUuidsOfOneQubeMatchEachOther) {
    EXPECT_TRUE(source_matches("work", "work"));
    EXPECT_TRUE(source_matches("work", kWorkByUuid));
    EXPECT_TRUE(source_matches(kWorkByUuid, "work"));
    EXPECT_TRUE(source_matches(kWorkByUuid, kWorkByUuid));
    EXPECT_TRUE(target_matches("personal", std::string("uuid:") + test::kPersonalUuid));
    EXPECT_TRUE(target_matches(std::string("uuid:") + test::kPersonalUuid, "personal"));
    // Other qubes do not.
    EXPECT_FALSE(source_matches("work", "personal"));
    EXPECT_FALSE(source_matches(kWorkByUuid, "personal"));
    EXPECT_FALSE(target_matches("work", "personal"));
    EXPECT_FALSE(target_matches(kWorkByUuid, std::string("uuid:") + test::kPersonalUuid));
}

TEST_F(PolicyMatch, UnknownSourceMatchesOnlyByName) {
    EXPECT_TRUE(source_matches("ghost", "ghost"));
    EXPECT_TRUE(source_matches("@anyvm", "ghost"));
    EXPECT_TRUE(source_matches("*", "ghost"));
    EXPECT_FALSE(source_matches("@type:AppVM", "ghost"));
    EXPECT_FALSE(source_matches("@tag:shared", "ghost"));
    EXPECT_FALSE(source_matches("work", "ghost"));
}

TEST_F(PolicyMatch, WildcardMatchesEverything) {
    for (const char* target : {"", "@default", "dom0", "@adminvm", "@dispvm",
                               "@dispvm:default-dvm", "work", "ghost"}) {
        EXPECT_TRUE(target_matches("*", target)) << target;
    }
    for (const char* source : {"dom0", "work", "ghost", "disp42"}) {
        EXPECT_TRUE(source_matches("*", source)) << source;
    }
}

TEST_F(PolicyMatch, AnyVmMatchesAllButDom0) {
    // Including @default, @dispvm, @dispvm:X and names that do not exist
    // (those became @default).
    for (const char* target : {"", "@default", "@dispvm", "@dispvm:default-dvm", "work",
                               "ghost", "disp42"}) {
        EXPECT_TRUE(target_matches("@anyvm", target)) << target;
    }
    EXPECT_FALSE(target_matches("@anyvm", "dom0"));
    EXPECT_FALSE(source_matches("@anyvm", "dom0"));
}

TEST_F(PolicyMatch, TypeNeedsAnExistingQube) {
    EXPECT_TRUE(target_matches("@type:AppVM", "work"));
    EXPECT_TRUE(target_matches("@type:AppVM", kWorkByUuid));
    EXPECT_FALSE(target_matches("@type:AppVM", "fedora"));
    EXPECT_TRUE(target_matches("@type:TemplateVM", "fedora"));
    EXPECT_TRUE(target_matches("@type:DispVM", "disp42"));
    EXPECT_FALSE(target_matches("@type:AppVM", "ghost"));  // -> @default
    EXPECT_FALSE(target_matches("@type:AppVM", "@dispvm"));
    EXPECT_FALSE(target_matches("@type:AppVM", "@dispvm:default-dvm"));
    EXPECT_TRUE(source_matches("@type:AppVM", "work"));
    EXPECT_FALSE(source_matches("@type:TemplateVM", "work"));
    // dom0 (as a source, or a target spelled by name or uuid) is a qube of
    // type AdminVM; the requested target @adminvm is a keyword, not a qube of
    // the system info.
    EXPECT_TRUE(source_matches("@type:AdminVM", "dom0"));
    EXPECT_FALSE(target_matches("@type:AdminVM", "@adminvm"));
    EXPECT_TRUE(target_matches("@type:AdminVM", "dom0"));
    EXPECT_TRUE(target_matches("@type:AdminVM", std::string("uuid:") + test::kAdminUuid));
}

TEST_F(PolicyMatch, TagNeedsAnExistingQube) {
    EXPECT_TRUE(target_matches("@tag:shared", "work"));
    EXPECT_TRUE(target_matches("@tag:shared", "personal"));
    EXPECT_TRUE(target_matches("@tag:work-tag", kWorkByUuid));
    EXPECT_FALSE(target_matches("@tag:work-tag", "personal"));
    EXPECT_FALSE(target_matches("@tag:shared", "ghost"));
    EXPECT_FALSE(target_matches("@tag:dvm-tag", "@dispvm:default-dvm"));
    EXPECT_TRUE(source_matches("@tag:work-tag", "work"));
    EXPECT_FALSE(source_matches("@tag:work-tag", "personal"));
}

TEST_F(PolicyMatch, DefaultMatchesOnlyDefault) {
    EXPECT_TRUE(target_matches("@default", ""));
    EXPECT_TRUE(target_matches("@default", "@default"));
    EXPECT_TRUE(target_matches("@default", "ghost"));
    EXPECT_FALSE(target_matches("@default", "work"));
    EXPECT_FALSE(target_matches("@default", "@dispvm"));
    EXPECT_FALSE(target_matches("@default", "dom0"));
}

TEST_F(PolicyMatch, DispVmMatchesOnlyDispVm) {
    EXPECT_TRUE(target_matches("@dispvm", "@dispvm"));
    EXPECT_FALSE(target_matches("@dispvm", "@dispvm:default-dvm"));
    EXPECT_FALSE(target_matches("@dispvm", "default-dvm"));
    EXPECT_FALSE(target_matches("@dispvm", "disp42"));
    EXPECT_FALSE(target_matches("@dispvm", ""));
}

TEST_F(PolicyMatch, DispVmTemplateMatchesItselfAndTheSourcesDefault) {
    EXPECT_TRUE(target_matches("@dispvm:default-dvm", "@dispvm:default-dvm"));
    EXPECT_TRUE(target_matches("@dispvm:default-dvm", "@dispvm:" + kDvmByUuid));
    EXPECT_TRUE(target_matches("@dispvm:" + kDvmByUuid, "@dispvm:default-dvm"));
    EXPECT_FALSE(target_matches("@dispvm:default-dvm", "@dispvm:other-dvm"));
    EXPECT_FALSE(target_matches("@dispvm:default-dvm", "default-dvm"));
    // @dispvm matches through the source's default_dispvm, compared by name
    // as the property holds it (a rule naming the template by uuid does not
    // match @dispvm)...
    EXPECT_TRUE(target_matches("@dispvm:default-dvm", "@dispvm", "work"));
    EXPECT_FALSE(target_matches("@dispvm:" + kDvmByUuid, "@dispvm", "work"));
    EXPECT_TRUE(target_matches("@dispvm:other-dvm", "@dispvm", "personal"));
    // ...and only through it.
    EXPECT_FALSE(target_matches("@dispvm:default-dvm", "@dispvm", "personal"));
}

// A @dispvm:X rule meeting @dispvm from a source without default_dispvm (or
// absent from the system info) stops Qubes' engine with an error, so its
// daemon answers nothing: a deny, whatever rules follow.
TEST_F(PolicyMatch, DispVmTemplateRuleAndNoDefaultDispVmDenies) {
    Policy p = test::parse(
        "svc * @anyvm @dispvm:default-dvm deny\n"
        "svc * @anyvm * allow target=personal\n");
    for (const char* source : {"nodvm", "ghost"}) {
        Decision d = eval(p, sys, "svc", source, "@dispvm");
        EXPECT_EQ(d.verdict, Verdict::Deny) << source;
        EXPECT_EQ(d.reason, std::string("policy evaluation error: @dispvm asked by ") + source +
                                ", which has no default_dispvm");
    }
    EXPECT_EQ(eval(p, sys, "svc", "nodvm", "work").verdict, Verdict::Allow);
}

TEST_F(PolicyMatch, DispVmTagMatchesTaggedDisposableTemplates) {
    EXPECT_TRUE(target_matches("@dispvm:@tag:dvm-tag", "@dispvm:default-dvm"));
    EXPECT_TRUE(target_matches("@dispvm:@tag:dvm-tag", "@dispvm", "work"));
    EXPECT_FALSE(target_matches("@dispvm:@tag:dvm-tag", "@dispvm:other-dvm"));
    EXPECT_FALSE(target_matches("@dispvm:@tag:dvm-tag", "@dispvm", "personal"));
    EXPECT_FALSE(target_matches("@dispvm:@tag:dvm-tag", "@dispvm", "nodvm"));
    EXPECT_FALSE(target_matches("@dispvm:@tag:dvm-tag", "default-dvm"));
    // fedora carries the tag but is no disposable template: its users'
    // @dispvm does not match.
    EXPECT_FALSE(target_matches("@dispvm:@tag:dvm-tag", "@dispvm", "bad-dvm-user"));
    EXPECT_TRUE(target_matches("@dispvm:@tag:other-tag", "@dispvm", "personal"));
}

TEST_F(PolicyMatch, DispVmTokensInSourceNeverMatch) {
    for (const char* source : {"default-dvm", "disp42", "work", "other-dvm", "dom0"}) {
        EXPECT_FALSE(source_matches("@dispvm:default-dvm", source)) << source;
        EXPECT_FALSE(source_matches("@dispvm:@tag:dvm-tag", source)) << source;
    }
}

TEST_F(PolicyMatch, ServiceAndArgument) {
    EXPECT_TRUE(call_matches("svc *", "svc"));
    EXPECT_TRUE(call_matches("svc *", "svc+anything"));
    EXPECT_TRUE(call_matches("* *", "other+x"));
    EXPECT_FALSE(call_matches("svc *", "svc2"));
    EXPECT_FALSE(call_matches("svc *", "Svc"));
    // A lone "+" is the empty argument, what a call without one has.
    EXPECT_TRUE(call_matches("svc +", "svc"));
    EXPECT_TRUE(call_matches("svc +", "svc+"));
    EXPECT_FALSE(call_matches("svc +", "svc+x"));
    // Arguments compare as exact strings.
    EXPECT_TRUE(call_matches("svc +foo", "svc+foo"));
    EXPECT_FALSE(call_matches("svc +foo", "svc+foobar"));
    EXPECT_FALSE(call_matches("svc +foo", "svc+Foo"));
    EXPECT_FALSE(call_matches("svc +foo", "svc"));
    EXPECT_TRUE(call_matches("svc +a+b", "svc+a+b"));
}

TEST_F(PolicyMatch, FirstMatchingRuleWins) {
    Policy p = test::parse(
        "svc +x work personal deny\n"     // other argument
        "svc * personal * deny\n"         // other source
        "svc * work other-dvm deny\n"     // other target
        "svc * work personal allow\n"     // this one
        "svc * work personal deny\n");
    Decision d = eval(p, sys, "svc", "work", "personal");
    EXPECT_EQ(d.verdict, Verdict::Allow);
    ASSERT_NE(d.rule, nullptr);
    EXPECT_EQ(d.rule->line, 4);
    // A source-indexed and a wildcard-source rule keep their file order.
    Policy q = test::parse(
        "svc * @anyvm personal deny\n"
        "svc * work personal allow\n");
    EXPECT_EQ(eval(q, sys, "svc", "work", "personal").reason, "denied by policy " + test::at(1));
    Policy r = test::parse(
        "svc * work personal allow\n"
        "* * @anyvm personal deny\n");
    EXPECT_EQ(eval(r, sys, "svc", "work", "personal").verdict, Verdict::Allow);
}

}  // namespace
}  // namespace aerie::policy
