// The exact answer text given to the daemon for every kind of decision.
#include <gtest/gtest.h>

#include <string>

#include "policy_test_support.hpp"

namespace aerie::policy {
namespace {

using test::eval;

class PolicyAnswer : public ::testing::Test {
protected:
    SystemInfo sys = test::standard_system();
    Policy p = test::parse(
        "svc * work personal allow\n"
        "svc * work @adminvm allow\n"
        "svc * work @dispvm allow\n"
        "svc * work @dispvm:other-dvm allow user=root\n"
        "svc * work remote-a allow user=root\n"
        "svc * remote-a personal allow\n"
        "svc * work @default allow target=nodvm autostart=no user=alice\n"
        "svc * work fedora ask\n"
        "svc * work disp42 deny\n");
};

TEST_F(PolicyAnswer, NormalQube) {
    EXPECT_EQ(render_answer(eval(p, sys, "svc", "work", "personal")),
              "user=DEFAULT\n"
              "result=allow\n"
              "target=personal\n"
              "target_uuid=uuid:22222222-2222-4222-8222-222222222222\n"
              "autostart=True\n"
              "requested_target=personal\n");
}

TEST_F(PolicyAnswer, RequestedByUuid) {
    EXPECT_EQ(render_answer(eval(p, sys, "svc", "work", "uuid:22222222-2222-4222-8222-222222222222")),
              "user=DEFAULT\n"
              "result=allow\n"
              "target=uuid:22222222-2222-4222-8222-222222222222\n"
              "target_uuid=uuid:22222222-2222-4222-8222-222222222222\n"
              "autostart=True\n"
              "requested_target=uuid:22222222-2222-4222-8222-222222222222\n");
}

TEST_F(PolicyAnswer, Dom0HasNoUuidLine) {
    EXPECT_EQ(render_answer(eval(p, sys, "svc", "work", "dom0")),
              "user=DEFAULT\n"
              "result=allow\n"
              "target=dom0\n"
              "autostart=True\n"
              "requested_target=dom0\n");
    EXPECT_EQ(render_answer(eval(p, sys, "svc", "work", "@adminvm")),
              "user=DEFAULT\n"
              "result=allow\n"
              "target=dom0\n"
              "autostart=True\n"
              "requested_target=@adminvm\n");
    EXPECT_EQ(render_answer(eval(p, sys, "svc", "work", std::string("uuid:") + test::kAdminUuid)),
              "user=DEFAULT\n"
              "result=allow\n"
              "target=dom0\n"
              "autostart=True\n"
              "requested_target=uuid:00000000-0000-0000-0000-000000000000\n");
}

TEST_F(PolicyAnswer, Disposable) {
    EXPECT_EQ(render_answer(eval(p, sys, "svc", "work", "@dispvm")),
              "user=DEFAULT\n"
              "result=allow\n"
              "target=@dispvm:default-dvm\n"
              "target_uuid=@dispvm:uuid:33333333-3333-4333-8333-333333333333\n"
              "autostart=True\n"
              "requested_target=@dispvm\n");
    EXPECT_EQ(render_answer(eval(p, sys, "svc", "work", "@dispvm:other-dvm")),
              "user=root\n"
              "result=allow\n"
              "target=@dispvm:other-dvm\n"
              "target_uuid=@dispvm:uuid:44444444-4444-4444-8444-444444444444\n"
              "autostart=True\n"
              "requested_target=@dispvm:other-dvm\n");
}

TEST_F(PolicyAnswer, RemoteVmGoesToItsRelay) {
    EXPECT_EQ(render_answer(eval(p, sys, "svc+arg", "work", "remote-a")),
              "user=DEFAULT\n"
              "result=allow\n"
              "target=relay\n"
              "target_uuid=uuid:99999999-9999-4999-8999-999999999999\n"
              "autostart=True\n"
              "requested_target=remote-a\n"
              "service=qubesair.SSHProxy+remote-a+svc+arg\n");
}

TEST_F(PolicyAnswer, RelayedSourceAddsPolicySource) {
    EXPECT_EQ(render_answer(eval(p, sys, "svc", "relay", "personal", "remote-a")),
              "user=DEFAULT\n"
              "result=allow\n"
              "target=personal\n"
              "target_uuid=uuid:22222222-2222-4222-8222-222222222222\n"
              "autostart=True\n"
              "requested_target=personal\n"
              "policy_source=remote-a\n");
}

// Qubes' answer for dom0 has no policy_source line, also for a relayed call.
TEST_F(PolicyAnswer, RelayedCallToDom0HasNoPolicySource) {
    Policy to_dom0 = test::parse("svc * remote-a @adminvm allow\n");
    EXPECT_EQ(render_answer(eval(to_dom0, sys, "svc", "relay", "dom0", "remote-a")),
              "user=DEFAULT\n"
              "result=allow\n"
              "target=dom0\n"
              "autostart=True\n"
              "requested_target=dom0\n");
}

TEST_F(PolicyAnswer, UserAndAutostartFromTheRule) {
    EXPECT_EQ(render_answer(eval(p, sys, "svc", "work", "")),
              "user=alice\n"
              "result=allow\n"
              "target=nodvm\n"
              "target_uuid=uuid:88888888-8888-4888-8888-888888888888\n"
              "autostart=False\n"
              "requested_target=@default\n");
}

TEST_F(PolicyAnswer, DenyAndAsk) {
    EXPECT_EQ(render_answer(eval(p, sys, "svc", "work", "disp42")), "result=deny\n");
    EXPECT_EQ(render_answer(eval(p, sys, "svc", "nodvm", "personal")), "result=deny\n");
    Decision ask = eval(p, sys, "svc", "work", "fedora");
    ASSERT_EQ(ask.verdict, Verdict::Ask);
    // Without anyone to ask, an ask is a deny.
    EXPECT_EQ(render_answer(ask), "result=deny\n");
}

TEST_F(PolicyAnswer, JustEvaluate) {
    EXPECT_EQ(render_answer(eval(p, sys, "svc", "work", "personal"), true), "result=allow\n");
    EXPECT_EQ(render_answer(eval(p, sys, "svc", "work", "remote-a"), true), "result=allow\n");
    EXPECT_EQ(render_answer(eval(p, sys, "svc", "work", "fedora"), true), "result=deny\n");
    EXPECT_EQ(render_answer(eval(p, sys, "svc", "work", "disp42"), true), "result=deny\n");
}

TEST_F(PolicyAnswer, AnsweredAsk) {
    Decision ask = eval(p, sys, "svc", "work", "fedora");
    ASSERT_EQ(ask.verdict, Verdict::Ask);
    EXPECT_EQ(render_answer(answer_ask(p, sys, ask, std::string("fedora"))),
              "user=DEFAULT\n"
              "result=allow\n"
              "target=fedora\n"
              "target_uuid=uuid:55555555-5555-4555-8555-555555555555\n"
              "autostart=True\n"
              "requested_target=fedora\n");
    EXPECT_EQ(render_answer(answer_ask(p, sys, ask, std::nullopt)), "result=deny\n");
}

}  // namespace
}  // namespace aerie::policy
