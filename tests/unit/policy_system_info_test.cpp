// The system info the engine judges by: JSON parsing, lookups by name and
// uuid, and the JSON errors.
#include <gtest/gtest.h>

#include <string>

#include "policy/system_info.hpp"
#include "policy_test_support.hpp"

namespace aerie::policy {
namespace {

const char* const kJson = R"({"domains": {
  "dom0": {"type": "AdminVM", "tags": [], "uuid": "00000000-0000-0000-0000-000000000000",
           "power_state": "Running", "icon": "adminvm-black", "label": "black"},
  "work": {"type": "AppVM", "tags": ["t1", "t2"], "uuid": "uuid:11111111-1111-4111-8111-111111111111",
           "power_state": "Running", "default_dispvm": "default-dvm",
           "template_for_dispvms": false, "internal": false, "icon": "appvm-blue",
           "label": "blue", "guivm": "dom0", "relayvm": null, "transport_rpc": null},
  "default-dvm": {"type": "AppVM", "tags": [], "uuid": "33333333-3333-4333-8333-333333333333",
                  "template_for_dispvms": true, "default_dispvm": ""},
  "remote": {"type": "RemoteVM", "uuid": "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa",
             "relayvm": "work", "transport_rpc": "qubesair.SSHProxy", "internal": true}
}})";

TEST(PolicySystemInfo, FromJson) {
    SystemInfo sys = SystemInfo::from_json(kJson);
    EXPECT_EQ(sys.domains().size(), 4u);
    const Domain* work = sys.find("work");
    ASSERT_NE(work, nullptr);
    EXPECT_EQ(work->type, "AppVM");
    EXPECT_EQ(work->tags, (std::vector<std::string>{"t1", "t2"}));
    EXPECT_TRUE(work->has_tag("t2"));
    EXPECT_FALSE(work->has_tag("t3"));
    EXPECT_EQ(work->uuid, "11111111-1111-4111-8111-111111111111");  // "uuid:" prefix dropped
    EXPECT_EQ(work->power_state, "Running");
    EXPECT_EQ(work->default_dispvm, "default-dvm");
    EXPECT_EQ(work->guivm, "dom0");
    EXPECT_FALSE(work->relayvm.has_value());
    EXPECT_EQ(work->icon, "appvm-blue");
    EXPECT_EQ(work->label, "blue");

    const Domain* dvm = sys.find("default-dvm");
    EXPECT_TRUE(dvm->template_for_dispvms);
    EXPECT_FALSE(dvm->default_dispvm.has_value());  // "" is none
    EXPECT_EQ(dvm->power_state, "Halted");          // the default

    const Domain* remote = sys.find("remote");
    EXPECT_EQ(remote->relayvm, "work");
    EXPECT_EQ(remote->transport_rpc, "qubesair.SSHProxy");
    EXPECT_TRUE(remote->internal);

    EXPECT_TRUE(sys.dom0().is_admin());
}

TEST(PolicySystemInfo, LookupByUuid) {
    SystemInfo sys = SystemInfo::from_json(kJson);
    EXPECT_EQ(sys.find("uuid:11111111-1111-4111-8111-111111111111"), sys.find("work"));
    EXPECT_EQ(sys.find("uuid:00000000-0000-0000-0000-000000000000"), &sys.dom0());
    EXPECT_EQ(sys.find("uuid:ffffffff-ffff-4fff-8fff-ffffffffffff"), nullptr);
    EXPECT_EQ(sys.find("11111111-1111-4111-8111-111111111111"), nullptr);  // a bare uuid is a name
    EXPECT_EQ(sys.find("ghost"), nullptr);
}

TEST(PolicySystemInfo, Dom0IsAlwaysThere) {
    SystemInfo empty;
    EXPECT_EQ(empty.domains().size(), 1u);
    EXPECT_EQ(empty.dom0().name, "dom0");
    EXPECT_EQ(empty.dom0().uuid, "00000000-0000-0000-0000-000000000000");
    SystemInfo json = SystemInfo::from_json(R"({"domains": {}})");
    EXPECT_NE(json.find("dom0"), nullptr);
}

TEST(PolicySystemInfo, AddReplacesByName) {
    SystemInfo sys;
    sys.add(test::make_domain("a", "AppVM", "u1"));
    sys.add(test::make_domain("a", "TemplateVM", "u2"));
    EXPECT_EQ(sys.find("a")->type, "TemplateVM");
    EXPECT_EQ(sys.find("uuid:u1"), nullptr);
    EXPECT_EQ(sys.find("uuid:u2"), sys.find("a"));
}

TEST(PolicySystemInfo, JsonRoundTrip) {
    SystemInfo sys = SystemInfo::from_json(kJson);
    SystemInfo again = SystemInfo::from_json(sys.to_json());
    EXPECT_EQ(again.to_json(), sys.to_json());
    EXPECT_EQ(again.find("remote")->relayvm, "work");
}

std::string json_error(const std::string& text) {
    try {
        SystemInfo::from_json(text);
    } catch (const SystemInfoError& e) {
        return e.what();
    }
    return "no error";
}

TEST(PolicySystemInfo, JsonErrors) {
    EXPECT_EQ(json_error("{"), "system info is not valid JSON");
    EXPECT_EQ(json_error("[]"), "system info has no \"domains\" object");
    EXPECT_EQ(json_error(R"({"domains": []})"), "system info has no \"domains\" object");
    EXPECT_EQ(json_error(R"({"domains": {"a": 1}})"), "domains.a: expected an object");
    EXPECT_EQ(json_error(R"({"domains": {"a": {}}})"), "domains.a.type: missing");
    EXPECT_EQ(json_error(R"({"domains": {"a": {"type": 1}}})"), "domains.a.type: expected a string");
    EXPECT_EQ(json_error(R"({"domains": {"a": {"type": "AppVM", "tags": "x"}}})"),
              "domains.a.tags: expected a list");
    EXPECT_EQ(json_error(R"({"domains": {"a": {"type": "AppVM", "tags": [1]}}})"),
              "domains.a.tags: expected strings");
    EXPECT_EQ(json_error(R"({"domains": {"a": {"type": "AppVM", "internal": "yes"}}})"),
              "domains.a.internal: expected true or false");
    EXPECT_EQ(json_error(R"({"domains": {"": {"type": "AppVM"}}})"), "domains: empty qube name");
}

TEST(PolicySystemInfo, EvaluatesFromJson) {
    SystemInfo sys = SystemInfo::from_json(kJson);
    Policy p = test::parse("svc * @tag:t1 @dispvm allow\n");
    Decision d = test::eval(p, sys, "svc", "work", "@dispvm");
    EXPECT_EQ(d.verdict, Verdict::Allow);
    EXPECT_EQ(render_answer(d),
              "user=DEFAULT\nresult=allow\ntarget=@dispvm:default-dvm\n"
              "target_uuid=@dispvm:uuid:33333333-3333-4333-8333-333333333333\n"
              "autostart=True\nrequested_target=@dispvm\n");
}

}  // namespace
}  // namespace aerie::policy
