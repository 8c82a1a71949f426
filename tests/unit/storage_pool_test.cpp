// The file pool: volumes per class, copy-on-write views with real overlays,
// id-mapped ownership, revisions, clone, remove, Info values, timings.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <thread>

#include "storage/image.hpp"
#include "storage/pool.hpp"
#include "storage_test_support.hpp"

namespace aerie::storage {
namespace {

using namespace test;

constexpr uid_t kOwnerA = 0x10030000;  // backend::qube_uid_base(3)
constexpr uid_t kOwnerB = 0x10040000;
constexpr uid_t kOwnerT = 0x10010000;

const std::string kTpl = "0b1e5a1c-0000-4000-8000-000000000001";
const std::string kApp = "0b1e5a1c-0000-4000-8000-000000000002";
const std::string kDvm = "0b1e5a1c-0000-4000-8000-000000000003";
const std::string kDisp = "0b1e5a1c-0000-4000-8000-000000000004";
const std::string kStd = "0b1e5a1c-0000-4000-8000-000000000005";
const std::string kApp2 = "0b1e5a1c-0000-4000-8000-000000000006";

class Pool : public ::testing::Test {
protected:
    Pool() : tmp_("storage") {}
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root (mounts, chown)";
    }

    fs::path vm(const std::string& uuid) const { return tmp_.path() / "pool" / "vm" / uuid; }
    fs::path run(const std::string& uuid) const { return tmp_.path() / "pool" / "run" / uuid; }

    // A halted qube's volume, mounted while this lives (volumes are
    // mounted only while something holds them).
    struct Held {
        Held(const FilePool& p, std::string u, std::string v) : pool(p), uuid(std::move(u)), volume(std::move(v)) {
            pool.hold(uuid, volume);
        }
        ~Held() { pool.release(uuid, volume); }
        const FilePool& pool;
        std::string uuid, volume;
    };
    std::string read_halted(const FilePool& pool, const std::string& uuid, const std::string& volume,
                            const fs::path& rel) {
        Held h(pool, uuid, volume);
        return slurp(vm(uuid) / volume / rel);
    }
    bool exists_halted(const FilePool& pool, const std::string& uuid, const std::string& volume, const fs::path& rel) {
        Held h(pool, uuid, volume);
        return fs::exists(vm(uuid) / volume / rel);
    }
    // A file of a revision (an image file): the image mounted aside for the read.
    std::string read_revision(const std::string& uuid, const std::string& volume, const std::string& rev,
                              const fs::path& rel) {
        fs::path view = tmp_.path() / "revision-view";
        fs::create_directories(view);
        mount_image(vm(uuid) / "revisions" / volume / rev, view, false);
        std::string text = slurp(view / rel);
        unmount_volume(view);
        return text;
    }

    // A TemplateVM with a small root of its own making.
    void make_template(FilePool& pool, const std::string& uuid = kTpl) {
        pool.create(uuid, "TemplateVM");
        Held h(pool, uuid, "root");
        fs::path root = vm(uuid) / "root";
        for (const char* d : {"etc", "usr/bin", "var/lib", "tmp", "proc", "sys", "dev", "run", "rw", "home"})
            fs::create_directories(root / d);
        put(root / "etc" / "hostname", "template\n");
        put(root / "usr" / "bin" / "tool", "#!/bin/sh\n");
        fs::permissions(root / "usr" / "bin" / "tool", fs::perms(0755));
    }

    void expect_no_mounts() {
        EXPECT_TRUE(mounts_under(tmp_.path()).empty()) << "mounts left under " << tmp_.path();
    }

