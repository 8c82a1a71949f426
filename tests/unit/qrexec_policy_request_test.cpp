#include <gtest/gtest.h>

#include "policy/files.hpp"
#include "policy/loader.hpp"
#include "qrexec/policy_request.hpp"

namespace aerie::qrexec {
namespace {

// --- request framing and parsing ---------------------------------------------

PolicyRequest request_ok(std::string_view text) {
    std::string error;
    auto r = parse_policy_request(text, &error);
    EXPECT_TRUE(r.has_value()) << text << ": " << error;
    return r ? *r : PolicyRequest{};
}

std::string request_error(std::string_view text) {
    std::string error;
    auto r = parse_policy_request(text, &error);
    EXPECT_FALSE(r.has_value()) << text;
    EXPECT_FALSE(error.empty()) << text;
    return error;
}

constexpr std::string_view kBase =
    "source=work\nintended_target=vault\nservice_and_arg=qubes.Filecopy+\n";

TEST(QrexecPolicyRequest, RequestEnd) {
    EXPECT_EQ(policy_request_end("\n"), 1u);
    EXPECT_EQ(policy_request_end("\nsource=x\n\n"), 1u);
    EXPECT_EQ(policy_request_end("a=b\n\n"), 5u);
    EXPECT_EQ(policy_request_end("a=b\n\nmore"), 5u);
    EXPECT_FALSE(policy_request_end(""));
    EXPECT_FALSE(policy_request_end("a=b\n"));
    EXPECT_FALSE(policy_request_end("a=b\nc=d"));
}

TEST(QrexecPolicyRequest, RequiredKeys) {
    auto r = request_ok(std::string(kBase) + "\n");
    EXPECT_EQ(r.source, "work");
    EXPECT_EQ(r.intended_target, "vault");
    EXPECT_EQ(r.service_and_arg, "qubes.Filecopy+");
    EXPECT_FALSE(r.requested_source);
    EXPECT_FALSE(r.assume_yes_for_ask);
    EXPECT_FALSE(r.just_evaluate);
    EXPECT_FALSE(r.domain_id);
    EXPECT_FALSE(r.process_ident);
}

TEST(QrexecPolicyRequest, MissingRequiredKey) {
    request_error("intended_target=vault\nservice_and_arg=s+\n\n");
    request_error("source=work\nservice_and_arg=s+\n\n");
    request_error("source=work\nintended_target=vault\n\n");
    request_error("\n");
    request_error("");
}

TEST(QrexecPolicyRequest, OptionalKeys) {
    auto r = request_ok(std::string(kBase) +
                        "requested_source=remote-vault\nassume_yes_for_ask=yes\n"
                        "just_evaluate=no\ndomain_id=7\nprocess_ident=SOCKET12\n\n");
    EXPECT_EQ(r.requested_source, "remote-vault");
    EXPECT_TRUE(r.assume_yes_for_ask);
    EXPECT_FALSE(r.just_evaluate);
    EXPECT_EQ(r.domain_id, "7");
    EXPECT_EQ(r.process_ident, "SOCKET12");
    auto j = request_ok(std::string(kBase) + "just_evaluate=yes\nassume_yes_for_ask=no\n\n");
    EXPECT_TRUE(j.just_evaluate);
    EXPECT_FALSE(j.assume_yes_for_ask);
}

TEST(QrexecPolicyRequest, KeysInAnyOrderAndEmptyValues) {
    auto r = request_ok("service_and_arg=a+b\nintended_target=\nsource=x\n\n");
    EXPECT_EQ(r.service_and_arg, "a+b");
    EXPECT_EQ(r.intended_target, "");
    EXPECT_EQ(r.source, "x");
    // Only the first '=' splits.
    auto eq = request_ok("source=a=b\nintended_target=t\nservice_and_arg=s\n\n");
    EXPECT_EQ(eq.source, "a=b");
}

TEST(QrexecPolicyRequest, DuplicateKeysRejected) {
    for (std::string key :
         {"source=w", "intended_target=v", "service_and_arg=s+", "requested_source=r",
          "assume_yes_for_ask=yes", "just_evaluate=no", "domain_id=1", "process_ident=2"}) {
        std::string text = std::string(kBase) + key + "\n" + key + "\n\n";
        auto e = request_error(text);
        EXPECT_NE(e.find("duplicate"), std::string::npos) << e;
    }
}

TEST(QrexecPolicyRequest, UnknownKeyRejected) {
    auto e = request_error(std::string(kBase) + "target=x\n\n");
    EXPECT_NE(e.find("unknown"), std::string::npos) << e;
    request_error(std::string(kBase) + "=x\n\n");
    request_error(std::string(kBase) + "Source=x\n\n");
}

TEST(QrexecPolicyRequest, LineWithoutEqualsRejected) {
    request_error(std::string(kBase) + "garbage\n\n");
    request_error("source work\nintended_target=v\nservice_and_arg=s\n\n");
}

TEST(QrexecPolicyRequest, BooleanValues) {
    request_error(std::string(kBase) + "assume_yes_for_ask=true\n\n");
    request_error(std::string(kBase) + "just_evaluate=1\n\n");
    request_error(std::string(kBase) + "just_evaluate=\n\n");
    request_error(std::string(kBase) + "just_evaluate=YES\n\n");
}

TEST(QrexecPolicyRequest, TerminationAndTrailingData) {
    // A client that shut its side down after the lines still gets an answer.
    EXPECT_EQ(request_ok(kBase).source, "work");
    EXPECT_EQ(request_ok("source=w\nintended_target=v\nservice_and_arg=s").service_and_arg, "s");
    request_error(std::string(kBase) + "\nsource=again\n");
    request_error(std::string(kBase) + "\n\n");
}

TEST(QrexecPolicyRequest, NonAsciiAndSizeRejected) {
    request_error("source=w\xc3\xa9\nintended_target=v\nservice_and_arg=s\n\n");
    std::string big = std::string(kBase) + "domain_id=" +
                      std::string(kMaxPolicyRequestBytes - kBase.size() - 11, 'x') + "\n";
    EXPECT_EQ(big.size(), kMaxPolicyRequestBytes);
    request_ok(big);
    request_error(big + "\n");
}

// --- answers -------------------------------------------------------------------

constexpr const char* kSystem = R"({"domains": {
  "dom0": {"type": "AdminVM", "tags": [], "uuid": "00000000-0000-0000-0000-000000000000",
           "power_state": "Running", "default_dispvm": "dvm", "template_for_dispvms": false,
           "internal": false, "icon": "", "label": "black", "guivm": null, "relayvm": null,
           "transport_rpc": null},
  "work": {"type": "AppVM", "tags": [], "uuid": "11111111-1111-1111-1111-111111111111",
           "power_state": "Running", "default_dispvm": "dvm", "template_for_dispvms": false,
           "internal": false, "icon": "", "label": "blue", "guivm": "dom0", "relayvm": null,
           "transport_rpc": null},
  "vault": {"type": "AppVM", "tags": [], "uuid": "22222222-2222-2222-2222-222222222222",
            "power_state": "Halted", "default_dispvm": null, "template_for_dispvms": false,
            "internal": false, "icon": "", "label": "black", "guivm": "dom0", "relayvm": null,
            "transport_rpc": null},
  "dvm": {"type": "AppVM", "tags": [], "uuid": "33333333-3333-3333-3333-333333333333",
          "power_state": "Halted", "default_dispvm": "dvm", "template_for_dispvms": true,
          "internal": false, "icon": "", "label": "red", "guivm": "dom0", "relayvm": null,
          "transport_rpc": null},
  "relay": {"type": "AppVM", "tags": [], "uuid": "44444444-4444-4444-4444-444444444444",
            "power_state": "Running", "default_dispvm": null, "template_for_dispvms": false,
            "internal": false, "icon": "", "label": "purple", "guivm": "dom0", "relayvm": null,
            "transport_rpc": null},
  "remote": {"type": "RemoteVM", "tags": [], "uuid": "55555555-5555-5555-5555-555555555555",
             "power_state": "Running", "default_dispvm": null, "template_for_dispvms": false,
             "internal": false, "icon": "", "label": "green", "guivm": null, "relayvm": "relay",
             "transport_rpc": "qubesair.SSHProxy"}
}})";

