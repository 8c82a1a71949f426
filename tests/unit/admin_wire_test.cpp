#include <gtest/gtest.h>

#include "admin/wire.hpp"

namespace aerie::admin {
namespace {

using namespace std::string_literals;

TEST(AdminWire, ParsesRequestWithArgumentAndPayload) {
    std::string error;
    auto r = parse_request("admin.vm.property.Set+label work name vault\0blue"s, &error);
    ASSERT_TRUE(r) << error;
    EXPECT_EQ(r->method, "admin.vm.property.Set");
    EXPECT_EQ(r->arg, "label");
    EXPECT_EQ(r->source, "work");
    EXPECT_EQ(r->dest, "vault");
    EXPECT_EQ(r->payload, "blue");
}

TEST(AdminWire, KeywordAdminvmIsDom0AndArgumentMayBeEmpty) {
    auto r = parse_request("admin.vm.List dom0 keyword adminvm\0"s);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->dest, "dom0");
    EXPECT_EQ(r->arg, "");
    EXPECT_EQ(r->payload, "");
    // Only the first '+' splits: arguments may contain '+'.
    EXPECT_EQ(parse_request("admin.vm.device.block.Attach+dom0+sda1 dom0 name work\0"s)->arg, "dom0+sda1");
}

TEST(AdminWire, RejectsMalformedRequests) {
    std::string error;
    EXPECT_FALSE(parse_request("admin.vm.List dom0 name dom0", &error));
    EXPECT_EQ(error, "no NUL after the request header");
    EXPECT_FALSE(parse_request("admin.vm.List dom0 name\0"s, &error));
    EXPECT_EQ(error, "request header needs four fields");
    EXPECT_FALSE(parse_request("admin.vm.List dom0  name dom0\0"s, &error));
    EXPECT_FALSE(parse_request("admin.vm.List dom0 keyword default\0"s, &error));
    EXPECT_EQ(error, "unknown destination type");
    EXPECT_FALSE(parse_request("+arg dom0 name dom0\0"s, &error));
    EXPECT_EQ(error, "empty method");
    std::string huge = "admin.vm.List dom0 name dom0\0"s + std::string(kMaxRequestBytes, 'x');
    EXPECT_FALSE(parse_request(huge, &error));
    EXPECT_EQ(error, "request too long");
}

TEST(AdminWire, EncodesRepliesAsQubesd) {
    EXPECT_EQ(encode_success("work class=AppVM state=Running\n"), "0\0work class=AppVM state=Running\n"s);
    EXPECT_EQ(encode_exception("QubesNoSuchPropertyError", "Invalid property name: foo"),
              "2\0QubesNoSuchPropertyError\0\0Invalid property name: foo\0"s);
    EXPECT_EQ(encode_event("work", "property-set:label", {{"name", "label"}, {"newvalue", "blue"}}),
              "1\0work\0property-set:label\0name\0label\0newvalue\0blue\0\0"s);
    EXPECT_EQ(encode_event("", "domain-add", {{"vm", "work"}}), "1\0\0domain-add\0vm\0work\0\0"s);
}

TEST(AdminWire, RequestAndReplyRoundTrip) {
    ApiRequest req{"admin.vm.Create.AppVM", "fedora", "dom0", "dom0", "name=work label=red"};
    auto back = parse_request(encode_request(req));
    ASSERT_TRUE(back);
    EXPECT_EQ(back->method, req.method);
    EXPECT_EQ(back->arg, req.arg);
    EXPECT_EQ(back->payload, req.payload);

    auto ok = parse_reply(encode_success("body"));
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->kind, ApiReply::Kind::Success);
    EXPECT_EQ(ok->body, "body");
    auto exc = parse_reply(encode_exception("QubesVMNotHaltedError", "not halted"));
    ASSERT_TRUE(exc);
    EXPECT_EQ(exc->kind, ApiReply::Kind::Exception);
    EXPECT_EQ(exc->exc_type, "QubesVMNotHaltedError");
    EXPECT_EQ(exc->message, "not halted");
    EXPECT_FALSE(parse_reply("2\0Type\0"s));
    EXPECT_FALSE(parse_reply("9\0"s));
}

}  // namespace
}  // namespace aerie::admin
