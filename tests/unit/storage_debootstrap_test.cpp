// The debootstrap template builder, with a fake debootstrap first in PATH: the
// mirror found in apt's sources, the command line, what is done to the root
// afterwards, failures. (A real run takes minutes: not part of the tests.)
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "storage/debootstrap.hpp"
#include "storage/pool.hpp"
#include "storage_test_support.hpp"

namespace aerie::storage {
namespace {

using namespace test;

const std::string kTpl = "0b1e5a1c-0000-4000-8000-0000000000d1";
const std::string kApp = "0b1e5a1c-0000-4000-8000-0000000000d2";

// Apt sources as Debian 12 writes them, with things to skip around the right one.
fs::path fake_apt(const fs::path& dir) {
    fs::create_directories(dir / "sources.list.d");
    put(dir / "sources.list", "# deb cdrom:[Debian GNU/Linux 12]/ bookworm main\n");
    put(dir / "sources.list.d" / "a-security.sources",
        "Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\nComponents: "
        "main\n");
    put(dir / "sources.list.d" / "b-off.sources",
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n");
    put(dir / "sources.list.d" / "c-debian.sources",
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\n\n"
        "Types: deb deb-src\n# http://snapshot.debian.org/archive/debian/20250520T000000Z\n"
        "URIs: http://deb.debian.org/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n"
        "Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n");
    put(dir / "sources.list.d" / "d.list.disabled-by-farm",
        "deb http://wrong.example/debian bookworm main\n");
    return dir;
}

class Debootstrap : public ::testing::Test {
protected:
    Debootstrap() : tmp_("debootstrap") {
        fs::create_directories(tmp_.path() / "bin");
        put(tmp_.path() / "bin" / "debootstrap", R"(#!/bin/sh
printf '%s\n' "$@" > "$FAKE_DEBOOTSTRAP_ARGS"
echo "I: fake debootstrap"
if [ -n "$FAKE_DEBOOTSTRAP_FAIL" ]; then echo "E: no network"; exit 3; fi
eval target=\${$(($# - 1))}
eval mirror=\${$#}
mkdir -p "$target/etc/apt" "$target/usr/bin" "$target/var/cache/apt/archives" "$target/proc"
ln -s usr/bin "$target/bin"
printf 'root:x:0:0:root:/root:/bin/bash\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\n' > "$target/etc/passwd"
printf 'root:x:0:\nshadow:x:42:\n' > "$target/etc/group"
printf 'root:*:19000:0:99999:7:::\n' > "$target/etc/shadow"
printf 'root:*::\n' > "$target/etc/gshadow"
chmod 640 "$target/etc/shadow" "$target/etc/gshadow"
echo the-host > "$target/etc/hostname"
echo 'nameserver 10.0.0.1' > "$target/etc/resolv.conf"
echo '# UNCONFIGURED FSTAB FOR BASE SYSTEM' > "$target/etc/fstab"
echo "deb $mirror bookworm main" > "$target/etc/apt/sources.list"
touch "$target/var/cache/apt/archives/libc6_2.36_amd64.deb" "$target/var/cache/apt/archives/lock"
echo '#!/bin/sh' > "$target/usr/bin/sh"
)");
        fs::permissions(tmp_.path() / "bin" / "debootstrap", fs::perms(0755));
        const char* path = ::getenv("PATH");
        old_path_ = path ? path : "";
        ::setenv("PATH", ((tmp_.path() / "bin").string() + ":" + old_path_).c_str(), 1);
        ::setenv("FAKE_DEBOOTSTRAP_ARGS", (tmp_.path() / "args").c_str(), 1);
        ::unsetenv("FAKE_DEBOOTSTRAP_FAIL");
    }
    ~Debootstrap() override {
        ::setenv("PATH", old_path_.c_str(), 1);
        ::unsetenv("FAKE_DEBOOTSTRAP_ARGS");
        ::unsetenv("FAKE_DEBOOTSTRAP_FAIL");
    }

    fs::path vm(const std::string& uuid) const { return tmp_.path() / "pool" / "vm" / uuid; }

    TempDir tmp_;
    std::string old_path_;
};

TEST_F(Debootstrap, MirrorFromTheHostsAptSources) {
    EXPECT_EQ(host_debian_mirror(fake_apt(tmp_.path() / "apt"), "bookworm"), "http://deb.debian.org/debian");
    EXPECT_EQ(host_debian_mirror(tmp_.path() / "apt", "bookworm-security"),
              "http://deb.debian.org/debian-security");
    fs::create_directories(tmp_.path() / "apt2");
    put(tmp_.path() / "apt2" / "sources.list",
        "deb-src http://src.example/debian bookworm main\n"
        "deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://ftp.example/debian bookworm main # "
        "ok\n");
    EXPECT_EQ(host_debian_mirror(tmp_.path() / "apt2", "bookworm"), "http://ftp.example/debian");
    EXPECT_THROW(host_debian_mirror(tmp_.path() / "apt2", "trixie"), StorageError);
    EXPECT_THROW(host_debian_mirror(tmp_.path() / "none", "bookworm"), StorageError);
}

TEST_F(Debootstrap, CommandLine) {
    DebootstrapOptions o;
    EXPECT_EQ(debootstrap_argv("/p/root", o, "http://m/debian"),
              (std::vector<std::string>{"debootstrap", "--variant=minbase", "bookworm", "/p/root",
                                        "http://m/debian"}));
    o.include = {"sudo", "less"};
    o.suite = "trixie";
    EXPECT_EQ(debootstrap_argv("/p/root", o, "http://m/debian"),
              (std::vector<std::string>{"debootstrap", "--variant=minbase", "--include=sudo,less", "trixie",
                                        "/p/root", "http://m/debian"}));
}

TEST_F(Debootstrap, FillsATemplateRootAndPreparesItForQubes) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (a qube's mounts)";
    FilePool pool(tmp_.path() / "pool");
    pool.create(kTpl, "TemplateVM");
    auto before = pool.root_changed(kTpl);
    DebootstrapOptions o;
    o.apt_dir = fake_apt(tmp_.path() / "apt");
    o.log = tmp_.path() / "debootstrap.log";
    pool.make_debootstrap_root(kTpl, o);

    // debootstrap --variant=minbase bookworm <a folder next to root> <the host's mirror>
    std::string args = slurp(tmp_.path() / "args");
    // (Built inside the mounted root volume, then moved up to its top.)
    pool.hold(kTpl, "root");
    fs::path building = vm(kTpl) / "root" / (".aerie-new-root.debootstrap-" + std::to_string(::getpid()));
    EXPECT_EQ(args, "--variant=minbase\nbookworm\n" + building.string() + "\nhttp://deb.debian.org/debian\n");
    EXPECT_FALSE(fs::exists(building));
    EXPECT_NE(slurp(o.log).find("I: fake debootstrap"), std::string::npos);

    fs::path root = vm(kTpl) / "root";
    EXPECT_EQ(slurp(root / "etc" / "apt" / "sources.list"),
              "deb http://deb.debian.org/debian bookworm main\n");
    // The account Qubes' default_user names.
    EXPECT_NE(slurp(root / "etc" / "passwd").find("\nuser:x:1000:1000:user:/home/user:/bin/bash\n"),
              std::string::npos);
    EXPECT_NE(slurp(root / "etc" / "group").find("\nuser:x:1000:\n"), std::string::npos);
    EXPECT_NE(slurp(root / "etc" / "shadow").find("\nuser:!:"), std::string::npos);
    EXPECT_NE(slurp(root / "etc" / "gshadow").find("\nuser:!::\n"), std::string::npos);
    EXPECT_EQ(lstat_of(root / "etc" / "shadow").st_mode & 0777, 0640u);
    // Nothing of the host's.
    EXPECT_EQ(slurp(root / "etc" / "hostname"), "localhost\n");
    EXPECT_EQ(slurp(root / "etc" / "resolv.conf"), "");
    EXPECT_EQ(slurp(root / "etc" / "fstab"), "# a qube's mounts are made by Aerie\n");
    EXPECT_TRUE(fs::exists(root / "etc" / "machine-id"));
    EXPECT_TRUE(fs::exists(root / "etc" / "hosts"));
    // Mount points: private at /rw, /home from it, the backend's.
    for (const char* d : {"rw", "home", "proc", "sys", "dev", "run", "usr", "root"})
        EXPECT_TRUE(fs::is_directory(root / d)) << d;
    EXPECT_EQ(lstat_of(root / "tmp").st_mode & 07777, 01777u);
    EXPECT_EQ(fs::read_symlink(root / "bin"), "usr/bin");
    EXPECT_FALSE(fs::exists(root / "var" / "cache" / "apt" / "archives" / "libc6_2.36_amd64.deb"));
    EXPECT_TRUE(fs::exists(root / "var" / "cache" / "apt" / "archives" / "lock"));
    EXPECT_NE(slurp(root / "etc" / "aerie-debootstrap-template").find("mirror=http://deb.debian.org/debian"),
              std::string::npos);
    EXPECT_GT(pool.root_changed(kTpl), before);
    EXPECT_FALSE(is_host_template(root));
    pool.release(kTpl, "root");

    // Its qubes start on it.
    pool.create(kApp, "AppVM");
    StartedVolumes v = pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, 0x10050000);
    EXPECT_FALSE(v.host_usr);
    EXPECT_TRUE(fs::exists(v.root / "etc" / "aerie-debootstrap-template"));
    pool.stop(kApp);

    // Only an empty root is filled.
    EXPECT_THROW(pool.make_debootstrap_root(kTpl, o), StorageError);
}

TEST_F(Debootstrap, FailureLeavesTheRootEmpty) {
    FilePool pool(tmp_.path() / "pool");
    pool.create(kTpl, "TemplateVM");
    ::setenv("FAKE_DEBOOTSTRAP_FAIL", "1", 1);
    DebootstrapOptions o;
    o.mirror = "http://mirror.example/debian";
    o.log = tmp_.path() / "debootstrap.log";
    try {
        pool.make_debootstrap_root(kTpl, o);
        FAIL() << "no error";
    } catch (const StorageError& e) {
        EXPECT_NE(std::string(e.what()).find("exit 3"), std::string::npos) << e.what();
        EXPECT_NE(std::string(e.what()).find(o.log.string()), std::string::npos) << e.what();
    }
    EXPECT_NE(slurp(o.log).find("E: no network"), std::string::npos);
    EXPECT_TRUE(fs::is_directory(vm(kTpl) / "root"));
    EXPECT_TRUE(fs::is_empty(vm(kTpl) / "root"));
    for (const auto& e : fs::directory_iterator(vm(kTpl)))
        EXPECT_EQ(e.path().filename().string().find(".debootstrap-"), std::string::npos) << e.path();

    // A debootstrap that is not there.
    ::unsetenv("FAKE_DEBOOTSTRAP_FAIL");
    o.program = "aerie-no-such-debootstrap";
    EXPECT_THROW(pool.make_debootstrap_root(kTpl, o), StorageError);
    EXPECT_TRUE(fs::is_empty(vm(kTpl) / "root"));
}

}  // namespace
}  // namespace aerie::storage