    TempDir tmp_;
};

bool is_mount_point(const fs::path& p) {
    auto m = mounts_under(p);
    return std::find(m.begin(), m.end(), p) != m.end();
}

TEST_F(Pool, VolumeSetOfEveryClass) {
    FilePool pool(tmp_.path() / "pool");
    EXPECT_EQ((lstat_of(tmp_.path() / "pool").st_mode & 0777), 0700u);
    pool.create(kTpl, "TemplateVM");
    pool.create(kStd, "StandaloneVM");
    pool.create(kApp, "AppVM");
    pool.create(kDisp, "DispVM");
    pool.create("0b1e5a1c-0000-4000-8000-0000000000ff", "RemoteVM");
    for (const auto& u : {kTpl, kStd}) {
        EXPECT_EQ(image_size(vm(u) / "root.img"), kRootImgSize);
        EXPECT_LT(image_allocated(vm(u) / "root.img"), 64u << 20);  // sparse
        EXPECT_TRUE(fs::is_empty(vm(u) / "root"));  // not mounted
        EXPECT_TRUE(exists_halted(pool, u, "private", "home"));
        EXPECT_EQ(image_size(vm(u) / "private.img"), kPrivateImgSize);
        EXPECT_EQ(image_size(vm(u) / "volatile.img"), kVolatileImgSize);
    }
    EXPECT_FALSE(fs::exists(vm(kApp) / "root.img"));
    EXPECT_TRUE(exists_halted(pool, kApp, "private", "home"));
    EXPECT_TRUE(fs::is_regular_file(vm(kApp) / "volatile.img"));
    EXPECT_FALSE(fs::exists(vm(kDisp) / "root.img"));
    EXPECT_FALSE(fs::exists(vm(kDisp) / "private.img"));
    EXPECT_TRUE(fs::is_regular_file(vm(kDisp) / "volatile.img"));
    expect_no_mounts();
    EXPECT_FALSE(fs::exists(vm("0b1e5a1c-0000-4000-8000-0000000000ff")));

    std::vector<std::string> three = {"root", "private", "volatile"};
    for (const char* k : {"TemplateVM", "StandaloneVM", "AppVM", "DispVM"})
        EXPECT_EQ(pool.volumes(k), three) << k;
    EXPECT_TRUE(pool.volumes("RemoteVM").empty());
    EXPECT_TRUE(pool.volumes("AdminVM").empty());

    EXPECT_THROW(pool.create(kTpl, "TemplateVM"), StorageError);
    EXPECT_THROW(pool.create("../etc", "AppVM"), StorageError);
    EXPECT_THROW(pool.create("a/b", "AppVM"), StorageError);
    EXPECT_THROW(pool.create("", "AppVM"), StorageError);
    EXPECT_THROW(pool.create(kApp2, "NoSuchVM"), StorageError);
    EXPECT_THROW(pool.volumes("NoSuchVM"), StorageError);
}

TEST_F(Pool, AppVmWritesStayInItsViewAndVanishAtStop) {
    FilePool pool(tmp_.path() / "pool");
    make_template(pool);
    pool.create(kApp, "AppVM");
    StartedVolumes v = pool.start(kApp, "AppVM", std::optional<std::string>(kTpl), kOwnerA);
    EXPECT_EQ(v.root, run(kApp) / "root");
    EXPECT_TRUE(is_mount_point(v.root));
    EXPECT_FALSE(v.host_usr);
    EXPECT_TRUE(pool.is_started(kApp));
    EXPECT_EQ(slurp(v.root / "etc" / "hostname"), "template\n");

    // The qube's root user (host uid kOwnerA) changes its root and its private volume.
    ASSERT_TRUE(write_as(kOwnerA, v.root / "etc" / "hostname", "changed\n"));
    ASSERT_TRUE(write_as(kOwnerA, v.root / "etc" / "new-file", "new\n"));
    ASSERT_EQ(as_user(kOwnerA, v.root / "usr" / "bin", [] { return ::unlink("tool") == 0; }), 0);
    ASSERT_TRUE(write_as(kOwnerA, v.private_dir / "home" / "note", "kept\n"));
    EXPECT_EQ(slurp(v.root / "etc" / "hostname"), "changed\n");
    EXPECT_FALSE(fs::exists(v.root / "usr" / "bin" / "tool"));
    // The template's root is untouched.
    EXPECT_EQ(slurp(vm(kTpl) / "root" / "etc" / "hostname"), "template\n");
    EXPECT_FALSE(fs::exists(vm(kTpl) / "root" / "etc" / "new-file"));
    EXPECT_TRUE(fs::exists(vm(kTpl) / "root" / "usr" / "bin" / "tool"));
    EXPECT_FALSE(fs::is_empty(vm(kApp) / "volatile"));

    pool.stop(kApp);
    EXPECT_FALSE(pool.is_started(kApp));
    EXPECT_FALSE(fs::exists(run(kApp) / "state"));
    EXPECT_TRUE(fs::is_empty(vm(kApp) / "volatile"));
    expect_no_mounts();
    EXPECT_EQ(read_halted(pool, kApp, "private", "home/note"), "kept\n");

    v = pool.start(kApp, "AppVM", std::optional<std::string>(kTpl), kOwnerA);
    EXPECT_EQ(slurp(v.root / "etc" / "hostname"), "template\n");
    EXPECT_FALSE(fs::exists(v.root / "etc" / "new-file"));
    EXPECT_TRUE(fs::exists(v.root / "usr" / "bin" / "tool"));
    EXPECT_EQ(slurp(v.private_dir / "home" / "note"), "kept\n");
    EXPECT_THROW(pool.start(kApp, "AppVM", std::optional<std::string>(kTpl), kOwnerA), StorageError);
    pool.stop(kApp);
    pool.stop(kApp);  // again: nothing to do
    expect_no_mounts();
}

TEST_F(Pool, OwnershipThroughIdMappedMounts) {
    FilePool pool(tmp_.path() / "pool");
    if (!pool.idmapped_mounts()) GTEST_SKIP() << "no id-mapped mounts on this kernel or filesystem";
    make_template(pool);
    pool.create(kApp, "AppVM");
    StartedVolumes v = pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerA);
    // The qube sees its root and private as its own: uid u on disk is owner + u.
    EXPECT_EQ(lstat_of(v.root).st_uid, kOwnerA);
    EXPECT_EQ(lstat_of(v.root / "etc" / "hostname").st_uid, kOwnerA);
    EXPECT_EQ(lstat_of(v.private_dir).st_uid, kOwnerA);
    EXPECT_EQ(lstat_of(v.private_dir / "home").st_uid, kOwnerA);
    EXPECT_FALSE(write_as(kOwnerA + 1000, v.private_dir / "home" / "by-user", "x"))
        << "home/ belongs to the qube's root, not to its user";
    ASSERT_EQ(as_user(kOwnerA, v.private_dir / "home", [] { return ::mkdir("user", 0700) == 0; }), 0);
    // What the qube's root does with CAP_CHOWN in its namespace; here host root does it.
    ASSERT_EQ(::chown((v.private_dir / "home" / "user").c_str(), kOwnerA + 1000, kOwnerA + 1000), 0);
    ASSERT_TRUE(write_as(kOwnerA + 1000, v.private_dir / "home" / "user" / "f", "x"));
    // Another qube's ids cannot write there.
    EXPECT_FALSE(write_as(kOwnerB, v.private_dir / "home" / "other", "x"));
    pool.stop(kApp);
    {
        // On disk: the ids the qube sees, nothing chowned into its range.
        Held p(pool, kApp, "private"), r(pool, kTpl, "root");
        EXPECT_EQ(lstat_of(vm(kApp) / "private").st_uid, 0u);
        EXPECT_EQ(lstat_of(vm(kApp) / "private" / "home" / "user").st_uid, 1000u);
        EXPECT_EQ(lstat_of(vm(kApp) / "private" / "home" / "user" / "f").st_uid, 1000u);
        EXPECT_EQ(lstat_of(vm(kTpl) / "root" / "etc" / "hostname").st_uid, 0u);
    }

