// Request normalisation: the target a caller may ask for, the argument, and a
// relay's requested_source.
#include <gtest/gtest.h>

#include <string>

#include "policy_test_support.hpp"

namespace aerie::policy {
namespace {

using test::eval;

class PolicyRequest : public ::testing::Test {
protected:
    SystemInfo sys = test::standard_system();
};

TEST_F(PolicyRequest, ServiceAndArgumentSplitAtFirstPlus) {
    Request a = Request::from_service_and_arg("qubes.Filecopy", "work", "personal");
    EXPECT_EQ(a.service, "qubes.Filecopy");
    EXPECT_EQ(a.argument, "+");
    EXPECT_EQ(a.source, "work");
    EXPECT_EQ(a.target, "personal");
    EXPECT_FALSE(a.requested_source.has_value());
    Request b = Request::from_service_and_arg("svc+", "work", "");
    EXPECT_EQ(b.service, "svc");
    EXPECT_EQ(b.argument, "+");
    Request c = Request::from_service_and_arg("svc+a+b", "work", "");
    EXPECT_EQ(c.service, "svc");
    EXPECT_EQ(c.argument, "+a+b");
}

TEST_F(PolicyRequest, MissingArgumentIsTheEmptyArgument) {
    Policy p = test::parse("svc + work personal allow\n");
    Request r;
    r.service = "svc";
    r.argument = "";
    r.source = "work";
    r.target = "personal";
    Decision d = evaluate(p, sys, r);
    EXPECT_EQ(d.verdict, Verdict::Allow);
    EXPECT_EQ(d.argument, "+");
    r.argument = "x";  // not a normalised argument: never matched, denied
    EXPECT_EQ(evaluate(p, sys, r).verdict, Verdict::Deny);
}

TEST_F(PolicyRequest, EmptyOrUnknownTargetBecomesDefault) {
    Policy p = test::parse(
        "svc * work @default allow target=personal\n"
        "svc * work personal deny\n");
    for (const char* target : {"", "@default", "ghost", "uuid:ffffffff-ffff-4fff-8fff-ffffffffffff"}) {
        Decision d = eval(p, sys, "svc", "work", target);
        EXPECT_EQ(d.verdict, Verdict::Allow) << target;
        EXPECT_EQ(d.requested_target, "@default") << target;
        EXPECT_EQ(d.target, "personal") << target;
    }
    // An existing name is not @default.
    EXPECT_EQ(eval(p, sys, "svc", "work", "personal").reason, "denied by policy " + test::at(2));
}

TEST_F(PolicyRequest, DispVmOfSomethingNotADisposableTemplateIsDenied) {
    Policy p = test::parse("svc * @anyvm @anyvm allow\n");
    Decision d = eval(p, sys, "svc", "work", "@dispvm:fedora");
    EXPECT_EQ(d.verdict, Verdict::Deny);
    EXPECT_EQ(d.reason, "not a template for dispvm: fedora");
    EXPECT_EQ(eval(p, sys, "svc", "work", "@dispvm:ghost").reason,
              "not a template for dispvm: ghost");
    EXPECT_EQ(eval(p, sys, "svc", "work", "@dispvm:work").reason, "not a template for dispvm: work");
    // A real one, by name or uuid, passes.
    EXPECT_EQ(eval(p, sys, "svc", "work", "@dispvm:default-dvm").verdict, Verdict::Allow);
    EXPECT_EQ(eval(p, sys, "svc", "work", std::string("@dispvm:uuid:") + test::kDefaultDvmUuid)
                  .verdict,
              Verdict::Allow);
}

TEST_F(PolicyRequest, CallerMayNotRequestPatterns) {
    Policy p = test::parse("svc * * * allow\n");
    for (const char* target : {"*", "@anyvm", "@type:AppVM", "@tag:shared", "@dispvm:@tag:dvm-tag",
                               "@foo", "@uuid:x"}) {
        Decision d = eval(p, sys, "svc", "work", target);
        EXPECT_EQ(d.verdict, Verdict::Deny) << target;
        EXPECT_EQ(d.reason, "invalid intendedtarget token: '" + std::string(target) + "'");
        EXPECT_EQ(d.requested_target, target);
    }
}

TEST_F(PolicyRequest, CallerMayRequestNamesAndKeywords) {
    Policy p = test::parse(
        "svc * work @default allow target=personal\n"
        "svc * work * allow\n");
    for (const char* target : {"personal", "dom0", "@adminvm", "@default", "@dispvm",
                               "@dispvm:other-dvm", "uuid:22222222-2222-4222-8222-222222222222"}) {
        EXPECT_EQ(eval(p, sys, "svc", "work", target).verdict, Verdict::Allow) << target;
    }
}

// requested_target echoes what the caller asked, as checked: an absent qube
// is @default; every other spelling (dom0 by name or uuid, a qube by uuid) stays.
TEST_F(PolicyRequest, RequestedTargetIsNormalised) {
    Policy p = test::parse("svc * work * allow\n");
    EXPECT_EQ(eval(p, sys, "svc", "work", "dom0").requested_target, "dom0");
    EXPECT_EQ(eval(p, sys, "svc", "work", "@adminvm").requested_target, "@adminvm");
    EXPECT_EQ(eval(p, sys, "svc", "work", std::string("uuid:") + test::kAdminUuid).requested_target,
              std::string("uuid:") + test::kAdminUuid);
    EXPECT_EQ(eval(p, sys, "svc", "work", std::string("uuid:") + test::kPersonalUuid).requested_target,
              std::string("uuid:") + test::kPersonalUuid);
    Policy redirect = test::parse("svc * work @default allow target=personal\n");
    EXPECT_EQ(eval(redirect, sys, "svc", "work", "ghost").requested_target, "@default");
    EXPECT_EQ(eval(redirect, sys, "svc", "work", "").requested_target, "@default");
    EXPECT_EQ(eval(p, sys, "svc", "work", "@dispvm").requested_target, "@dispvm");
    EXPECT_EQ(eval(p, sys, "svc", "work", "@dispvm:other-dvm").requested_target,
              "@dispvm:other-dvm");
    EXPECT_EQ(eval(p, sys, "svc", "work", "personal").requested_target, "personal");
}

class PolicyRequestedSource : public PolicyRequest {
protected:
    Policy p = test::parse(
        "svc * relay personal deny\n"
        "svc * remote-a personal allow\n"
        "svc * remote-a @default allow target=work\n");
};

TEST_F(PolicyRequestedSource, UnknownQube) {
    Decision d = eval(p, sys, "svc", "relay", "personal", "ghost");
    EXPECT_EQ(d.verdict, Verdict::Deny);
    EXPECT_EQ(d.reason, "unknown requested source qube 'ghost'");
}

TEST_F(PolicyRequestedSource, OnlyRemoteVms) {
    Decision d = eval(p, sys, "svc", "relay", "personal", "work");
    EXPECT_EQ(d.verdict, Verdict::Deny);
    EXPECT_EQ(d.reason, "work: requested source is only authorized for RemoteVM");
}

TEST_F(PolicyRequestedSource, OnlyFromItsRelay) {
    Decision d = eval(p, sys, "svc", "work", "personal", "remote-a");
    EXPECT_EQ(d.verdict, Verdict::Deny);
    EXPECT_EQ(d.reason, "work is not a relay for remote-a");
    EXPECT_EQ(eval(p, sys, "svc", "ghost", "personal", "remote-a").reason,
              "ghost is not a relay for remote-a");
}

TEST_F(PolicyRequestedSource, TheRemoteVmBecomesTheSource) {
    // Without requested_source the relay itself is judged (line 1 denies).
    EXPECT_EQ(eval(p, sys, "svc", "relay", "personal").reason, "denied by policy " + test::at(1));
    Decision d = eval(p, sys, "svc", "relay", "personal", "remote-a");
    EXPECT_EQ(d.verdict, Verdict::Allow);
    EXPECT_EQ(d.rule->line, 2);
    EXPECT_EQ(d.source, "remote-a");
    EXPECT_EQ(d.caller, "relay");
    EXPECT_EQ(d.policy_source, "remote-a");
    // The caller must be the relay as the RemoteVM's relayvm spells it (Qubes
    // compares the strings): the relay's uuid is not its name.
    Decision by_uuid =
        eval(p, sys, "svc", std::string("uuid:") + test::kRelayUuid, "personal", "remote-a");
    EXPECT_EQ(by_uuid.verdict, Verdict::Deny);
    EXPECT_EQ(by_uuid.reason, std::string("uuid:") + test::kRelayUuid + " is not a relay for remote-a");
    // The remote qube may be named by uuid; the policy judges that spelling.
    std::string remote_uuid = std::string("uuid:") + test::kRemoteUuid;
    Decision remote_by_uuid = eval(p, sys, "svc", "relay", "personal", remote_uuid);
    EXPECT_EQ(remote_by_uuid.verdict, Verdict::Allow);
    EXPECT_EQ(remote_by_uuid.policy_source, remote_uuid);
}

TEST_F(PolicyRequestedSource, EmptyMeansNone) {
    Decision d = eval(p, sys, "svc", "relay", "personal", "");
    EXPECT_EQ(d.reason, "denied by policy " + test::at(1));
    EXPECT_FALSE(d.policy_source.has_value());
}

TEST_F(PolicyRequest, SourceSpellings) {
    Policy p = test::parse("svc * @adminvm work allow\nsvc * work personal allow\n");
    for (const char* dom0 : {"dom0", "@adminvm", "uuid:00000000-0000-0000-0000-000000000000"}) {
        Decision d = eval(p, sys, "svc", dom0, "work");
        EXPECT_EQ(d.verdict, Verdict::Allow) << dom0;
        EXPECT_EQ(d.source, dom0) << dom0;  // judged as spelled
    }
    Decision by_uuid = eval(p, sys, "svc", std::string("uuid:") + test::kWorkUuid, "personal");
    EXPECT_EQ(by_uuid.verdict, Verdict::Allow);
    EXPECT_EQ(by_uuid.source, std::string("uuid:") + test::kWorkUuid);
    // Keywords other than @adminvm are no source.
    EXPECT_EQ(eval(p, sys, "svc", "@anyvm", "work").verdict, Verdict::Deny);
    EXPECT_EQ(eval(p, sys, "svc", "", "work").verdict, Verdict::Deny);
}

}  // namespace
}  // namespace aerie::policy
