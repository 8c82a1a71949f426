// Directives: !include, !include-dir, !include-service (old three-column
// syntax), !compat-4.0, and the errors around them (bad directives, missing
// targets, cycles).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "policy_test_support.hpp"

namespace aerie::policy {
namespace {

using test::parse;
using test::parse_error;

const std::string kDir = "/etc/qubes/policy.d";

// "file:line service argument source target action" of every rule, to compare
// whole policies at a glance.
std::vector<std::string> describe(const Policy& p) {
    std::vector<std::string> out;
    for (const Rule& r : p.rules()) {
        out.push_back(r.file + ":" + std::to_string(r.line) + " " + r.service.value_or("*") + " " +
                      r.argument.value_or("*") + " " + r.source.text + " " + r.target.text + " " +
                      std::string(action_name(r.action)));
    }
    return out;
}

TEST(PolicyInclude, InlinedWhereItStands) {
    MemoryFiles files;
    files.add_file(kDir + "/include/extra", "# extra\nb * work personal deny\n");
    Policy p = parse(
        "a * work personal deny\n"
        "!include include/extra\n"
        "c * work personal deny\n",
        files);
    EXPECT_EQ(describe(p), (std::vector<std::string>{
                               test::kFile + ":1 a * work personal deny",
                               kDir + "/include/extra:2 b * work personal deny",
                               test::kFile + ":3 c * work personal deny",
                           }));
}

TEST(PolicyInclude, DirectiveLinesAreStrippedAndCommentsAreNotDirectives) {
    MemoryFiles files;
    files.add_file(kDir + "/inc", "a * work personal deny\n");
    EXPECT_EQ(parse(" \t!include inc  \n#!include missing\n", files).size(), 1u);
}

TEST(PolicyInclude, AbsoluteAndNormalisedPaths) {
    MemoryFiles files;
    files.add_file("/srv/shared/rules", "a * work personal deny\n");
    files.add_file(kDir + "/x/rules", "b * work personal deny\n");
    Policy p = parse("!include /srv/shared/rules\n!include ./x/../x/rules\n", files);
    EXPECT_EQ(describe(p), (std::vector<std::string>{
                               "/srv/shared/rules:1 a * work personal deny",
                               kDir + "/x/rules:1 b * work personal deny",
                           }));
}

TEST(PolicyInclude, NestedIncludesAreRelativeToTheTopLevelFile) {
    MemoryFiles files;
    files.add_file(kDir + "/include/a", "!include b\n");
    files.add_file(kDir + "/b", "top * work personal deny\n");
    files.add_file(kDir + "/include/b", "nested * work personal deny\n");
    Policy p = parse("!include include/a\n", files);
    ASSERT_EQ(p.size(), 1u);
    EXPECT_EQ(p.rules()[0].service, "top");
}

TEST(PolicyInclude, MissingFile) {
    MemoryFiles files;
    files.add_dir(kDir + "/adir");
    EXPECT_EQ(parse_error("\n!include missing\n", files),
              test::kFile + ":2: not a file: " + kDir + "/missing");
    EXPECT_EQ(parse_error("!include adir\n", files), test::kFile + ":1: not a file: " + kDir + "/adir");
}

TEST(PolicyInclude, ErrorsInsideNameTheIncludedFile) {
    MemoryFiles files;
    files.add_file(kDir + "/inc", "# ok\n\nsvc * work @foo deny\n");
    EXPECT_EQ(parse_error("!include inc\n", files),
              kDir + "/inc:3: invalid target token: '@foo'");
}

TEST(PolicyInclude, SameFileTwiceIsNoCycle) {
    MemoryFiles files;
    files.add_file(kDir + "/inc", "a * work personal deny\n");
    EXPECT_EQ(parse("!include inc\n!include inc\n", files).size(), 2u);
}

TEST(PolicyInclude, Cycles) {
    MemoryFiles files;
    files.add_file(kDir + "/a", "!include b\n");
    files.add_file(kDir + "/b", "# b\n!include a\n");
    EXPECT_EQ(parse_error("!include a\n", files), kDir + "/b:2: circular include: " + kDir + "/a");
    // A file including itself.
    files.add_file(test::kFile, "!include 30-test.policy\n");
    EXPECT_EQ(test::load_error(files, LoadOptions{{kDir}, "/nonexistent"}),
              test::kFile + ":1: circular include: " + test::kFile);
    // Through !include-dir.
    MemoryFiles dirs;
    dirs.add_file(kDir + "/sub/x.policy", "!include-dir sub\n");
    EXPECT_EQ(parse_error("!include-dir sub\n", dirs),
              kDir + "/sub/x.policy:1: circular include: " + kDir + "/sub/x.policy");
}

TEST(PolicyInclude, DepthIsBounded) {
    MemoryFiles files;
    for (int i = 0; i < 40; ++i)
        files.add_file(kDir + "/chain" + std::to_string(i), "!include chain" + std::to_string(i + 1) + "\n");
    files.add_file(kDir + "/chain40", "a * work personal deny\n");
    std::string err = parse_error("!include chain0\n", files);
    EXPECT_NE(err.find(": includes nested deeper than 32"), std::string::npos) << err;
    EXPECT_EQ(parse("!include chain30\n", files).size(), 1u);
}

TEST(PolicyIncludeDir, LoadsPolicyFilesSorted) {
    MemoryFiles files;
    files.add_file(kDir + "/d/20-b.policy", "b * work personal deny\n");
    files.add_file(kDir + "/d/10-a.policy", "a * work personal deny\n");
    files.add_file(kDir + "/d/10_a.policy", "c * work personal deny\n");
    files.add_file(kDir + "/d/.hidden.policy", "hidden * work personal deny\n");
    files.add_file(kDir + "/d/README", "not policy\n");
    files.add_file(kDir + "/d/30-c.policy.rpmnew", "not policy\n");
    files.add_file(kDir + "/d/sub.policy/x.policy", "in a directory\n");
    Policy p = parse("first * work personal deny\n!include-dir d\nlast * work personal deny\n", files);
    std::vector<std::string> services;
    for (const Rule& r : p.rules()) services.push_back(*r.service);
    EXPECT_EQ(services, (std::vector<std::string>{"first", "a", "c", "b", "last"}));
}

TEST(PolicyIncludeDir, Errors) {
    MemoryFiles files;
    files.add_file(kDir + "/afile", "");
    files.add_file(kDir + "/bad/Upper.policy", "");
    EXPECT_EQ(parse_error("!include-dir missing\n", files),
              test::kFile + ":1: not a directory: " + kDir + "/missing");
    EXPECT_EQ(parse_error("!include-dir afile\n", files),
              test::kFile + ":1: not a directory: " + kDir + "/afile");
    EXPECT_EQ(parse_error("!include-dir bad\n", files),
              test::kFile + ":1: invalid filename: " + kDir + "/bad/Upper.policy");
}

TEST(PolicyDirective, InvalidDirectivesAndParams) {
    EXPECT_EQ(parse_error("!foo\n"), test::kFile + ":1: invalid directive");
    EXPECT_EQ(parse_error("!\n"), test::kFile + ":1: invalid directive");
    EXPECT_EQ(parse_error("!INCLUDE x\n"), test::kFile + ":1: invalid directive");
    EXPECT_EQ(parse_error("!include\n"), test::kFile + ":1: invalid number of params");
    EXPECT_EQ(parse_error("!include a b\n"), test::kFile + ":1: invalid number of params");
    EXPECT_EQ(parse_error("!include-dir\n"), test::kFile + ":1: invalid number of params");
    EXPECT_EQ(parse_error("!include-service svc *\n"), test::kFile + ":1: invalid number of params");
    EXPECT_EQ(parse_error("!include-service svc * a b\n"),
              test::kFile + ":1: invalid number of params");
    EXPECT_EQ(parse_error("!compat-4.0 x\n"), test::kFile + ":1: invalid number of params");
}

TEST(PolicyIncludeService, OldFormatWithSubstitutions) {
    MemoryFiles files;
    files.add_file(kDir + "/old/svc",
                   "# old style\n"
                   "$anyvm $dispvm allow,target=$dispvm:default-dvm,user=root\n"
                   "work $adminvm ask,default_target=$adminvm\n"
                   "$tag:shared $default allow,target=personal\n"
                   "$anyvm $anyvm deny,notify=no\n");
    Policy p = parse("!include-service qubes.Svc +arg old/svc\n!include-service other * old/svc\n",
                     files);
    ASSERT_EQ(p.size(), 8u);
    const Rule& r0 = p.rules()[0];
    EXPECT_EQ(r0.service, "qubes.Svc");
    EXPECT_EQ(r0.argument, "+arg");
    EXPECT_EQ(r0.source.kind, TokenKind::AnyVM);
    EXPECT_EQ(r0.target.kind, TokenKind::DispVM);
    EXPECT_EQ(r0.redirect->text, "@dispvm:default-dvm");
    EXPECT_EQ(r0.user, "root");
    EXPECT_EQ(r0.file, kDir + "/old/svc");
    EXPECT_EQ(r0.line, 2);
    EXPECT_EQ(p.rules()[1].default_target->kind, TokenKind::AdminVM);
    EXPECT_EQ(p.rules()[2].source.text, "@tag:shared");
    EXPECT_EQ(p.rules()[2].target.kind, TokenKind::Default);
    EXPECT_FALSE(p.rules()[3].notify);
    EXPECT_EQ(p.rules()[4].service, "other");
    EXPECT_FALSE(p.rules()[4].argument.has_value());

    // Evaluates like the new syntax.
    SystemInfo sys = test::standard_system();
    Decision d = test::eval(p, sys, "qubes.Svc+arg", "personal", "@dispvm");
    EXPECT_EQ(d.target, "@dispvm:default-dvm");
    EXPECT_EQ(d.user, "root");
}

TEST(PolicyIncludeService, DollarIncludeInSameFormat) {
    MemoryFiles files;
    files.add_file(kDir + "/old/svc", "$include:old/common\nwork personal allow\n");
    files.add_file(kDir + "/old/common", "$anyvm $adminvm deny\n");
    Policy p = parse("!include-service svc +x old/svc\n", files);
    EXPECT_EQ(describe(p), (std::vector<std::string>{
                               kDir + "/old/common:1 svc +x @anyvm @adminvm deny",
                               kDir + "/old/svc:2 svc +x work personal allow",
                           }));
}

TEST(PolicyIncludeService, Errors) {
    MemoryFiles files;
    files.add_file(kDir + "/svc-dir", "!include-dir x\n");
    files.add_file(kDir + "/svc-two", "$include:a b\n");
    files.add_file(kDir + "/svc-short", "# c\nwork personal\n");
    files.add_file(kDir + "/svc-params", "work personal allow,foo=bar,user=x\n");
    files.add_file(kDir + "/svc-missing", "$include:nothing\n");
    EXPECT_EQ(parse_error("!include-service a!b * svc-dir\n", files),
              test::kFile + ":1: service 'a!b' contains invalid characters: ('!',)");
    EXPECT_EQ(parse_error("!include-service svc arg svc-dir\n", files),
              test::kFile + ":1: argument 'arg' does not start with +");
    EXPECT_EQ(parse_error("!include-service * +arg svc-dir\n", files),
              test::kFile + ":1: only * argument allowed for * service");
    EXPECT_EQ(parse_error("!include-service svc * nothing\n", files),
              test::kFile + ":1: not a file: " + kDir + "/nothing");
    EXPECT_EQ(parse_error("!include-service svc * svc-dir\n", files),
              kDir + "/svc-dir:1: invalid directive");
    EXPECT_EQ(parse_error("!include-service svc * svc-two\n", files),
              kDir + "/svc-two:1: invalid number of params");
    EXPECT_EQ(parse_error("!include-service svc * svc-short\n", files),
              kDir + "/svc-short:2: wrong number of fields");
    EXPECT_EQ(parse_error("!include-service svc * svc-params\n", files),
              kDir + "/svc-params:1: invalid parameters for action Allow: ['foo=bar', 'user=x']");
    EXPECT_EQ(parse_error("!include-service svc * svc-missing\n", files),
              kDir + "/svc-missing:1: not a file: " + kDir + "/nothing");
}

class PolicyCompat40 : public ::testing::Test {
protected:
    const std::string old = "/etc/qubes-rpc/policy";
    MemoryFiles files;
    LoadOptions options;