    // The same volume in another qube's range: no chown either.
    pool.clone(kApp, kApp2, "AppVM");
    v = pool.start(kApp2, "AppVM", std::vector<std::string>{kTpl}, kOwnerB);
    EXPECT_EQ(lstat_of(v.private_dir / "home" / "user" / "f").st_uid, kOwnerB + 1000);
    EXPECT_EQ(lstat_of(v.root / "etc").st_uid, kOwnerB);
    pool.stop(kApp2);
    expect_no_mounts();
}

TEST_F(Pool, OwnershipByChownWithoutIdMappedMounts) {
    PoolOptions o;
    o.idmapped_mounts = false;
    FilePool pool(tmp_.path() / "pool", o);
    make_template(pool);
    pool.create(kApp, "AppVM");
    {
        Held h(pool, kApp, "private");
        fs::create_directories(vm(kApp) / "private" / "home" / "user" / "deep");
        ::chown((vm(kApp) / "private" / "home" / "user").c_str(), 1000, 1000);
    }
    StartedVolumes v = pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerA);
    EXPECT_EQ(v.private_dir, vm(kApp) / "private");
    EXPECT_EQ(lstat_of(v.private_dir).st_uid, kOwnerA);
    EXPECT_EQ(lstat_of(v.private_dir / "home").st_uid, kOwnerA);
    EXPECT_EQ(lstat_of(v.private_dir / "home" / "user").st_uid, kOwnerA + 1000);
    EXPECT_EQ(lstat_of(vm(kApp) / "volatile" / "root-upper").st_uid, kOwnerA);
    ASSERT_TRUE(write_as(kOwnerA, v.private_dir / "home" / "f", "x"));
    auto before = lstat_of(vm(kApp) / "private" / "home" / "user" / "deep").st_ctim;
    pool.stop(kApp);
    // Right already: the next start walks nothing (ctime of a deep folder unchanged).
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerA);
    auto after = lstat_of(vm(kApp) / "private" / "home" / "user" / "deep").st_ctim;
    EXPECT_EQ(before.tv_sec, after.tv_sec);
    EXPECT_EQ(before.tv_nsec, after.tv_nsec);
    pool.stop(kApp);
    // Another owner: moved over once.
    pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerB);
    EXPECT_EQ(lstat_of(vm(kApp) / "private" / "home" / "user").st_uid, kOwnerB + 1000);
    EXPECT_EQ(lstat_of(vm(kApp) / "private" / "home" / "f").st_uid, kOwnerB);
    pool.stop(kApp);
    expect_no_mounts();
}

TEST_F(Pool, TemplateRunsOnItsOwnRootAndMarksItChanged) {
    FilePool pool(tmp_.path() / "pool");
    make_template(pool);
    pool.create(kApp, "AppVM");
    auto created = pool.root_changed(kTpl);
    EXPECT_GT(created, fs::file_time_type::min());
    EXPECT_EQ(pool.root_changed(kApp), fs::file_time_type::min());

    StartedVolumes app = pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerA);
    EXPECT_FALSE(pool.root_outdated(kApp));
    StartedVolumes t = pool.start(kTpl, "TemplateVM", std::vector<std::string>{}, kOwnerT);
    EXPECT_TRUE(is_mount_point(t.root));
    EXPECT_EQ(lstat_of(t.root / "etc").st_uid, kOwnerT);
    ASSERT_TRUE(write_as(kOwnerT, t.root / "etc" / "installed", "pkg\n"));
    EXPECT_EQ(slurp(vm(kTpl) / "root" / "etc" / "installed"), "pkg\n");
    EXPECT_EQ(lstat_of(vm(kTpl) / "root" / "etc" / "installed").st_uid, 0u);  // canonical on disk
    pool.stop(kTpl);
    EXPECT_GT(pool.root_changed(kTpl), created);
    // Its AppVM still runs on it: still mounted, one superblock.
    EXPECT_TRUE(is_mount_point(vm(kTpl) / "root"));
    // The AppVM started before: its view is outdated now.
    EXPECT_TRUE(pool.root_outdated(kApp));
    EXPECT_TRUE(pool.info(kApp, "AppVM", "root", std::vector<std::string>{kTpl}).is_outdated);
    (void)app;
    pool.stop(kApp);
    EXPECT_FALSE(pool.root_outdated(kApp));
    app = pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerA);
    EXPECT_EQ(slurp(app.root / "etc" / "installed"), "pkg\n");
    EXPECT_FALSE(pool.root_outdated(kApp));
    pool.stop(kApp);
    expect_no_mounts();
}

