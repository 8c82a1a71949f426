// Ask rules: collecting the qubes the user may choose from, the default
// target, and completing an ask with the user's answer.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "policy_test_support.hpp"

namespace aerie::policy {
namespace {

using test::at;
using test::eval;
using Targets = std::vector<std::string>;

class PolicyAsk : public ::testing::Test {
protected:
    SystemInfo sys = test::standard_system();

    Decision ask(const Policy& p, const std::string& source = "work",
                 const std::string& target = "", const std::string& call = "svc") {
        Decision d = eval(p, sys, call, source, target);
        EXPECT_EQ(d.verdict, Verdict::Ask) << d.reason;
        return d;
    }
};

// Everything @anyvm stands for, seen from work: every qube but dom0, work
// itself and the internal one, plus both disposable templates.
const Targets kAnyFromWork{"@dispvm:default-dvm", "@dispvm:other-dvm", "bad-dvm-user",
                           "default-dvm",         "disp42",            "fedora",
                           "nodvm",               "other-dvm",         "personal",
                           "relay",               "remote-a"};

TEST_F(PolicyAsk, AnyVmExpansion) {
    Policy p = test::parse("svc * work @anyvm ask\n");
    Decision d = ask(p);
    EXPECT_EQ(d.ask_targets, kAnyFromWork);
    EXPECT_FALSE(d.default_target.has_value());
    EXPECT_EQ(d.rule->line, 1);
    EXPECT_EQ(d.requested_target, "@default");
}

TEST_F(PolicyAsk, WildcardAlsoOffersDom0) {
    Policy p = test::parse("svc * work * ask\n");
    Targets expected = kAnyFromWork;
    expected.insert(expected.begin() + 5, "dom0");  // sorted between disp42 and fedora
    EXPECT_EQ(ask(p).ask_targets, expected);
}

TEST_F(PolicyAsk, ReverseWalkDenyRemovesWhatLaterRulesAdd) {
    Policy earlier_deny = test::parse(
        "svc * work personal deny\n"
        "svc * work @tag:shared deny\n"  // does not match the target, still collected
        "svc * work @anyvm ask\n");
    Targets expected = kAnyFromWork;
    std::erase(expected, "personal");
    EXPECT_EQ(ask(earlier_deny).ask_targets, expected);

    // A deny after the ask rule does not shadow it.
    Policy later_deny = test::parse(
        "svc * work @anyvm ask\n"
        "svc * work personal deny\n");
    EXPECT_EQ(ask(later_deny).ask_targets, kAnyFromWork);

    // An allow before a deny puts the qube back.
    Policy allow_first = test::parse(
        "svc * work personal allow\n"
        "svc * work @tag:shared deny\n"
        "svc * work @default ask\n");
    EXPECT_EQ(ask(allow_first).ask_targets, Targets{"personal"});
}

TEST_F(PolicyAsk, OnlyRulesForThisServiceArgumentAndSource) {
    Policy p = test::parse(
        "svc +other work fedora allow\n"       // other argument
        "other * work nodvm allow\n"           // other service
        "svc * personal relay allow\n"         // other source
        "svc * @tag:work-tag disp42 allow\n"   // matching source by tag
        "* * work other-dvm ask\n"             // any service
        "svc * work @default ask\n");
    EXPECT_EQ(ask(p).ask_targets, (Targets{"disp42", "other-dvm"}));
}

TEST_F(PolicyAsk, RedirectsOfOtherRulesAreTheirTargets) {
    Policy p = test::parse(
        "svc * work @tag:nothing allow target=fedora\n"
        "svc * work @dispvm ask target=@dispvm:other-dvm\n"
        "svc * work @default ask\n");
    EXPECT_EQ(ask(p).ask_targets, (Targets{"@dispvm:other-dvm", "fedora"}));
}

TEST_F(PolicyAsk, KeywordsBecomeConcreteQubes) {
    Policy p = test::parse(
        "svc * work @adminvm allow\n"
        "svc * work @dispvm allow\n"
        "svc * work uuid:22222222-2222-4222-8222-222222222222 allow\n"
        "svc * work @default ask\n");
    EXPECT_EQ(ask(p).ask_targets, (Targets{"@dispvm:default-dvm", "dom0", "personal"}));
    // @dispvm is the source's own default disposable template...
    EXPECT_EQ(ask(test::parse("svc * @anyvm @dispvm allow\nsvc * @anyvm @default ask\n"),
                  "personal")
                  .ask_targets,
              Targets{"@dispvm:other-dvm"});
    // ...and nothing when it has none; the property is taken as it is, as
    // Qubes does, also when it names no disposable template.
    Policy q = test::parse("svc * @anyvm @dispvm allow\nsvc * @anyvm @default ask\n");
    EXPECT_EQ(eval(q, sys, "svc", "nodvm", "").reason,
              "policy define 'ask' action at " + at(2) + " but no target is available to choose from");
    EXPECT_EQ(eval(q, sys, "svc", "bad-dvm-user", "").ask_targets, Targets{"@dispvm:fedora"});
}

TEST_F(PolicyAsk, PatternExpansions) {
    Policy type = test::parse("svc * work @type:TemplateVM allow\nsvc * work @default ask\n");
    EXPECT_EQ(ask(type).ask_targets, Targets{"fedora"});
    Policy tag = test::parse("svc * work @tag:shared allow\nsvc * work @default ask\n");
    EXPECT_EQ(ask(tag).ask_targets, Targets{"personal"});  // work itself is removed
    Policy dvmtag = test::parse("svc * work @dispvm:@tag:dvm-tag allow\nsvc * work @default ask\n");
    EXPECT_EQ(ask(dvmtag).ask_targets, Targets{"@dispvm:default-dvm"});  // fedora is no template
    Policy named = test::parse(
        "svc * work @dispvm:other-dvm allow\n"
        "svc * work @dispvm:fedora allow\n"
        "svc * work ghost allow\n"
        "svc * work @default ask\n");
    EXPECT_EQ(ask(named).ask_targets, Targets{"@dispvm:other-dvm"});
    Policy admin_type = test::parse("svc * work @type:AdminVM allow\nsvc * work @default ask\n");
    EXPECT_EQ(ask(admin_type).ask_targets, Targets{"dom0"});
}

TEST_F(PolicyAsk, SourceAndInternalQubesAreRemoved) {
    Policy p = test::parse(
        "svc * @anyvm work allow\n"
        "svc * @anyvm internal-q allow\n"
        "svc * @anyvm personal allow\n"
        "svc * @anyvm @default ask\n");
    EXPECT_EQ(ask(p, "work").ask_targets, Targets{"personal"});
    EXPECT_EQ(ask(p, "personal").ask_targets, Targets{"work"});
    // By uuid the source is still itself.
    EXPECT_EQ(ask(p, std::string("uuid:") + test::kWorkUuid).ask_targets, Targets{"personal"});
    Policy dom0 = test::parse("svc * dom0 * ask\n");
    Decision d = ask(dom0, "dom0", "");
    EXPECT_EQ(std::count(d.ask_targets.begin(), d.ask_targets.end(), "dom0"), 0);
}

// A target= is no collected candidate: neither the source nor an internal
// qube is removed from it (as in Qubes).
TEST_F(PolicyAsk, TargetParameterIsNotFiltered) {
    Policy p = test::parse("svc +a work @default ask target=work\nsvc +b work @default ask target=internal-q\n");
    EXPECT_EQ(ask(p, "work", "", "svc+a").ask_targets, Targets{"work"});
    EXPECT_EQ(ask(p, "work", "", "svc+b").ask_targets, Targets{"internal-q"});
    // Chosen, the call to the source itself is refused when run.
    Decision self = answer_ask(p, sys, ask(p, "work", "", "svc+a"), std::string("work"));
    EXPECT_EQ(self.refusal, "loopback qrexec connection not supported");
}

// A deny rule removes the spelling it expands to: "@adminvm" and "dom0" are
// two entries until the walk ends, then "@adminvm" becomes "dom0".
TEST_F(PolicyAsk, AdminVmSpellingsInTheWalk) {
    Policy a = test::parse("svc * work dom0 deny\nsvc * work @adminvm allow\nsvc * work @default ask\n");
    EXPECT_EQ(ask(a).ask_targets, Targets{"dom0"});
    Policy b = test::parse("svc * work @adminvm deny\nsvc * work dom0 allow\nsvc * work @default ask\n");
    EXPECT_EQ(ask(b).ask_targets, Targets{"dom0"});
    Policy c = test::parse("svc * work dom0 deny\nsvc * work dom0 allow\nsvc * work @default ask\n");
    EXPECT_EQ(eval(c, sys, "svc", "work", "").verdict, Verdict::Deny);
}

// Where Qubes' engine stops with an internal error while collecting (a
// @dispvm:X rule naming no qube, a source absent from the system info), the
// ask denies.
TEST_F(PolicyAsk, EngineErrorsWhileCollectingDeny) {
    Policy ghost_dvm = test::parse("svc * @anyvm @dispvm:ghost allow\nsvc * @anyvm @default ask\n");
    EXPECT_EQ(eval(ghost_dvm, sys, "svc", "work", "").reason, "policy evaluation error: no such qube: ghost");
    Policy p = test::parse("svc * @anyvm work allow\nsvc * @anyvm @default ask\n");
    EXPECT_EQ(eval(p, sys, "svc", "ghost", "").reason, "policy evaluation error: no such qube: ghost");
    // With a target= nothing is collected: the ask stands.
    Policy redirect = test::parse("svc * @anyvm @default ask target=work\n");
    EXPECT_EQ(eval(redirect, sys, "svc", "ghost", "").verdict, Verdict::Ask);
}

TEST_F(PolicyAsk, AutostartNoKeepsOnlyRunningQubes) {
    Policy p = test::parse("svc * work * ask autostart=no\n");
    Decision d = ask(p);
    EXPECT_EQ(d.ask_targets, (Targets{"bad-dvm-user", "disp42", "dom0", "nodvm", "relay"}));
    EXPECT_FALSE(d.autostart);
    // target= is filtered too.
    Policy redirect = test::parse("svc * work @default ask target=personal autostart=no\n");
    EXPECT_EQ(eval(redirect, sys, "svc", "work", "").verdict, Verdict::Deny);
    Policy none = test::parse("svc * work personal allow\nsvc * work @default ask autostart=no\n");
    EXPECT_EQ(eval(none, sys, "svc", "work", "").reason,
              "policy define 'ask' action at " + at(2) + " but no target is available to choose from");
}

TEST_F(PolicyAsk, EmptyListDenies) {
    Policy p = test::parse("svc * work @default ask\n");
    Decision d = eval(p, sys, "svc", "work", "");
    EXPECT_EQ(d.verdict, Verdict::Deny);
    EXPECT_EQ(d.reason,
              "policy define 'ask' action at " + at(1) + " but no target is available to choose from");
}

TEST_F(PolicyAsk, TargetParameterIsTheOnlyCandidate) {
    Policy p = test::parse(
        "svc * work fedora allow\n"  // not collected: target= is the only candidate
        "svc +a work @default ask target=personal\n"
        "svc +b work @default ask target=@dispvm\n"
        "svc +c work @default ask target=@adminvm\n"
        "svc +d work @default ask target=uuid:22222222-2222-4222-8222-222222222222\n"
        "svc +e work @default ask target=@dispvm:uuid:44444444-4444-4444-8444-444444444444\n");
    EXPECT_EQ(ask(p, "work", "", "svc+a").ask_targets, Targets{"personal"});
    // A target= is offered as written (Qubes neither expands @dispvm nor
    // turns a uuid into a name there); only dom0's spellings become "dom0".
    EXPECT_EQ(ask(p, "work", "", "svc+b").ask_targets, Targets{"@dispvm"});
    EXPECT_EQ(ask(p, "work", "", "svc+c").ask_targets, Targets{"dom0"});
    EXPECT_EQ(ask(p, "work", "", "svc+d").ask_targets,
              Targets{"uuid:22222222-2222-4222-8222-222222222222"});
    EXPECT_EQ(ask(p, "work", "", "svc+e").ask_targets,
              Targets{"@dispvm:uuid:44444444-4444-4444-8444-444444444444"});
}

TEST_F(PolicyAsk, DefaultTarget) {
    Policy p = test::parse(
        "svc * work personal allow\n"
        "svc * work @dispvm allow\n"
        "svc * work @adminvm allow\n"
        "svc +a work @default ask default_target=personal\n"
        "svc +b work @default ask default_target=@dispvm\n"
        "svc +c work @default ask default_target=dom0\n"
        "svc +d work @default ask default_target=fedora\n"
        "svc +e work @default ask default_target=uuid:22222222-2222-4222-8222-222222222222\n"
        "svc +f work @default ask default_target=@dispvm:other-dvm\n"
        "svc +g work @default ask default_target=@dispvm:uuid:33333333-3333-4333-8333-333333333333\n");
    EXPECT_EQ(ask(p, "work", "", "svc+a").default_target, "personal");
    EXPECT_EQ(ask(p, "work", "", "svc+b").default_target, "@dispvm:default-dvm");
    EXPECT_EQ(ask(p, "work", "", "svc+c").default_target, "dom0");
    // Not in the list: dropped, the ask itself stays.
    Decision d = ask(p, "work", "", "svc+d");
    EXPECT_FALSE(d.default_target.has_value());
    EXPECT_EQ(d.ask_targets, (Targets{"@dispvm:default-dvm", "dom0", "personal"}));
    // Compared as written with the collected names: a uuid never is among them.
    EXPECT_FALSE(ask(p, "work", "", "svc+e").default_target.has_value());
    EXPECT_FALSE(ask(p, "work", "", "svc+f").default_target.has_value());
    EXPECT_FALSE(ask(p, "work", "", "svc+g").default_target.has_value());
}

TEST_F(PolicyAsk, UserAndNotifyOfTheAskRule) {
    Policy p = test::parse("svc * work personal ask user=alice notify=yes\n");
    Decision d = ask(p, "work", "personal");
    EXPECT_EQ(d.user, "alice");
    EXPECT_TRUE(d.notify);
    EXPECT_EQ(d.requested_target, "personal");
}

class PolicyAnswerAsk : public PolicyAsk {
protected:
    Policy p = test::parse(
        "svc * work personal ask notify=yes autostart=no\n"
        "svc * work @dispvm allow\n"
        "svc * work @adminvm allow\n"
        "svc * work fedora deny\n"
        "svc * work @default ask user=alice\n");
};

TEST_F(PolicyAnswerAsk, UserSaysYes) {
    Decision q = ask(p);
    Decision yes = answer_ask(p, sys, q, std::string("personal"));
    EXPECT_EQ(yes.verdict, Verdict::Allow) << yes.reason;
    EXPECT_EQ(yes.target, "personal");
    EXPECT_EQ(yes.target_uuid, std::string("uuid:") + test::kPersonalUuid);
    EXPECT_EQ(yes.user, "alice");
    EXPECT_EQ(yes.requested_target, "@default");
    EXPECT_EQ(yes.rule, q.rule);

    Decision disp = answer_ask(p, sys, q, std::string("@dispvm:default-dvm"));
    EXPECT_EQ(disp.verdict, Verdict::Allow);
    EXPECT_EQ(disp.target, "@dispvm:default-dvm");
    EXPECT_EQ(disp.target_uuid, std::string("@dispvm:uuid:") + test::kDefaultDvmUuid);

    Decision dom0 = answer_ask(p, sys, q, std::string("dom0"));
    EXPECT_EQ(dom0.verdict, Verdict::Allow);
    EXPECT_EQ(dom0.target, "dom0");
    EXPECT_FALSE(dom0.target_uuid.has_value());
}

TEST_F(PolicyAnswerAsk, UserSaysNo) {
    Decision q = ask(p);
    Decision no = answer_ask(p, sys, q, std::nullopt);
    EXPECT_EQ(no.verdict, Verdict::Deny);
    EXPECT_EQ(no.reason, "denied by the user " + at(5));
    EXPECT_FALSE(no.notify);
}

TEST_F(PolicyAnswerAsk, ChoiceMustBeInTheList) {
    Decision q = ask(p);
    Decision d = answer_ask(p, sys, q, std::string("fedora"));
    EXPECT_EQ(d.verdict, Verdict::Deny);
    EXPECT_EQ(d.reason, "target fedora is not a valid choice");
    EXPECT_EQ(answer_ask(p, sys, q, std::string("@adminvm")).reason,
              "target @adminvm is not a valid choice");
}

TEST_F(PolicyAnswerAsk, AutostartStillApplies) {
    Decision q = ask(p, "work", "personal");
    ASSERT_EQ(q.ask_targets, Targets{"dom0"});  // personal is halted, autostart=no
    Decision d = answer_ask(p, sys, q, std::string("dom0"));
    EXPECT_EQ(d.verdict, Verdict::Allow);
    EXPECT_FALSE(d.autostart);
    EXPECT_EQ(d.requested_target, "personal");
}

TEST_F(PolicyAnswerAsk, OnlyAsksCanBeAnswered) {
    Decision allow = eval(p, sys, "svc", "work", "dom0");
    ASSERT_EQ(allow.verdict, Verdict::Allow);
    EXPECT_EQ(answer_ask(p, sys, allow, std::string("personal")).verdict, Verdict::Deny);
}

TEST_F(PolicyAnswerAsk, RelayedSourceIsKept) {
    Policy r = test::parse(
        "svc * remote-a personal allow\n"
        "svc * remote-a @default ask\n");
    Decision q = eval(r, sys, "svc", "relay", "", "remote-a");
    ASSERT_EQ(q.verdict, Verdict::Ask) << q.reason;
    EXPECT_EQ(q.ask_targets, Targets{"personal"});
    Decision yes = answer_ask(r, sys, q, std::string("personal"));
    EXPECT_EQ(yes.verdict, Verdict::Allow) << yes.reason;
    EXPECT_EQ(yes.policy_source, "remote-a");
    EXPECT_EQ(yes.caller, "relay");
}

TEST_F(PolicyAnswerAsk, AssumedChoiceIsTheRequestedTarget) {
    Policy any = test::parse("svc * work * ask\n");
    auto choice = [&](const std::string& target) {
        return assumed_ask_choice(sys, ask(any, "work", target));
    };
    // The requested target as checked, spelled as the caller spelled it.
    EXPECT_EQ(choice("personal"), "personal");
    EXPECT_EQ(choice(std::string("uuid:") + test::kPersonalUuid), std::string("uuid:") + test::kPersonalUuid);
    EXPECT_EQ(choice("dom0"), "dom0");
    EXPECT_EQ(choice("@adminvm"), "@adminvm");
    EXPECT_EQ(choice("@dispvm"), "@dispvm");
    EXPECT_EQ(choice("@dispvm:other-dvm"), "@dispvm:other-dvm");
    EXPECT_EQ(choice(""), "@default");
    EXPECT_EQ(choice("ghost"), "@default");

    // Resolved like an allow to that target when the list spells it the same way.
    Decision q = ask(any, "work", "@dispvm:other-dvm");
    Decision yes = answer_ask(any, sys, q, assumed_ask_choice(sys, q));
    EXPECT_EQ(yes.verdict, Verdict::Allow);
    EXPECT_EQ(yes.target, "@dispvm:other-dvm");
    EXPECT_EQ(yes.requested_target, "@dispvm:other-dvm");
    // The list holds names, "dom0" and "@dispvm:TPL": a keyword, a uuid or
    // @default asked for is no valid choice (Qubes' --assume-yes-for-ask denies).
    for (std::string asked : {std::string(""), std::string("@dispvm"), std::string("@adminvm"),
                              std::string("uuid:") + test::kPersonalUuid,
                              std::string("@dispvm:uuid:") + test::kOtherDvmUuid}) {
        Decision a = ask(any, "work", asked);
        ASSERT_EQ(a.verdict, Verdict::Ask) << asked;
        std::string chosen = assumed_ask_choice(sys, a);
        EXPECT_EQ(answer_ask(any, sys, a, chosen).reason, "target " + chosen + " is not a valid choice")
            << asked;
    }
}

}  // namespace
}  // namespace aerie::policy
