// The host template: a root of its own for etc/var/home/..., the host's /usr
// by a bind mount, none of the host's secrets.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "backend/backend.hpp"
#include "storage/host_template.hpp"

namespace fs = std::filesystem;
using namespace aerie;

namespace {

std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

// A small fake host: merged /usr, an /etc with secrets.
fs::path fake_host(const fs::path& dir) {
    fs::create_directories(dir / "usr" / "bin");
    fs::create_directories(dir / "usr" / "lib");
    fs::create_directories(dir / "usr" / "sbin");
    fs::create_symlink("usr/bin", dir / "bin");
    fs::create_symlink("usr/sbin", dir / "sbin");
    fs::create_symlink("usr/lib", dir / "lib");
    fs::create_directories(dir / "etc" / "ssh");
    fs::create_directories(dir / "etc" / "ssl" / "private");
    fs::create_directories(dir / "etc" / "qubes" / "policy.d");
    std::ofstream(dir / "etc" / "passwd")
        << "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000::/home/user:/bin/sh\n";
    std::ofstream(dir / "etc" / "group") << "root:x:0:\nshadow:x:42:\nuser:x:1000:\n";
    std::ofstream(dir / "etc" / "nsswitch.conf") << "passwd: files\n";
    std::ofstream(dir / "etc" / "shadow") << "root:$6$secret-hash:19000:0:99999:7:::\n";
    std::ofstream(dir / "etc" / "gshadow") << "root:$6$secret-hash::\n";
    std::ofstream(dir / "etc" / "ssh" / "ssh_host_ed25519_key") << "PRIVATE KEY\n";
    std::ofstream(dir / "etc" / "ssh" / "sshd_config") << "Port 22\n";
    std::ofstream(dir / "etc" / "ssl" / "private" / "server.key") << "PRIVATE KEY\n";
    std::ofstream(dir / "etc" / "qubes" / "policy.d" / "30-user.policy") << "* * @anyvm @anyvm deny\n";
    std::ofstream(dir / "etc" / "fstab") << "/dev/vda / ext4 defaults 0 1\n";
    std::ofstream(dir / "etc" / "hosts") << "127.0.0.1 localhost\n";
    fs::create_symlink("/usr/share/zoneinfo/UTC", dir / "etc" / "localtime");
    return dir;
}

class HostTemplate : public ::testing::Test {
protected:
    void SetUp() override {
        dir_ = fs::temp_directory_path() / ("aerie-tpl-test-" + std::to_string(::getpid()) + "-" +
                                            ::testing::UnitTest::GetInstance()->current_test_info()->name());
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override { fs::remove_all(dir_); }
    fs::path dir_;
};

}  // namespace

TEST_F(HostTemplate, LayoutOfItsOwnWithTheHostsUsrBoundLater) {
    storage::HostTemplateOptions o;
    o.host_root = fake_host(dir_ / "host");
    fs::path root = dir_ / "tpl";
    storage::create_host_template(root, o);
    EXPECT_TRUE(storage::is_host_template(root));
    for (const char* d :
         {"etc", "var", "home", "root", "tmp", "run", "dev", "proc", "sys", "usr", "rw", "opt"})
        EXPECT_TRUE(fs::is_directory(fs::symlink_status(root / d))) << d;
    EXPECT_TRUE(fs::is_empty(root / "usr"));  // a mount point, nothing copied
    EXPECT_EQ(fs::read_symlink(root / "bin"), "usr/bin");
    EXPECT_EQ(fs::read_symlink(root / "sbin"), "usr/sbin");
    EXPECT_EQ(fs::read_symlink(root / "lib"), "usr/lib");
    EXPECT_FALSE(fs::exists(fs::symlink_status(root / "lib64")));  // the fake host has none
    EXPECT_EQ(fs::read_symlink(root / "var" / "run"), "../run");
    struct stat st;
    ASSERT_EQ(::stat((root / "tmp").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 01777u);
    ASSERT_EQ(::stat((root / "root").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0700u);

    auto mounts = storage::host_template_mounts(o);
    ASSERT_EQ(mounts.size(), 1u);
    EXPECT_EQ(mounts[0].source, o.host_root / "usr");
    EXPECT_EQ(mounts[0].target, "/usr");
    EXPECT_TRUE(mounts[0].read_only);
}

TEST_F(HostTemplate, CopiesEtcWithoutTheHostsSecrets) {
    storage::HostTemplateOptions o;
    o.host_root = fake_host(dir_ / "host");
    fs::path root = dir_ / "tpl";
    storage::create_host_template(root, o);
    EXPECT_EQ(slurp(root / "etc" / "passwd"),
              "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000:user:/home/user:/bin/bash\n");
    EXPECT_EQ(slurp(root / "etc" / "nsswitch.conf"), "passwd: files\n");
    EXPECT_FALSE(fs::exists(root / "etc" / "ssh" / "sshd_config"));  // the host's services stay its own
    EXPECT_EQ(fs::read_symlink(root / "etc" / "localtime"), "/usr/share/zoneinfo/UTC");
    // Locked passwords instead of the host's hashes.
    EXPECT_EQ(slurp(root / "etc" / "shadow"), "root:*:19000:0:99999:7:::\nuser:*:19000:0:99999:7:::\n");
    EXPECT_EQ(slurp(root / "etc" / "gshadow").find("secret"), std::string::npos);
    EXPECT_FALSE(fs::exists(root / "etc" / "ssh" / "ssh_host_ed25519_key"));
    EXPECT_TRUE(fs::is_empty(root / "etc" / "ssl" / "private"));
    EXPECT_FALSE(fs::exists(root / "etc" / "qubes"));
    EXPECT_EQ(slurp(root / "etc" / "fstab").find("/dev/vda"), std::string::npos);
    struct stat st;
    ASSERT_EQ(::stat((root / "etc" / "shadow").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 0777, 0640u);
    EXPECT_EQ(st.st_gid, 42u);
}

TEST_F(HostTemplate, RefusesAnExistingFolderAndAHostWithoutMergedUsr) {
    storage::HostTemplateOptions o;
    o.host_root = fake_host(dir_ / "host");
    fs::create_directories(dir_ / "exists");
    EXPECT_THROW(storage::create_host_template(dir_ / "exists", o), std::runtime_error);

    fs::create_directories(dir_ / "old" / "bin");
    fs::create_directories(dir_ / "old" / "etc");
    o.host_root = dir_ / "old";
    try {
        storage::create_host_template(dir_ / "tpl2", o);
        FAIL() << "expected a refusal";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("merged /usr"), std::string::npos) << e.what();
    }
    EXPECT_FALSE(fs::exists(dir_ / "tpl2"));  // nothing half-built left
    for (const auto& e : fs::directory_iterator(dir_))
        EXPECT_EQ(e.path().filename().string().find(".building"), std::string::npos) << e.path();
}

TEST_F(HostTemplate, OwnerBaseHandsTheFilesToAQubesRange) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown)";
    storage::HostTemplateOptions o;
    o.host_root = fake_host(dir_ / "host");
    fs::path owner = dir_ / "host" / "etc" / "profile";  // listed: copied
    std::ofstream(owner) << "x";
    ASSERT_EQ(::chown(owner.c_str(), 1000, 1000), 0);
    o.owner_base = backend::qube_uid_base(7);
    fs::path root = dir_ / "tpl";
    storage::create_host_template(root, o);
    struct stat st;
    ASSERT_EQ(::lstat(root.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, backend::qube_uid_base(7));
    ASSERT_EQ(::lstat((root / "etc" / "profile").c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, backend::qube_uid_base(7) + 1000);
    EXPECT_EQ(st.st_gid, backend::qube_uid_base(7) + 1000);
    ASSERT_EQ(::lstat((root / "bin").c_str(), &st), 0);  // links too
    EXPECT_EQ(st.st_uid, backend::qube_uid_base(7));
}

// Only what is listed, and of that only what others may read: the host's
// 0600/0640 files, its services' configuration and its people's accounts
// never reach a qube.
TEST_F(HostTemplate, CopiesEtcByAllowlistAndOnlyWorldReadableFiles) {
    storage::HostTemplateOptions o;
    o.host_root = fake_host(dir_ / "host");
    fs::path etc = o.host_root / "etc";
    auto write = [&](const fs::path& rel, const std::string& text, fs::perms mode) {
        fs::create_directories((etc / rel).parent_path());
        std::ofstream(etc / rel) << text;
        fs::permissions(etc / rel, mode);
    };
    using P = fs::perms;
    const P rw_r_r = P::owner_read | P::owner_write | P::group_read | P::others_read;
    write("profile", "export PATH\n", rw_r_r);                                        // listed, readable
    write("default/locale", "LANG=C.UTF-8\n", rw_r_r);                                // listed, readable
    write("default/cacerts", "storepass=secret\n", P::owner_read | P::owner_write);   // not listed, 0600
    write("default/useradd", "SHELL=/bin/sh\n", rw_r_r);                              // not listed
    write("environment", "TOKEN=secret\n", P::owner_read | P::owner_write);           // listed, 0600
    write("login.defs", "UID_MIN 1000\nGID_MIN 1000\n", P::owner_read | P::owner_write | P::group_read);  // 0640
    write("postgresql/15/main/pg_hba.conf", "local all trust\n", rw_r_r);             // not listed
    write("pip.conf", "index-url = https://user:secret@example\n", rw_r_r);           // not listed
    write("ssl/certs/ca.pem", "CERT\n", rw_r_r);
    write("ld.so.conf.d/private.conf", "/opt/secret\n", P::owner_read | P::owner_write);  // 0600 in a listed folder
    fs::create_directories(etc / "profile.d" / "closed");
    write("profile.d/closed/x.sh", "secret\n", rw_r_r);
    fs::permissions(etc / "profile.d" / "closed", P::owner_all);  // a folder others may not enter
    std::ofstream(etc / "passwd", std::ios::app) << "alice:x:1001:1001:Alice,,,:/home/alice:/bin/bash\n"
                                                 << "postgres:x:101:104::/var/lib/postgresql:/bin/bash\n"
                                                 << "nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n";
    std::ofstream(etc / "group", std::ios::app) << "sudo:x:27:alice,postgres\nalice:x:1001:\nnogroup:x:65534:\n";

    fs::path root = dir_ / "tpl";
    storage::create_host_template(root, o);
    EXPECT_EQ(slurp(root / "etc" / "profile"), "export PATH\n");
    EXPECT_EQ(slurp(root / "etc" / "default" / "locale"), "LANG=C.UTF-8\n");
    EXPECT_EQ(slurp(root / "etc" / "ssl" / "certs" / "ca.pem"), "CERT\n");
    for (const char* gone : {"default/cacerts", "default/useradd", "environment", "login.defs", "postgresql",
                             "pip.conf", "ld.so.conf.d/private.conf", "profile.d/closed", "ssh/sshd_config"})
        EXPECT_FALSE(fs::exists(fs::symlink_status(root / "etc" / gone))) << gone;
    // Accounts: the host's system ones, not its people (alice), whose names
    // also leave the member lists; Qubes' user instead.
    std::string passwd = slurp(root / "etc" / "passwd");
    EXPECT_EQ(passwd.find("alice"), std::string::npos) << passwd;
    EXPECT_NE(passwd.find("postgres:x:101:"), std::string::npos) << passwd;
    EXPECT_NE(passwd.find("nobody:x:65534:"), std::string::npos) << passwd;
    EXPECT_NE(passwd.find("user:x:1000:1000:"), std::string::npos) << passwd;
    std::string group = slurp(root / "etc" / "group");
    EXPECT_EQ(group.find("alice"), std::string::npos) << group;
    EXPECT_NE(group.find("sudo:x:27:postgres\n"), std::string::npos) << group;
    EXPECT_EQ(slurp(root / "etc" / "shadow").find("alice"), std::string::npos);
    // The qube's own hosts file, not the host's.
    EXPECT_EQ(slurp(root / "etc" / "hosts").find("127.0.0.1\tlocalhost\n"), 0u);
    EXPECT_EQ(slurp(root / "etc" / "hostname"), "localhost\n");
}
