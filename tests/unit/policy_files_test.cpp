// Which files make the policy: the policy directories (/run over /etc), the
// *.policy filter, file-name checks, ordering; and the same on a real disk.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "policy_test_support.hpp"

namespace aerie::policy {
namespace {

namespace fs = std::filesystem;

const std::string kRun = "/run/qubes/policy.d";
const std::string kEtc = "/etc/qubes/policy.d";

// The service of each rule, in order: files here hold one rule each, named
// after where they come from.
std::vector<std::string> services(const Policy& p) {
    std::vector<std::string> out;
    for (const Rule& r : p.rules()) out.push_back(r.service.value_or("*"));
    return out;
}

std::string rule(const std::string& service) { return service + " * work personal deny\n"; }

TEST(PolicyFiles, DefaultDirectories) {
    LoadOptions options;
    EXPECT_EQ(options.dirs, (std::vector<std::string>{kRun, kEtc}));
    EXPECT_EQ(options.compat_dir, "/etc/qubes-rpc/policy");
}

TEST(PolicyFiles, RunWinsOverEtcAndFilesSortByBaseName) {
    MemoryFiles files;
    files.add_file(kEtc + "/10-a.policy", rule("etc10"));
    files.add_file(kRun + "/20-b.policy", rule("run20"));
    files.add_file(kEtc + "/30-c.policy", rule("etc30"));
    files.add_file(kRun + "/30-c.policy", rule("run30"));
    files.add_file(kEtc + "/05-z.policy", rule("etc05"));
    Policy p = load_policy(files, LoadOptions{});
    EXPECT_EQ(services(p), (std::vector<std::string>{"etc05", "etc10", "run20", "run30"}));
    EXPECT_EQ(p.rules()[3].file, kRun + "/30-c.policy");
}

TEST(PolicyFiles, DirectoriesAreConfigurableAndTheFirstWins) {
    MemoryFiles files;
    files.add_file("/a/x.policy", rule("ax"));
    files.add_file("/b/x.policy", rule("bx"));
    files.add_file("/b/y.policy", rule("by"));
    EXPECT_EQ(services(load_policy(files, LoadOptions{{"/a", "/b"}, "/none"})),
              (std::vector<std::string>{"ax", "by"}));
    EXPECT_EQ(services(load_policy(files, LoadOptions{{"/b", "/a"}, "/none"})),
              (std::vector<std::string>{"bx", "by"}));
    EXPECT_EQ(services(load_policy(files, LoadOptions{{"/a"}, "/none"})),
              (std::vector<std::string>{"ax"}));
}

TEST(PolicyFiles, CLocaleOrder) {
    MemoryFiles files;
    for (const char* name : {"b", "a_1", "a-1", "a.1", "a1", "_x", "-x", "0"})
        files.add_file(kEtc + "/" + name + ".policy", rule(std::string("s") + name));
    EXPECT_EQ(services(load_policy(files, LoadOptions{})),
              (std::vector<std::string>{"s-x", "s0", "s_x", "sa-1", "sa.1", "sa1", "sa_1", "sb"}));
}

TEST(PolicyFiles, OnlyPolicyFilesAndNoDotfiles) {
    MemoryFiles files;
    files.add_file(kEtc + "/30-user.policy", rule("user"));
    files.add_file(kEtc + "/.30-hidden.policy", rule("hidden"));
    files.add_file(kEtc + "/.Hidden Upper.policy", rule("hidden2"));  // skipped before the check
    files.add_file(kEtc + "/README", rule("readme"));
    files.add_file(kEtc + "/Notes.txt", rule("notes"));  // bad name, but not *.policy
    files.add_file(kEtc + "/30-user.policy.rpmnew", rule("rpmnew"));
    files.add_file(kEtc + "/30-user.policy~", rule("backup"));
    files.add_file(kEtc + "/policy", rule("bare"));
    files.add_file(kEtc + "/dir.policy/inner.policy", rule("inner"));
    EXPECT_EQ(services(load_policy(files, LoadOptions{})), (std::vector<std::string>{"user"}));
}

TEST(PolicyFiles, InvalidFileNameRejectsTheWholePolicy) {
    for (const char* name : {"Upper.policy", "a b.policy", "a+b.policy", "caf\xc3\xa9.policy",
                             "a~.policy"}) {
        MemoryFiles files;
        files.add_file(kEtc + "/10-ok.policy", rule("ok"));
        files.add_file(kEtc + "/" + name, rule("bad"));
        EXPECT_EQ(test::load_error(files, LoadOptions{}),
                  "invalid filename: " + kEtc + "/" + name);
        EXPECT_THROW(load_policy(files, LoadOptions{}), PolicyLoadError);
    }
}

TEST(PolicyFiles, MissingDirectoriesAreEmptyAndFilesAreNoDirectories) {
    MemoryFiles files;
    EXPECT_EQ(load_policy(files, LoadOptions{}).size(), 0u);
    files.add_file("/etc/qubes/policy.d", "a file");
    EXPECT_EQ(test::load_error(files, LoadOptions{}), "not a directory: " + kEtc);
}

TEST(PolicyFiles, SyntaxErrorAnywhereFailsTheLoad) {
    MemoryFiles files;
    files.add_file(kEtc + "/10-ok.policy", rule("ok"));
    files.add_file(kEtc + "/90-bad.policy", "# fine\nsvc * work\n");
    EXPECT_EQ(test::load_error(files, LoadOptions{}),
              kEtc + "/90-bad.policy:2: wrong number of fields");
    EXPECT_THROW(load_policy(files, LoadOptions{}), PolicySyntaxError);
}

TEST(PolicyFiles, IncludesAreRelativeToEachTopLevelFile) {
    MemoryFiles files;
    files.add_file(kRun + "/10-run.policy", "!include inc\n");
    files.add_file(kRun + "/inc", rule("run-inc"));
    files.add_file(kEtc + "/20-etc.policy", "!include inc\n");
    files.add_file(kEtc + "/inc", rule("etc-inc"));
    EXPECT_EQ(services(load_policy(files, LoadOptions{})),
              (std::vector<std::string>{"run-inc", "etc-inc"}));
}

TEST(PolicyFiles, MemoryFilesBasics) {
    MemoryFiles files;
    files.add_file("/x/y/z", "data");
    files.add_dir("/empty/dir");
    EXPECT_EQ(files.kind("/x/y/z"), PolicyFiles::Kind::File);
    EXPECT_EQ(files.kind("/x/y"), PolicyFiles::Kind::Directory);
    EXPECT_EQ(files.kind("/x/y/"), PolicyFiles::Kind::Directory);
    EXPECT_EQ(files.kind("/empty"), PolicyFiles::Kind::Directory);
    EXPECT_EQ(files.kind("/nope"), PolicyFiles::Kind::Missing);
    EXPECT_EQ(files.list("/x"), std::vector<std::string>{"y"});
    EXPECT_EQ(files.list("/empty/dir"), std::vector<std::string>{});
    EXPECT_THROW(files.list("/nope"), FileReadError);
    EXPECT_EQ(files.read("/x/./y/../y/z", 100), "data");
    EXPECT_THROW(files.read("/x/y/z", 3), FileReadError);
    EXPECT_THROW(files.read("/x/y", 100), FileReadError);
    EXPECT_EQ(files.resolve("/a/./b/../c/"), "/a/c");
}

// A real directory tree under the system temp directory, removed afterwards.
class PolicyDiskFiles : public ::testing::Test {
protected:
    fs::path root;
    DiskFiles disk;