TEST_F(Pool, DispVmPrivateIsAFreshViewOfItsTemplates) {
    FilePool pool(tmp_.path() / "pool");
    make_template(pool);
    pool.create(kDvm, "AppVM");
    {
        Held h(pool, kDvm, "private");
        put(vm(kDvm) / "private" / "home" / "settings", "from the dvm template\n");
    }
    pool.create(kDisp, "DispVM");
    EXPECT_THROW(pool.start(kDisp, "DispVM", std::optional<std::string>(kDvm), kOwnerA), StorageError);
    EXPECT_THROW(pool.start(kDisp, "DispVM", std::vector<std::string>{kDvm}, kOwnerA), StorageError);
    for (int round = 0; round < 2; ++round) {
        StartedVolumes v = pool.start(kDisp, "DispVM", std::vector<std::string>{kDvm, kTpl}, kOwnerA);
        EXPECT_EQ(v.private_dir, run(kDisp) / "private");
        EXPECT_EQ(slurp(v.private_dir / "home" / "settings"), "from the dvm template\n");
        EXPECT_EQ(slurp(v.root / "etc" / "hostname"), "template\n");
        ASSERT_TRUE(write_as(kOwnerA, v.private_dir / "home" / "settings", "changed\n"));
        ASSERT_TRUE(write_as(kOwnerA, v.private_dir / "home" / "download", "x\n"));
        EXPECT_EQ(slurp(vm(kDvm) / "private" / "home" / "settings"), "from the dvm template\n");
        EXPECT_FALSE(fs::exists(vm(kDvm) / "private" / "home" / "download"));
        pool.stop(kDisp);
        EXPECT_TRUE(fs::is_empty(vm(kDisp) / "volatile"));  // unmounted; a fresh image for the next start
        EXPECT_LT(image_allocated(vm(kDisp) / "volatile.img"), 64u << 20);
        EXPECT_FALSE(fs::exists(vm(kDisp) / "revisions"));
        expect_no_mounts();
    }
}

TEST_F(Pool, RevisionsKeptAtStopOldestDroppedAndReverted) {
    FilePool pool(tmp_.path() / "pool");
    make_template(pool);
    pool.create(kApp, "AppVM");
    EXPECT_EQ(pool.revisions_to_keep(kApp, "private"), 1);  // Qubes' pool default
    auto session = [&](const std::string& text) {
        StartedVolumes v = pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerA);
        ASSERT_TRUE(write_as(kOwnerA, v.private_dir / "home" / "state", text, true));
        pool.stop(kApp);
    };
    session("1");
    EXPECT_TRUE(pool.revisions(kApp, "private").empty());  // the saved state is the volume itself
    session("2");
    auto revs = pool.revisions(kApp, "private");
    ASSERT_EQ(revs.size(), 1u);
    EXPECT_EQ(read_revision(kApp, "private", revs[0], "home/state"), "1");
    session("3");
    revs = pool.revisions(kApp, "private");
    ASSERT_EQ(revs.size(), 1u);  // one kept: the older one went
    EXPECT_EQ(read_revision(kApp, "private", revs[0], "home/state"), "2");

    pool.set_revisions_to_keep(kApp, "private", 3);
    EXPECT_EQ(pool.revisions_to_keep(kApp, "private"), 3);
    EXPECT_EQ(slurp(vm(kApp) / "private.revisions_to_keep"), "3\n");
    for (const char* s : {"4", "5", "6"}) session(s);
    revs = pool.revisions(kApp, "private");
    ASSERT_EQ(revs.size(), 3u);
    // Qubes' names: UTC times to the second with a Z, oldest first.
    for (const auto& r : revs) {
        EXPECT_EQ(r.size(), 20u);
        EXPECT_EQ(r[10], 'T');
        EXPECT_EQ(r.back(), 'Z');
    }
    EXPECT_TRUE(std::is_sorted(revs.begin(), revs.end()));
    std::vector<std::string> states;
    for (const auto& r : revs)
        states.push_back(read_revision(kApp, "private", r, "home/state"));
    EXPECT_EQ(states, (std::vector<std::string>{"3", "4", "5"}));
    EXPECT_EQ(read_halted(pool, kApp, "private", "home/state"), "6");

    // Revert to the oldest: the current state becomes a revision.
    pool.revert(kApp, "private", revs[0]);
    EXPECT_EQ(read_halted(pool, kApp, "private", "home/state"), "3");
    auto after = pool.revisions(kApp, "private");
    ASSERT_EQ(after.size(), 3u);
    std::vector<std::string> after_states;
    for (const auto& r : after)
        after_states.push_back(read_revision(kApp, "private", r, "home/state"));
    EXPECT_EQ(after_states, (std::vector<std::string>{"4", "5", "6"}));
    EXPECT_THROW(pool.revert(kApp, "private", "2001-01-01T00:00:00Z"), StorageError);
    EXPECT_THROW(pool.revert(kApp, "private", "../../private"), StorageError);
    // Empty: the newest.
    pool.revert(kApp, "private", "");
    EXPECT_EQ(read_halted(pool, kApp, "private", "home/state"), "6");

    StartedVolumes v = pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerA);
    EXPECT_EQ(slurp(v.private_dir / "home" / "state"), "6");
    EXPECT_THROW(pool.revert(kApp, "private", pool.revisions(kApp, "private").front()), StorageError);
    pool.stop(kApp);

    // None kept: all go at the next stop.
    pool.set_revisions_to_keep(kApp, "private", 0);
    session("7");
    EXPECT_TRUE(pool.revisions(kApp, "private").empty());
    EXPECT_FALSE(fs::exists(vm(kApp) / "revisions" / "private"));
    EXPECT_THROW(pool.set_revisions_to_keep(kApp, "private", -2), StorageError);
    pool.set_revisions_to_keep(kApp, "private", -1);
    EXPECT_EQ(pool.revisions_to_keep(kApp, "private"), -1);
    EXPECT_THROW(pool.set_revisions_to_keep(kApp, "kernel", 1), StorageError);
    expect_no_mounts();
}