constexpr const char* kPolicy =
    "test.Allow  *  work    vault   allow\n"
    "test.Deny   *  work    vault   deny\n"
    "test.Ask    *  work    @anyvm  ask\n"
    "test.Dom0   *  work    @adminvm allow\n"
    "test.Remote *  remote  work    allow\n"
    "test.RemoteAsk * remote work   ask\n"
    "*           *  @anyvm  @anyvm  deny\n";

class QrexecPolicyAnswer : public ::testing::Test {
protected:
    void SetUp() override {
        policy::MemoryFiles files;
        policy::LoadOptions options;
        options.dirs = {"/etc/qubes/policy.d"};
        policy_ = policy::load_policy_text(files, "/etc/qubes/policy.d/30-test.policy", kPolicy,
                                           options);
        system_ = policy::SystemInfo::from_json(kSystem);
    }

    std::string answer(std::string_view extra, std::string_view source, std::string_view target,
                       std::string_view service, std::string* why = nullptr) {
        std::string text = "source=" + std::string(source) + "\nintended_target=" +
                           std::string(target) + "\nservice_and_arg=" + std::string(service) +
                           "\n" + std::string(extra) + "\n";
        std::string error;
        auto request = parse_policy_request(text, &error);
        EXPECT_TRUE(request) << error;
        if (!request) return "";
        return answer_policy_request(policy_, system_, *request, why);
    }

    policy::Policy policy_;
    policy::SystemInfo system_;
};