    void SetUp() override {
        std::string pattern = (fs::temp_directory_path() / "aerie-policy-XXXXXX").string();
        ASSERT_NE(mkdtemp(pattern.data()), nullptr);
        root = fs::canonical(pattern);
        fs::create_directories(root / "run");
        fs::create_directories(root / "etc");
    }
    void TearDown() override {
        std::error_code ec;
        fs::permissions(root, fs::perms::owner_all, fs::perm_options::add, ec);
        fs::remove_all(root, ec);
    }
    void write(const fs::path& path, const std::string& content) {
        fs::create_directories(path.parent_path());
        std::ofstream(path, std::ios::binary) << content;
    }
    LoadOptions options() const {
        return LoadOptions{{(root / "run").string(), (root / "etc").string()},
                           (root / "compat").string()};
    }
};

TEST_F(PolicyDiskFiles, LoadsTheTree) {
    write(root / "etc/10-a.policy", rule("etc10") + "!include inc/more\n");
    write(root / "etc/inc/more", rule("more"));
    write(root / "etc/20-b.policy", rule("etc20"));
    write(root / "run/20-b.policy", rule("run20"));
    write(root / "etc/.hidden.policy", rule("hidden"));
    write(root / "etc/notes.txt", rule("notes"));
    write(root / "target", rule("linked"));
    fs::create_symlink(root / "target", root / "etc/30-link.policy");
    fs::create_symlink(root / "missing", root / "etc/40-dangling.policy");
    fs::create_directories(root / "etc/50-dir.policy");
    Policy p = load_policy(disk, options());
    EXPECT_EQ(services(p), (std::vector<std::string>{"etc10", "more", "run20", "linked"}));
    EXPECT_EQ(p.rules()[1].file, (root / "etc/inc/more").string());
    EXPECT_EQ(p.rules()[2].file, (root / "run/20-b.policy").string());
}

TEST_F(PolicyDiskFiles, ErrorsNameFileAndLine) {
    write(root / "etc/10-a.policy", "\n!include nothing\n");
    EXPECT_EQ(test::load_error(disk, options()),
              (root / "etc/10-a.policy").string() + ":2: not a file: " + (root / "etc/nothing").string());
    write(root / "etc/10-a.policy", "!include-dir inc\n");
    write(root / "etc/inc", "a file");
    EXPECT_EQ(test::load_error(disk, options()),
              (root / "etc/10-a.policy").string() + ":1: not a directory: " + (root / "etc/inc").string());
    write(root / "etc/10-a.policy", "!include ../etc/10-a.policy\n");
    EXPECT_EQ(test::load_error(disk, options()),
              (root / "etc/10-a.policy").string() + ":1: circular include: " +
                  (root / "etc/10-a.policy").string());
}

TEST_F(PolicyDiskFiles, InvalidFileName) {
    write(root / "etc/Bad.policy", rule("bad"));
    EXPECT_EQ(test::load_error(disk, options()), "invalid filename: " + (root / "etc/Bad.policy").string());
}

TEST_F(PolicyDiskFiles, CompatDirectory) {
    write(root / "etc/10-a.policy", "!compat-4.0\n");
    write(root / "compat/qubes.Svc+x", "work personal allow\n");
    write(root / "compat/qubes.Svc+x.swp", "garbage\n");
    Policy p = load_policy(disk, options());
    ASSERT_EQ(p.size(), 3u);
    EXPECT_EQ(p.rules()[0].argument, "+x");
    EXPECT_EQ(p.rules()[0].file, (root / "compat/qubes.Svc+x").string());
}

TEST_F(PolicyDiskFiles, UnreadableFile) {
    if (geteuid() == 0) GTEST_SKIP() << "root reads files whatever their mode";
    write(root / "etc/10-a.policy", rule("a"));
    fs::permissions(root / "etc/10-a.policy", fs::perms::none);
    std::string err = test::load_error(disk, options());
    EXPECT_NE(err.find((root / "etc/10-a.policy").string()), std::string::npos) << err;
}

TEST_F(PolicyDiskFiles, FileThatFailsToRead) {
    // /proc/self/mem is a regular file whose first page cannot be read, even by root.
    fs::create_symlink("/proc/self/mem", root / "etc/10-mem.policy");
    std::string path = (root / "etc/10-mem.policy").string();
    std::string err = test::load_error(disk, options());
    EXPECT_EQ(err.rfind("cannot read " + path + ": ", 0), 0u) << err;
    EXPECT_THROW(load_policy(disk, options()), PolicyLoadError);

    fs::rename(root / "etc/10-mem.policy", root / "etc/mem");
    write(root / "etc/20-inc.policy", "# first\n!include mem\n");
    err = test::load_error(disk, options());
    EXPECT_EQ(err.rfind((root / "etc/20-inc.policy").string() + ":2: cannot read ", 0), 0u) << err;
    EXPECT_NE(err.find("/mem: "), std::string::npos) << err;  // the resolved target
}

TEST_F(PolicyDiskFiles, DiskFilesBasics) {
    write(root / "etc/f", "12345");
    EXPECT_EQ(disk.kind((root / "etc/f").string()), PolicyFiles::Kind::File);
    EXPECT_EQ(disk.kind((root / "etc").string()), PolicyFiles::Kind::Directory);
    EXPECT_EQ(disk.kind((root / "nope").string()), PolicyFiles::Kind::Missing);
    EXPECT_EQ(disk.kind("/dev/null"), PolicyFiles::Kind::Other);
    EXPECT_EQ(disk.read((root / "etc/f").string(), 5), "12345");
    EXPECT_THROW(disk.read((root / "etc/f").string(), 4), FileReadError);
    EXPECT_THROW(disk.read((root / "nope").string(), 10), FileReadError);
    EXPECT_THROW(disk.list((root / "nope").string()), FileReadError);
    EXPECT_EQ(disk.list((root / "etc").string()), std::vector<std::string>{"f"});
    EXPECT_EQ(disk.resolve((root / "etc/../etc/./f").string()), (root / "etc/f").string());
}

}  // namespace
}  // namespace aerie::policy