    void SetUp() override {
        files.add_file(old + "/qubes.Filecopy", "$anyvm $anyvm ask\n");
        files.add_file(old + "/qubes.Filecopy+foo", "work personal allow\n");
        files.add_file(old + "/qubes.Filecopy+bar", "work $adminvm allow\n");
        files.add_file(old + "/a.Svc", "$anyvm $anyvm deny\n");
        files.add_file(old + "/.hidden", "garbage\n");
        files.add_file(old + "/qubes.Filecopy.rpmsave", "garbage\n");
        files.add_file(old + "/qubes.Filecopy.rpmnew", "garbage\n");
        files.add_file(old + "/qubes.Filecopy.swp", "garbage\n");
        files.add_file(old + "/include/admin-local-rwx", "garbage\n");
    }
};

TEST_F(PolicyCompat40, OrderAndImplicitDenies) {
    Policy p = parse("before * work personal deny\n!compat-4.0\nafter * work personal deny\n",
                     files, test::kFile, options);
    EXPECT_EQ(describe(p),
              (std::vector<std::string>{
                  test::kFile + ":1 before * work personal deny",
                  old + "/a.Svc:1 a.Svc * @anyvm @anyvm deny",
                  old + "/qubes.Filecopy+bar:1 qubes.Filecopy +bar work @adminvm allow",
                  old + "/qubes.Filecopy+bar:0 qubes.Filecopy +bar @anyvm @anyvm deny",
                  old + "/qubes.Filecopy+bar:0 qubes.Filecopy +bar @anyvm @adminvm deny",
                  old + "/qubes.Filecopy+foo:1 qubes.Filecopy +foo work personal allow",
                  old + "/qubes.Filecopy+foo:0 qubes.Filecopy +foo @anyvm @anyvm deny",
                  old + "/qubes.Filecopy+foo:0 qubes.Filecopy +foo @anyvm @adminvm deny",
                  old + "/qubes.Filecopy:1 qubes.Filecopy * @anyvm @anyvm ask",
                  test::kFile + ":3 after * work personal deny",
              }));
}

TEST_F(PolicyCompat40, ImplicitDeniesShadowTheGeneralFile) {
    Policy p = parse("!compat-4.0\n", files, test::kFile, options);
    SystemInfo sys = test::standard_system();
    // +foo allows only work -> personal; the general file would ask.
    EXPECT_EQ(test::eval(p, sys, "qubes.Filecopy+foo", "work", "personal").verdict, Verdict::Allow);
    Decision d = test::eval(p, sys, "qubes.Filecopy+foo", "work", "fedora");
    EXPECT_EQ(d.verdict, Verdict::Deny);
    EXPECT_EQ(d.reason, "denied by policy " + old + "/qubes.Filecopy+foo:0");
    EXPECT_EQ(test::eval(p, sys, "qubes.Filecopy+foo", "work", "dom0").reason,
              "denied by policy " + old + "/qubes.Filecopy+foo:0");
    // Another argument falls through to the general file.
    EXPECT_EQ(test::eval(p, sys, "qubes.Filecopy+other", "work", "fedora").verdict, Verdict::Ask);
}

TEST_F(PolicyCompat40, DirectoryIsConfigurable) {
    MemoryFiles alt;
    alt.add_file("/legacy/svc", "work personal allow\n");
    LoadOptions opts;
    opts.compat_dir = "/legacy";
    Policy p = parse("!compat-4.0\n", alt, test::kFile, opts);
    ASSERT_EQ(p.size(), 1u);
    EXPECT_EQ(p.rules()[0].file, "/legacy/svc");
    // Without the directory there is nothing to include.
    EXPECT_EQ(parse("!compat-4.0\n", alt, test::kFile, LoadOptions{}).size(), 0u);
}

TEST_F(PolicyCompat40, ErrorsInOldFiles) {
    files.add_file(old + "/z.Bad", "work\n");
    EXPECT_EQ(parse_error("!compat-4.0\n", files, test::kFile, options),
              old + "/z.Bad:1: wrong number of fields");
}

}  // namespace
}  // namespace aerie::policy