TEST_F(Pool, TemplateRootKeepsRevisionsToo) {
    FilePool pool(tmp_.path() / "pool");
    make_template(pool);
    for (const char* text : {"a\n", "b\n"}) {
        StartedVolumes t = pool.start(kTpl, "TemplateVM", std::vector<std::string>{}, kOwnerT);
        ASSERT_TRUE(write_as(kOwnerT, t.root / "etc" / "hostname", text, true));
        pool.stop(kTpl);
    }
    auto revs = pool.revisions(kTpl, "root");
    ASSERT_EQ(revs.size(), 1u);
    EXPECT_EQ(read_revision(kTpl, "root", revs[0], "etc/hostname"), "a\n");
    auto before = pool.root_changed(kTpl);
    pool.revert(kTpl, "root", revs[0]);
    EXPECT_EQ(read_halted(pool, kTpl, "root", "etc/hostname"), "a\n");
    EXPECT_GT(pool.root_changed(kTpl), before);
    // Not while a qube runs on it.
    pool.create(kApp, "AppVM");
    pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerA);
    EXPECT_THROW(pool.revert(kTpl, "root", pool.revisions(kTpl, "root").back()), StorageError);
    pool.stop(kApp);
    expect_no_mounts();
}

TEST_F(Pool, CloneCopiesEverythingOfTheVolumes) {
    FilePool pool(tmp_.path() / "pool");
    make_template(pool);
    Held tr(pool, kTpl, "root"), tp(pool, kTpl, "private");
    fs::path root = vm(kTpl) / "root";
    fs::create_symlink("../usr/bin/tool", root / "etc" / "link");
    ASSERT_EQ(::mknod((root / "dev" / "null").c_str(), S_IFCHR | 0666, makedev(1, 3)), 0);
    ASSERT_EQ(::mkfifo((root / "run" / "fifo").c_str(), 0600), 0);
    put(root / "usr" / "bin" / "su", "setuid\n");
    ::chown((root / "usr" / "bin" / "su").c_str(), 0, 0);
    ::chmod((root / "usr" / "bin" / "su").c_str(), 04755);
    put(root / "var" / "lib" / "owned", "x");
    ::chown((root / "var" / "lib" / "owned").c_str(), 1000, 100);
    ::link((root / "usr" / "bin" / "tool").c_str(), (root / "usr" / "bin" / "tool2").c_str());
    ASSERT_EQ(::setxattr((root / "etc" / "hostname").c_str(), "user.note", "v", 1, 0), 0);
    {
        std::ofstream sparse(root / "var" / "lib" / "sparse");
        sparse.seekp(8 << 20);
        sparse << "end";
    }
    put(vm(kTpl) / "private" / "home" / "data", "private data\n");
    pool.clone(kTpl, kStd, "StandaloneVM");
    Held sr(pool, kStd, "root"), sp(pool, kStd, "private");
    fs::path copy = vm(kStd) / "root";
    EXPECT_EQ(fs::read_symlink(copy / "etc" / "link"), "../usr/bin/tool");
    auto dev = lstat_of(copy / "dev" / "null");
    EXPECT_TRUE(S_ISCHR(dev.st_mode));
    EXPECT_EQ(dev.st_rdev, makedev(1, 3));
    EXPECT_TRUE(S_ISFIFO(lstat_of(copy / "run" / "fifo").st_mode));
    EXPECT_EQ(lstat_of(copy / "usr" / "bin" / "su").st_mode & 07777, 04755u);
    EXPECT_EQ(lstat_of(copy / "var" / "lib" / "owned").st_uid, 1000u);
    EXPECT_EQ(lstat_of(copy / "var" / "lib" / "owned").st_gid, 100u);
    EXPECT_EQ(lstat_of(copy / "usr" / "bin" / "tool").st_ino,
              lstat_of(copy / "usr" / "bin" / "tool2").st_ino);
    EXPECT_EQ(lstat_of(copy / "usr" / "bin" / "tool").st_mode & 0777, 0755u);
    EXPECT_EQ(lstat_of(copy / "etc" / "hostname").st_mtim.tv_sec,
              lstat_of(root / "etc" / "hostname").st_mtim.tv_sec);
    char v[4] = {};
    EXPECT_EQ(::getxattr((copy / "etc" / "hostname").c_str(), "user.note", v, sizeof v), 1);
    EXPECT_EQ(fs::file_size(copy / "var" / "lib" / "sparse"), (8u << 20) + 3);
    EXPECT_LT(lstat_of(copy / "var" / "lib" / "sparse").st_blocks * 512, 1 << 20);  // holes kept
    EXPECT_EQ(slurp(vm(kStd) / "private" / "home" / "data"), "private data\n");
    EXPECT_TRUE(fs::is_empty(vm(kStd) / "volatile"));
    // Independent: the copy's changes stay in the copy.
    put(copy / "etc" / "hostname", "standalone\n");
    EXPECT_EQ(slurp(root / "etc" / "hostname"), "template\n");

    pool.create(kApp, "AppVM");
    {
        Held h(pool, kApp, "private");
        put(vm(kApp) / "private" / "home" / "a", "a");
    }
    pool.clone(kApp, kApp2, "AppVM");
    EXPECT_EQ(read_halted(pool, kApp2, "private", "home/a"), "a");
    EXPECT_FALSE(fs::exists(vm(kApp2) / "root.img"));
    EXPECT_THROW(pool.clone(kApp, kApp2, "AppVM"), StorageError);
    EXPECT_THROW(
        pool.clone("0b1e5a1c-0000-4000-8000-00000000dead", "0b1e5a1c-0000-4000-8000-00000000beef", "AppVM"),
        StorageError);
}

