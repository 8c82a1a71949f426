// Whole-tree operations: snapshots, removal at any depth, usage, owner shifts,
// and the things they must not do (follow links, cross mounts).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "storage/tree.hpp"
#include "storage_test_support.hpp"

namespace aerie::storage {
namespace {

using namespace test;

// A chain of `depth` folders named "d" under `top`, made with *at calls (the
// path may be longer than PATH_MAX); a file "leaf" at the bottom.
void make_deep(const fs::path& top, int depth) {
    int fd = ::open(top.c_str(), O_RDONLY | O_DIRECTORY);
    ASSERT_GE(fd, 0);
    for (int i = 0; i < depth; ++i) {
        ASSERT_EQ(::mkdirat(fd, "d", 0755), 0);
        int next = ::openat(fd, "d", O_RDONLY | O_DIRECTORY);
        ::close(fd);
        ASSERT_GE(next, 0);
        fd = next;
    }
    int leaf = ::openat(fd, "leaf", O_WRONLY | O_CREAT, 0644);
    ::close(leaf);
    ::close(fd);
}

TEST(StorageTree, SnapshotLinksFilesAndCopiesFolders) {
    TempDir tmp("tree");
    fs::path src = tmp.path() / "src";
    fs::create_directories(src / "a" / "b");
    put(src / "a" / "b" / "f", "one");
    put(src / "g", "two");
    fs::create_symlink("/etc/passwd", src / "link");
    ::chmod((src / "a").c_str(), 0710);
    CopyStats st = copy_tree(src, tmp.path() / "snap", CopyMode::Snapshot);
    EXPECT_EQ(st.files, 2u);
    EXPECT_EQ(st.directories, 2u);
    EXPECT_EQ(st.reflinked + st.hard_linked, 2u);
    if (st.hard_linked) {  // no reflinks on this filesystem: cp -al
        EXPECT_EQ(lstat_of(src / "g").st_ino, lstat_of(tmp.path() / "snap" / "g").st_ino);
    }
    EXPECT_NE(lstat_of(src / "a").st_ino, lstat_of(tmp.path() / "snap" / "a").st_ino);
    EXPECT_EQ(lstat_of(tmp.path() / "snap" / "a").st_mode & 07777, 0710u);
    EXPECT_EQ(fs::read_symlink(tmp.path() / "snap" / "link"), "/etc/passwd");
    // A file replaced in the source keeps its old content in the snapshot.
    put(src / "g.new", "three");
    fs::rename(src / "g.new", src / "g");
    EXPECT_EQ(slurp(tmp.path() / "snap" / "g"), "two");
    fs::remove(src / "a" / "b" / "f");
    EXPECT_EQ(slurp(tmp.path() / "snap" / "a" / "b" / "f"), "one");
    // The target must not exist.
    EXPECT_THROW(copy_tree(src, tmp.path() / "snap", CopyMode::Data), StorageError);
}

TEST(StorageTree, RemovesAnyDepthWithoutFollowingLinks) {
    TempDir tmp("tree");
    fs::create_directories(tmp.path() / "outside");
    put(tmp.path() / "outside" / "keep", "k");
    fs::create_directories(tmp.path() / "t");
    make_deep(tmp.path() / "t", 300);  // far deeper than the levels kept open at once
    fs::create_symlink(tmp.path() / "outside", tmp.path() / "t" / "to-outside");
    fs::create_symlink(tmp.path() / "outside" / "keep", tmp.path() / "t" / "to-file");
    remove_tree(tmp.path() / "t");
    EXPECT_FALSE(fs::exists(tmp.path() / "t"));
    EXPECT_EQ(slurp(tmp.path() / "outside" / "keep"), "k");
    remove_tree(tmp.path() / "t");  // gone already: fine
    put(tmp.path() / "file", "f");
    remove_tree(tmp.path() / "file");
    EXPECT_FALSE(fs::exists(tmp.path() / "file"));
}

TEST(StorageTree, CopyStopsAtTheDepthLimitAndLeavesNothing) {
    TempDir tmp("tree");
    fs::create_directories(tmp.path() / "src");
    make_deep(tmp.path() / "src", kMaxTreeDepth + 10);
    EXPECT_THROW(copy_tree(tmp.path() / "src", tmp.path() / "dst", CopyMode::Data), StorageError);
    EXPECT_FALSE(fs::exists(tmp.path() / "dst"));
}

TEST(StorageTree, NeverCrossesAMount) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (a bind mount)";
    TempDir tmp("tree");
    fs::create_directories(tmp.path() / "elsewhere");
    put(tmp.path() / "elsewhere" / "precious", "p");
    fs::create_directories(tmp.path() / "t" / "mnt");
    ASSERT_EQ(::mount((tmp.path() / "elsewhere").c_str(), (tmp.path() / "t" / "mnt").c_str(), nullptr,
                      MS_BIND, nullptr),
              0);
    EXPECT_THROW(remove_tree(tmp.path() / "t"), StorageError);
    EXPECT_THROW(copy_tree(tmp.path() / "t", tmp.path() / "copy", CopyMode::Data), StorageError);
    EXPECT_FALSE(fs::exists(tmp.path() / "copy"));
    EXPECT_EQ(slurp(tmp.path() / "elsewhere" / "precious"), "p");
    EXPECT_LT(disk_usage(tmp.path() / "t"), 4096u * 3);  // the mount's files not counted
    unmount_all(tmp.path() / "t" / "mnt");
    remove_tree(tmp.path() / "t");
    EXPECT_EQ(slurp(tmp.path() / "elsewhere" / "precious"), "p");
}

TEST(StorageTree, UsageCountsBlocksAndEachInodeOnce) {
    TempDir tmp("tree");
    fs::path t = tmp.path() / "t";
    fs::create_directories(t);
    EXPECT_EQ(disk_usage(t), 0u);
    put(t / "big", std::string(100 * 1024, 'x'));
    uint64_t one = disk_usage(t);
    EXPECT_GE(one, 100u * 1024);
    fs::create_hard_link(t / "big", t / "again");
    EXPECT_EQ(disk_usage(t), one);
    {
        std::ofstream sparse(t / "sparse");
        sparse.seekp(64 << 20);
        sparse << "x";
    }
    EXPECT_LT(disk_usage(t), one + (1 << 20));
    EXPECT_EQ(disk_usage(tmp.path() / "missing"), 0u);
}

TEST(StorageTree, ShiftOwnerMovesOnlyTheRange) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (chown)";
    TempDir tmp("tree");
    fs::path t = tmp.path() / "t";
    fs::create_directories(t / "home" / "user");
    put(t / "home" / "user" / "f", "x");
    put(t / "suid", "x");
    put(t / "foreign", "x");
    ::chown((t / "home" / "user").c_str(), 1000, 1000);
    ::chown((t / "home" / "user" / "f").c_str(), 1000, 100);
    ::chmod((t / "suid").c_str(), 04755);
    ::chown((t / "foreign").c_str(), 70000, 70000);
    fs::create_symlink("f", t / "home" / "user" / "l");
    const uid_t base = 0x10030000;
    shift_owner(t, 0, base, 65536);
    EXPECT_EQ(lstat_of(t).st_uid, base);
    EXPECT_EQ(lstat_of(t / "home" / "user").st_uid, base + 1000);
    EXPECT_EQ(lstat_of(t / "home" / "user" / "f").st_gid, base + 100);
    EXPECT_EQ(lstat_of(t / "home" / "user" / "l").st_uid, base);
    EXPECT_EQ(lstat_of(t / "suid").st_mode & 07777, 04755u);
    EXPECT_EQ(lstat_of(t / "foreign").st_uid, 70000u);
    // And back.
    shift_owner(t, base, 0, 65536);
    EXPECT_EQ(lstat_of(t / "home" / "user").st_uid, 1000u);
    EXPECT_EQ(lstat_of(t).st_uid, 0u);
}

TEST(StorageTree, EmptyDirectoryKeepsTheFolder) {
    TempDir tmp("tree");
    fs::create_directories(tmp.path() / "v" / "upper" / "x");
    put(tmp.path() / "v" / "upper" / "x" / "f", "x");
    empty_directory(tmp.path() / "v");
    EXPECT_TRUE(fs::is_directory(tmp.path() / "v"));
    EXPECT_TRUE(fs::is_empty(tmp.path() / "v"));
}

}  // namespace
}  // namespace aerie::storage