// Qubes' daemon sends qrexec-policy-exec's text without its last newline.
TEST_F(QrexecPolicyAnswer, Allow) {
    EXPECT_EQ(answer("", "work", "vault", "test.Allow+"),
              "user=DEFAULT\nresult=allow\ntarget=vault\n"
              "target_uuid=uuid:22222222-2222-2222-2222-222222222222\n"
              "autostart=True\nrequested_target=vault");
}

TEST_F(QrexecPolicyAnswer, AllowToAdminVm) {
    EXPECT_EQ(answer("", "work", "@adminvm", "test.Dom0"),
              "user=DEFAULT\nresult=allow\ntarget=dom0\nautostart=True\n"
              "requested_target=@adminvm");
}

TEST_F(QrexecPolicyAnswer, DenyWithReason) {
    std::string why;
    EXPECT_EQ(answer("", "work", "vault", "test.Deny+", &why), "result=deny");
    EXPECT_NE(why.find("30-test.policy:2"), std::string::npos) << why;
    EXPECT_EQ(answer("", "work", "vault", "test.Other+"), "result=deny");
}

TEST_F(QrexecPolicyAnswer, AskWithNobodyToAskDenies) {
    std::string why;
    EXPECT_EQ(answer("", "work", "vault", "test.Ask+", &why), "result=deny");
    EXPECT_FALSE(why.empty());
}

TEST_F(QrexecPolicyAnswer, AskAssumeYes) {
    EXPECT_EQ(answer("assume_yes_for_ask=yes\n", "work", "vault", "test.Ask+"),
              "user=DEFAULT\nresult=allow\ntarget=vault\n"
              "target_uuid=uuid:22222222-2222-2222-2222-222222222222\n"
              "autostart=True\nrequested_target=vault");
    EXPECT_EQ(answer("assume_yes_for_ask=no\n", "work", "vault", "test.Ask+"), "result=deny");
}

TEST_F(QrexecPolicyAnswer, JustEvaluate) {
    EXPECT_EQ(answer("just_evaluate=yes\n", "work", "vault", "test.Allow+"), "result=allow");
    EXPECT_EQ(answer("just_evaluate=yes\n", "work", "vault", "test.Deny+"), "result=deny");
    EXPECT_EQ(answer("just_evaluate=yes\n", "work", "vault", "test.Ask+"), "result=deny");
    // Under assume_yes_for_ask the ask becomes an allow, and only evaluating
    // shows it as one (Qubes' daemon).
    EXPECT_EQ(answer("just_evaluate=yes\nassume_yes_for_ask=yes\n", "work", "vault", "test.Ask+"),
              "result=allow");
}

TEST_F(QrexecPolicyAnswer, RequestedSource) {
    EXPECT_EQ(answer("requested_source=remote\n", "relay", "work", "test.Remote+"),
              "user=DEFAULT\nresult=allow\ntarget=work\n"
              "target_uuid=uuid:11111111-1111-1111-1111-111111111111\n"
              "autostart=True\nrequested_target=work\npolicy_source=remote");
    std::string why;
    EXPECT_EQ(answer("requested_source=remote\n", "vault", "work", "test.Remote+", &why),
              "result=deny");
    EXPECT_NE(why.find("not a relay"), std::string::npos) << why;
    EXPECT_EQ(answer("requested_source=nonexistent\n", "relay", "work", "test.Remote+"),
              "result=deny");
    // Without it, the relay is judged as itself.
    EXPECT_EQ(answer("", "relay", "work", "test.Remote+"), "result=deny");
    // An empty requested_source counts as none.
    EXPECT_EQ(answer("requested_source=\n", "work", "vault", "test.Allow+"),
              answer("", "work", "vault", "test.Allow+"));
}

TEST_F(QrexecPolicyAnswer, AskForARemoteSourceIsDeniedWithItsReason) {
    std::string why;
    EXPECT_EQ(answer("requested_source=remote\n", "relay", "work", "test.RemoteAsk+", &why), "result=deny");
    EXPECT_EQ(why, "denied: ask for a call from the remote qube remote (through relay): no prompt answers for "
                   "another zone's qubes");
    // The admin's standing answer for asks covers remote sources too.
    EXPECT_EQ(answer("requested_source=remote\nassume_yes_for_ask=yes\n", "relay", "work", "test.RemoteAsk+"),
              "user=DEFAULT\nresult=allow\ntarget=work\n"
              "target_uuid=uuid:11111111-1111-1111-1111-111111111111\n"
              "autostart=True\nrequested_target=work\npolicy_source=remote");
}

TEST_F(QrexecPolicyAnswer, IgnoredKeysDoNotChangeTheAnswer) {
    EXPECT_EQ(answer("domain_id=3\nprocess_ident=SOCKET9\n", "work", "vault", "test.Allow+"),
              answer("", "work", "vault", "test.Allow+"));
}

}  // namespace
}  // namespace aerie::qrexec