TEST_F(Pool, CloneOfARunningQubeTakesItsLastStoppedState) {
    FilePool pool(tmp_.path() / "pool");
    make_template(pool);
    pool.create(kApp, "AppVM");
    StartedVolumes v = pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerA);
    ASSERT_TRUE(write_as(kOwnerA, v.private_dir / "home" / "saved", "1"));
    pool.stop(kApp);
    v = pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerA);
    ASSERT_TRUE(write_as(kOwnerA, v.private_dir / "home" / "unsaved", "2"));
    pool.clone(kApp, kApp2, "AppVM");
    EXPECT_TRUE(exists_halted(pool, kApp2, "private", "home/saved"));
    EXPECT_FALSE(exists_halted(pool, kApp2, "private", "home/unsaved"));
    pool.stop(kApp);
    expect_no_mounts();
}

TEST_F(Pool, RemoveLeavesNothingEvenWhileStarted) {
    FilePool pool(tmp_.path() / "pool");
    make_template(pool);
    pool.create(kApp, "AppVM");
    pool.create(kDvm, "AppVM");
    pool.create(kDisp, "DispVM");
    pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerA);
    pool.start(kDisp, "DispVM", std::vector<std::string>{kDvm, kTpl}, kOwnerB);
    pool.start(kTpl, "TemplateVM", std::vector<std::string>{}, kOwnerT);
    EXPECT_FALSE(mounts_under(tmp_.path()).empty());
    for (const auto& u : {kApp, kDisp, kTpl, kDvm}) {
        pool.remove(u);
        EXPECT_FALSE(fs::exists(vm(u))) << u;
        EXPECT_FALSE(fs::exists(run(u))) << u;
    }
    expect_no_mounts();
    EXPECT_TRUE(fs::is_empty(tmp_.path() / "pool" / "vm"));
    EXPECT_TRUE(fs::is_empty(tmp_.path() / "pool" / "run"));
    pool.flush();  // what was thrown away goes in the background
    EXPECT_TRUE(fs::is_empty(tmp_.path() / "pool" / "trash"));
    pool.remove(kApp);  // again: nothing left to do
}

// A restart of the daemon: a new pool on the folder finds the started qube,
// stops it, and finishes revisions an earlier pool left to do.
TEST_F(Pool, ANewPoolTakesOverWhatTheLastOneLeft) {
    {
        FilePool pool(tmp_.path() / "pool");
        make_template(pool);
        pool.create(kApp, "AppVM");
        StartedVolumes v = pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerA);
        ASSERT_TRUE(write_as(kOwnerA, v.private_dir / "home" / "f", "1"));
    }
    {
        FilePool pool(tmp_.path() / "pool");
        EXPECT_TRUE(pool.is_started(kApp));
        EXPECT_TRUE(is_mount_point(run(kApp) / "root"));
        pool.stop(kApp);
        expect_no_mounts();
        // As if the daemon died before the revision was kept.
        pool.flush();
    }
    put(vm(kApp) / "revisions.pending", "time=1700000000\nprivate\n");
    {
        FilePool pool(tmp_.path() / "pool");
        pool.flush();
        EXPECT_FALSE(fs::exists(vm(kApp) / "revisions.pending"));
        EXPECT_EQ(pool.revisions(kApp, "private").size(), 1u);
    }
}

