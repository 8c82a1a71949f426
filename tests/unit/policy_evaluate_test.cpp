// Evaluation of deny and allow rules: redirects, keywords, autostart,
// loopback, notify and user, and the exact deny reasons.
#include <gtest/gtest.h>

#include <string>

#include "policy_test_support.hpp"

namespace aerie::policy {
namespace {

using test::at;
using test::eval;

class PolicyEvaluate : public ::testing::Test {
protected:
    SystemInfo sys = test::standard_system();
};

TEST_F(PolicyEvaluate, NoMatchingRule) {
    Policy empty;
    Decision d = eval(empty, sys, "svc", "work", "personal");
    EXPECT_EQ(d.verdict, Verdict::Deny);
    EXPECT_EQ(d.reason, "no matching rule found");
    EXPECT_EQ(d.rule, nullptr);
    Policy p = test::parse("other * work personal allow\n");
    EXPECT_EQ(eval(p, sys, "svc", "work", "personal").reason, "no matching rule found");
}

TEST_F(PolicyEvaluate, DenyRuleAndNotify) {
    Policy p = test::parse(
        "# header\n"
        "svc +quiet work personal deny notify=no\n"
        "svc * work personal deny\n");
    Decision loud = eval(p, sys, "svc", "work", "personal");
    EXPECT_EQ(loud.verdict, Verdict::Deny);
    EXPECT_EQ(loud.reason, "denied by policy " + at(3));
    EXPECT_TRUE(loud.notify);
    Decision quiet = eval(p, sys, "svc+quiet", "work", "personal");
    EXPECT_EQ(quiet.reason, "denied by policy " + at(2));
    EXPECT_FALSE(quiet.notify);
}

TEST_F(PolicyEvaluate, AllowToRequestedTarget) {
    Policy p = test::parse("svc * work @anyvm allow\n");
    Decision d = eval(p, sys, "svc", "work", "personal");
    EXPECT_EQ(d.verdict, Verdict::Allow);
    EXPECT_EQ(d.target, "personal");
    EXPECT_EQ(d.target_uuid, std::string("uuid:") + test::kPersonalUuid);
    EXPECT_EQ(d.user, "DEFAULT");
    EXPECT_TRUE(d.autostart);
    EXPECT_FALSE(d.notify);
    EXPECT_EQ(d.source, "work");
    EXPECT_EQ(d.service_name, "svc");
    EXPECT_EQ(d.argument, "+");
    // Asked by uuid: the answer keeps that spelling, as Qubes'.
    Decision u = eval(p, sys, "svc", "work", std::string("uuid:") + test::kPersonalUuid);
    EXPECT_EQ(u.target, std::string("uuid:") + test::kPersonalUuid);
    EXPECT_EQ(u.target_uuid, std::string("uuid:") + test::kPersonalUuid);
}

TEST_F(PolicyEvaluate, RedirectWins) {
    Policy p = test::parse(
        "svc * work personal allow target=other-dvm\n"
        "svc * work @default allow target=uuid:22222222-2222-4222-8222-222222222222\n");
    Decision d = eval(p, sys, "svc", "work", "personal");
    EXPECT_EQ(d.target, "other-dvm");
    EXPECT_EQ(d.requested_target, "personal");
    Decision by_uuid = eval(p, sys, "svc", "work", "");
    EXPECT_EQ(by_uuid.target, std::string("uuid:") + test::kPersonalUuid);
    EXPECT_EQ(by_uuid.target_uuid, std::string("uuid:") + test::kPersonalUuid);
}

TEST_F(PolicyEvaluate, AllowToDefaultIsDenied) {
    Policy p = test::parse("svc * work * allow\n");
    Decision d = eval(p, sys, "svc", "work", "");
    EXPECT_EQ(d.verdict, Verdict::Deny);
    EXPECT_EQ(d.reason, "policy define 'allow' action at " + at(1) +
                            " but no target is specified by caller or policy");
}

TEST_F(PolicyEvaluate, AllowToDispVmUsesTheSourcesDefault) {
    Policy p = test::parse("svc * @anyvm @dispvm allow\n");
    Decision d = eval(p, sys, "svc", "work", "@dispvm");
    EXPECT_EQ(d.verdict, Verdict::Allow);
    EXPECT_EQ(d.target, "@dispvm:default-dvm");
    EXPECT_EQ(d.target_uuid, std::string("@dispvm:uuid:") + test::kDefaultDvmUuid);
    EXPECT_EQ(d.requested_target, "@dispvm");
    EXPECT_EQ(eval(p, sys, "svc", "personal", "@dispvm").target, "@dispvm:other-dvm");

    Decision none = eval(p, sys, "svc", "nodvm", "@dispvm");
    EXPECT_EQ(none.verdict, Verdict::Deny);
    EXPECT_EQ(none.reason, "policy define 'allow' action to @dispvm at " + at(1) +
                               " but no DispVM base is set for this VM");
    // The property is taken as it is (as Qubes' engine does); the admin
    // daemon refuses to create a disposable from a qube that is no template.
    Decision bad = eval(p, sys, "svc", "bad-dvm-user", "@dispvm");
    EXPECT_EQ(bad.verdict, Verdict::Allow) << bad.reason;
    EXPECT_EQ(bad.target, "@dispvm:fedora");
    EXPECT_EQ(bad.target_uuid, std::string("@dispvm:uuid:") + test::kFedoraUuid);
}

TEST_F(PolicyEvaluate, RedirectToDispVmAndTemplates) {
    Policy p = test::parse(
        "svc +a @anyvm @default allow target=@dispvm\n"
        "svc +b @anyvm @default allow target=@dispvm:other-dvm\n"
        "svc +c @anyvm @default allow target=@dispvm:fedora\n");
    EXPECT_EQ(eval(p, sys, "svc+a", "work", "").target, "@dispvm:default-dvm");
    EXPECT_EQ(eval(p, sys, "svc+a", "personal", "").target, "@dispvm:other-dvm");
    EXPECT_EQ(eval(p, sys, "svc+b", "work", "").target, "@dispvm:other-dvm");
    Decision c = eval(p, sys, "svc+c", "work", "");
    EXPECT_EQ(c.verdict, Verdict::Deny);
    EXPECT_EQ(c.reason, "not a template for dispvm: fedora");
}

TEST_F(PolicyEvaluate, AdminVmBecomesDom0) {
    Policy p = test::parse(
        "svc +a work @adminvm allow\n"
        "svc +b work @default allow target=@adminvm\n"
        "svc +c work @default allow target=dom0\n");
    for (const char* call : {"svc+a", "svc+b", "svc+c"}) {
        Decision d = eval(p, sys, call, "work", std::string(call) == "svc+a" ? "dom0" : "");
        EXPECT_EQ(d.verdict, Verdict::Allow) << call;
        EXPECT_EQ(d.target, "dom0") << call;
        EXPECT_FALSE(d.target_uuid.has_value()) << call;
    }
    EXPECT_EQ(eval(p, sys, "svc+a", "work", "@adminvm").target, "dom0");
}

TEST_F(PolicyEvaluate, AutostartNo) {
    Policy p = test::parse("svc * @anyvm * allow autostart=no\n");
    Decision running = eval(p, sys, "svc", "personal", "work");
    EXPECT_EQ(running.verdict, Verdict::Allow);
    EXPECT_FALSE(running.autostart);
    EXPECT_EQ(eval(p, sys, "svc", "work", "dom0").verdict, Verdict::Allow);

    Decision halted = eval(p, sys, "svc", "work", "personal");
    EXPECT_EQ(halted.verdict, Verdict::Deny);
    EXPECT_EQ(halted.reason, "target personal is denied because it would require autostart");
    // A disposable never runs before the call.
    Decision disp = eval(p, sys, "svc", "work", "@dispvm");
    EXPECT_EQ(disp.verdict, Verdict::Deny);
    EXPECT_EQ(disp.reason,
              "target @dispvm:default-dvm is denied because it would require autostart");
    EXPECT_EQ(eval(p, sys, "svc", "work", "@dispvm:other-dvm").reason,
              "target @dispvm:other-dvm is denied because it would require autostart");

    Policy yes = test::parse("svc * @anyvm * allow autostart=yes\n");
    EXPECT_EQ(eval(yes, sys, "svc", "work", "personal").verdict, Verdict::Allow);
    EXPECT_TRUE(eval(yes, sys, "svc", "work", "personal").autostart);
}

// The loopback check belongs to running the call, not to the policy: the
// policy allows, the answer is a deny, except to a caller that only
// evaluates. As Qubes', it compares the spellings of source and target.
TEST_F(PolicyEvaluate, Loopback) {
    Policy p = test::parse("svc * * * allow\n");
    auto refused = [&](const std::string& source, const std::string& target) {
        Decision d = eval(p, sys, "svc", source, target);
        EXPECT_EQ(d.verdict, Verdict::Allow) << source << " -> " << target << ": " << d.reason;
        EXPECT_FALSE(answer_allows(d)) << source << " -> " << target;
        EXPECT_EQ(render_answer(d), "result=deny\n");
        EXPECT_TRUE(answer_allows(d, /*just_evaluate=*/true));
        EXPECT_EQ(render_answer(d, true), "result=allow\n");
        return d.refusal.value_or("");
    };
    EXPECT_EQ(refused("work", "work"), "loopback qrexec connection not supported");
    EXPECT_EQ(refused("dom0", "dom0"), "loopback qrexec connection not supported");
    EXPECT_EQ(refused("dom0", "@adminvm"), "loopback qrexec connection not supported");
    Policy redirect = test::parse("svc * work @default allow target=work\n");
    EXPECT_EQ(eval(redirect, sys, "svc", "work", "").refusal, "loopback qrexec connection not supported");

    // Another spelling of the same qube is no loopback to Qubes' engine.
    Decision by_uuid = eval(p, sys, "svc", "work", std::string("uuid:") + test::kWorkUuid);
    EXPECT_TRUE(answer_allows(by_uuid)) << by_uuid.refusal.value_or("");
    EXPECT_EQ(by_uuid.target, std::string("uuid:") + test::kWorkUuid);
    Decision dom0_uuid = eval(p, sys, "svc", "dom0", std::string("uuid:") + test::kAdminUuid);
    EXPECT_TRUE(answer_allows(dom0_uuid));
    EXPECT_EQ(dom0_uuid.target, "dom0");
}

TEST_F(PolicyEvaluate, DisposableOfItselfIsNoLoopback) {
    // A disposable template whose default_dispvm is itself starts a new
    // disposable: that is another qube.
    Policy p = test::parse("svc * * * allow\n");
    Decision d = eval(p, sys, "svc", "default-dvm", "@dispvm");
    EXPECT_EQ(d.verdict, Verdict::Allow) << d.reason;
    EXPECT_EQ(d.target, "@dispvm:default-dvm");
    Decision named = eval(p, sys, "svc", "default-dvm", "@dispvm:default-dvm");
    EXPECT_EQ(named.verdict, Verdict::Allow) << named.reason;
}

TEST_F(PolicyEvaluate, UserAndNotifyComeFromTheRule) {
    Policy p = test::parse(
        "svc +a work personal allow user=root notify=yes\n"
        "svc +b work personal allow user=\n");
    Decision a = eval(p, sys, "svc+a", "work", "personal");
    EXPECT_EQ(a.user, "root");
    EXPECT_TRUE(a.notify);
    EXPECT_EQ(eval(p, sys, "svc+b", "work", "personal").user, "DEFAULT");
}

TEST_F(PolicyEvaluate, RemoteTargetGoesThroughItsRelay) {
    Policy p = test::parse("svc * @anyvm remote-a allow user=root\n");
    Decision d = eval(p, sys, "svc+arg", "work", "remote-a");
    EXPECT_EQ(d.verdict, Verdict::Allow);
    EXPECT_EQ(d.target, "relay");
    EXPECT_EQ(d.target_uuid, std::string("uuid:") + test::kRelayUuid);
    EXPECT_EQ(d.user, "DEFAULT");  // user= does not apply on another host
    EXPECT_EQ(d.service, "qubesair.SSHProxy+remote-a+svc+arg");
    EXPECT_EQ(d.requested_target, "remote-a");
    EXPECT_EQ(eval(p, sys, "svc", "work", "remote-a").service, "qubesair.SSHProxy+remote-a+svc+");
    // The relay itself may call through itself (Qubes checks only source == target).
    Decision own = eval(p, sys, "svc", "relay", "remote-a");
    EXPECT_TRUE(answer_allows(own)) << own.refusal.value_or(own.reason);
    EXPECT_EQ(own.target, "relay");
    // But a call the relay brought in for a remote qube may not leave
    // through it again (Aerie's rule; Qubes' engine would allow it).
    Policy from_remote = test::parse("svc * remote-a remote-a allow\nsvc * remote-a @anyvm allow\n");
    Decision back = eval(from_remote, sys, "svc", "relay", "remote-a", "remote-a");
    EXPECT_EQ(back.verdict, Verdict::Allow) << back.reason;
    EXPECT_EQ(back.refusal, "loopback qrexec connection not supported");  // source == target first
    auto other_remote = test::make_domain("remote-b", "RemoteVM", "cccccccc-cccc-4ccc-8ccc-cccccccccccc");
    other_remote.relayvm = "relay";
    other_remote.transport_rpc = "qubesair.SSHProxy";
    sys.add(other_remote);
    Decision out = eval(from_remote, sys, "svc", "relay", "remote-b", "remote-a");
    EXPECT_EQ(out.verdict, Verdict::Allow) << out.reason;
    EXPECT_EQ(out.refusal, "a call from the remote qube remote-a may not leave through its relay relay again");
    EXPECT_EQ(render_answer(out), "result=deny\n");
    // The remote qube in the transport's argument is the requested target as
    // the caller spelled it (Qubes' answer); when a target= chose the
    // RemoteVM for a keyword, its name (Qubes' engine writes the keyword,
    // which leaves the relay no remote qube to reach: Aerie's one difference).
    std::string by_uuid = std::string("uuid:") + test::kRemoteUuid;
    EXPECT_EQ(eval(p, sys, "svc", "work", by_uuid).service, "qubesair.SSHProxy+" + by_uuid + "+svc+");
    Policy redirect = test::parse("svc * work @default allow target=remote-a\n");
    Decision r = eval(redirect, sys, "svc+x", "work", "");
    EXPECT_EQ(r.target, "relay");
    EXPECT_EQ(r.service, "qubesair.SSHProxy+remote-a+svc+x");
}

TEST_F(PolicyEvaluate, RemoteTargetNeedsRelayAndTransport) {
    auto lost = test::make_domain("remote-lost", "RemoteVM", "cccccccc-cccc-4ccc-8ccc-cccccccccccc");
    lost.relayvm = "ghost";
    lost.transport_rpc = "qubesair.SSHProxy";
    sys.add(lost);
    auto mute = test::make_domain("remote-mute", "RemoteVM", "dddddddd-dddd-4ddd-8ddd-dddddddddddd");
    mute.relayvm = "relay";
    sys.add(mute);
    auto lone = test::make_domain("remote-lone", "RemoteVM", "eeeeeeee-eeee-4eee-8eee-eeeeeeeeeeee");
    lone.transport_rpc = "qubesair.SSHProxy";
    sys.add(lone);
    Policy p = test::parse("svc * @anyvm @anyvm allow\n");
    // Allowed by the policy, refused when run (only evaluating, it is an allow).
    Decision a = eval(p, sys, "svc", "work", "remote-lost");
    EXPECT_EQ(a.verdict, Verdict::Allow);
    EXPECT_EQ(a.refusal, "policy evaluation error: no such qube: ghost");
    EXPECT_EQ(render_answer(a), "result=deny\n");
    EXPECT_EQ(render_answer(a, true), "result=allow\n");
    EXPECT_EQ(eval(p, sys, "svc", "work", "remote-mute").refusal, "remote-mute: transport RPC is not set");
    EXPECT_EQ(eval(p, sys, "svc", "work", "remote-lone").refusal, "remote-lone: relayvm is not set");
}

TEST_F(PolicyEvaluate, RedirectToUnknownQubeIsDenied) {
    Policy p = test::parse("svc * work @default allow target=ghost\n");
    Decision d = eval(p, sys, "svc", "work", "");
    EXPECT_EQ(d.verdict, Verdict::Deny);
    // A target= naming no qube is @default, as a caller's would be.
    EXPECT_EQ(d.reason, "policy define 'allow' action at " + at(1) +
                            " but no target is specified by caller or policy");
}

TEST_F(PolicyEvaluate, DenialsKeepTheRequestedTarget) {
    Policy p = test::parse("svc * work personal deny\n");
    EXPECT_EQ(eval(p, sys, "svc", "work", "personal").requested_target, "personal");
}

TEST_F(PolicyEvaluate, BadRequestsAreDeniedNotThrown) {
    Policy p = test::parse("* * * * allow\n");
    Request r;
    r.source = "work";
    r.target = "personal";
    EXPECT_EQ(evaluate(p, sys, r).verdict, Verdict::Deny);  // no service
    r.service = "svc";
    r.argument = "noplus";
    EXPECT_EQ(evaluate(p, sys, r).verdict, Verdict::Deny);
}

}  // namespace
}  // namespace aerie::policy