TEST_F(Pool, BusyViewIsDetachedAtStop) {
    FilePool pool(tmp_.path() / "pool");
    make_template(pool);
    pool.create(kApp, "AppVM");
    StartedVolumes v = pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerA);
    int fd = ::open((v.root / "etc" / "hostname").c_str(), O_RDONLY);
    ASSERT_GE(fd, 0);
    pool.stop(kApp);
    expect_no_mounts();
    char buf[16] = {};
    EXPECT_GT(::read(fd, buf, sizeof buf), 0);  // still readable, detached
    ::close(fd);
    EXPECT_FALSE(pool.is_started(kApp));
}

TEST_F(Pool, InfoGivesQubesValuesForEveryVolume) {
    FilePool pool(tmp_.path() / "pool");
    make_template(pool);
    pool.create(kStd, "StandaloneVM");
    pool.create(kDvm, "AppVM");
    pool.create(kDisp, "DispVM");
    {
        Held h(pool, kTpl, "private");
        put(vm(kTpl) / "private" / "home" / "f", std::string(10000, 'x'));
    }

    struct Want {
        bool rw, save_on_stop, snap_on_start;
        std::string source;
        uint64_t size;
    };
    const uint64_t root = 10ull << 30, priv = 2ull << 30;
    auto check = [&](const std::string& uuid, const std::string& klass, const std::vector<std::string>& chain,
                     const std::string& volume, const Want& w) {
        SCOPED_TRACE(klass + " " + volume);
        VolumeInfo i = pool.info(uuid, klass, volume, chain);
        EXPECT_EQ(i.pool, "varlibqubes");
        EXPECT_EQ(i.vid, "vm/" + uuid + "/" + volume);
        EXPECT_EQ(i.rw, w.rw);
        EXPECT_EQ(i.save_on_stop, w.save_on_stop);
        EXPECT_EQ(i.snap_on_start, w.snap_on_start);
        EXPECT_EQ(i.source, w.source);
        EXPECT_EQ(i.size, w.size);
        EXPECT_EQ(i.revisions_to_keep, 1);
        EXPECT_FALSE(i.ephemeral);
        EXPECT_FALSE(i.is_outdated);
        return i;
    };
    for (const auto& [uuid, klass] : {std::pair{kTpl, "TemplateVM"}, std::pair{kStd, "StandaloneVM"}}) {
        check(uuid, klass, {}, "root", {true, true, false, "", root});
        check(uuid, klass, {}, "private", {true, true, false, "", priv});
        check(uuid, klass, {}, "volatile", {true, false, false, "", root});
    }
    // Snapshot roots are writable (rw=True, as Qubes reports them): writes go to volatile.
    check(kDvm, "AppVM", {kTpl}, "root", {true, false, true, "vm/" + kTpl + "/root", root});
    check(kDvm, "AppVM", {kTpl}, "private", {true, true, false, "", priv});
    check(kDvm, "AppVM", {kTpl}, "volatile", {true, false, false, "", root});
    check(kDisp, "DispVM", {kDvm, kTpl}, "root", {true, false, true, "vm/" + kTpl + "/root", root});
    check(kDisp, "DispVM", {kDvm, kTpl}, "private", {true, false, true, "vm/" + kDvm + "/private", priv});
    check(kDisp, "DispVM", {kDvm, kTpl}, "volatile", {true, false, false, "", root + priv});

    // Usage: the bytes of host disk the image takes (sparse: far below its size).
    VolumeInfo p = pool.info(kTpl, "TemplateVM", "private", std::vector<std::string>{});
    EXPECT_GE(p.usage, 10000u);
    EXPECT_LT(p.usage, 64u << 20);
    EXPECT_EQ(p.path, (vm(kTpl) / "private.img").string());
    EXPECT_EQ(pool.info(kDvm, "AppVM", "root", std::vector<std::string>{kTpl}).usage, 0u);  // halted
    pool.start(kDvm, "AppVM", std::vector<std::string>{kTpl}, kOwnerA);
    VolumeInfo r = pool.info(kDvm, "AppVM", "root", std::vector<std::string>{kTpl});
    EXPECT_GT(r.usage, 0u);
    EXPECT_EQ(r.path, (run(kDvm) / "root").string());
    pool.stop(kDvm);
    pool.set_revisions_to_keep(kDvm, "private", 4);
    EXPECT_EQ(pool.info(kDvm, "AppVM", "private", std::vector<std::string>{kTpl}).revisions_to_keep, 4);

    VolumeInfo f = pool.info(kDisp, "DispVM", "private", std::vector<std::string>{kDvm, kTpl});
    f.usage = 0;
    EXPECT_EQ(format_volume_info(f), "pool=varlibqubes\nvid=vm/" + kDisp +
                                         "/private\nsize=2147483648\nusage=0\n"
                                         "rw=True\nsource=vm/" +
                                         kDvm + "/private\npath=" + (run(kDisp) / "private").string() +
                                         "\nsave_on_stop=False\nsnap_on_start=True\nrevisions_to_keep=1\n"
                                         "ephemeral=False\nis_outdated=False\n");
    EXPECT_THROW(pool.info(kDisp, "DispVM", "kernel", std::vector<std::string>{kDvm, kTpl}), StorageError);
}

TEST_F(Pool, HostTemplateRootAndItsQubes) {
    // A small fake host: merged /usr and an /etc.
    fs::path host = tmp_.path() / "host";
    for (const char* d : {"usr/bin", "usr/lib", "usr/sbin", "etc"}) fs::create_directories(host / d);
    for (const char* l : {"bin", "sbin", "lib"}) fs::create_symlink(std::string("usr/") + l, host / l);
    put(host / "etc" / "passwd", "root:x:0:0:root:/root:/bin/sh\n");
    put(host / "etc" / "group", "root:x:0:\nshadow:x:42:\n");
    put(host / "etc" / "profile", "umask 022\n");  // copied to the template (hosts is its own)
    FilePool pool(tmp_.path() / "pool");
    pool.create(kTpl, "TemplateVM");
    pool.create(kApp, "AppVM");
    auto before = pool.root_changed(kTpl);
    HostTemplateOptions o;
    o.host_root = host;
    pool.make_host_template_root(kTpl, o);
    EXPECT_GT(pool.root_changed(kTpl), before);
    {
        Held h(pool, kTpl, "root");
        EXPECT_TRUE(is_host_template(vm(kTpl) / "root"));
    }
    EXPECT_THROW(pool.make_host_template_root(kTpl, o), StorageError);  // not empty
    StartedVolumes v = pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerA);
    EXPECT_TRUE(v.host_usr);
    EXPECT_EQ(slurp(v.root / "etc" / "profile"), "umask 022\n");
    EXPECT_TRUE(fs::is_directory(v.root / "rw"));
    pool.stop(kApp);
    StartedVolumes t = pool.start(kTpl, "TemplateVM", std::vector<std::string>{}, kOwnerT);
    EXPECT_TRUE(t.host_usr);
    pool.stop(kTpl);
    expect_no_mounts();
}

// Timings of the operations a qube start and stop pay (printed, not asserted).
TEST_F(Pool, StartAndStopTimings) {
    FilePool pool(tmp_.path() / "pool");
    make_template(pool);
    pool.create(kApp, "AppVM");
    pool.create(kDvm, "AppVM");
    pool.create(kDisp, "DispVM");
    using Clock = std::chrono::steady_clock;
    auto ms = [](Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); };
    // start, stop, then the background work of the stop (revisions, trash).
    auto measure = [&](FilePool& p, const std::string& what, const std::function<void()>& start,
                       const std::function<void()>& stop) {
        std::vector<double> starts, stops, after;
        for (int i = 0; i < 40; ++i) {
            auto t0 = Clock::now();
            start();
            auto t1 = Clock::now();
            stop();
            auto t2 = Clock::now();
            p.flush();
            auto t3 = Clock::now();
            starts.push_back(ms(t1 - t0));
            stops.push_back(ms(t2 - t1));
            after.push_back(ms(t3 - t2));
        }
        std::sort(starts.begin(), starts.end());
        std::sort(stops.begin(), stops.end());
        std::sort(after.begin(), after.end());
        std::printf(
            "[ timing ] %-11s start p50 %.2f ms p90 %.2f ms; stop p50 %.2f ms p90 %.2f ms; "
            "background p50 %.2f ms p90 %.2f ms\n",
            what.c_str(), starts[20], starts[36], stops[20], stops[36], after[20], after[36]);
    };
    measure(
        pool, "AppVM", [&] { pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerA); },
        [&] { pool.stop(kApp); });
    measure(
        pool, "DispVM",
        [&] {
            pool.start(kDisp, "DispVM", std::vector<std::string>{kDvm, kTpl}, kOwnerB);
        },
        [&] { pool.stop(kDisp); });
    measure(
        pool, "TemplateVM", [&] { pool.start(kTpl, "TemplateVM", std::vector<std::string>{}, kOwnerT); },
        [&] { pool.stop(kTpl); });
    PoolOptions o;
    o.idmapped_mounts = false;
    FilePool chown_pool(tmp_.path() / "pool", o);
    measure(
        chown_pool, "AppVM/chown",
        [&] { chown_pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerA); },
        [&] { chown_pool.stop(kApp); });
    // A private volume with 2,000 files: the revision kept at every stop.
    {
        Held h(pool, kApp, "private");
        for (int d = 0; d < 20; ++d) {
            fs::create_directories(vm(kApp) / "private" / "home" / std::to_string(d));
            for (int f = 0; f < 100; ++f)
                put(vm(kApp) / "private" / "home" / std::to_string(d) / std::to_string(f), "x");
        }
    }
    measure(
        pool, "AppVM/2000", [&] { pool.start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwnerA); },
        [&] { pool.stop(kApp); });
    expect_no_mounts();
}

}  // namespace
}  // namespace aerie::storage
