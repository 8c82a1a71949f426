// Sized volumes: a qube cannot store more bytes or files in its private
// volume than its size allows (nor take more of the host's disk), revisions
// are snapshots later writes never change (in-place edits, any depth), and
// Resize grows a volume, halted or running, and refuses to shrink it.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sched.h>
#include <signal.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <string>
#include <vector>

#include "storage/image.hpp"
#include "storage/pool.hpp"
#include "storage_test_support.hpp"

namespace aerie::storage {
namespace {

using namespace test;

constexpr uid_t kOwner = 0x10030000;  // backend::qube_uid_base(3)
const std::string kTpl = "5a1e5a1c-0000-4000-8000-000000000001";
const std::string kApp = "5a1e5a1c-0000-4000-8000-000000000002";

class VolumeLimits : public ::testing::Test {
protected:
    VolumeLimits() : tmp_("limits") {}
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices, mounts)";
        pool_ = std::make_unique<FilePool>(tmp_.path() / "pool");
        pool_->create(kTpl, "TemplateVM");
        pool_->create(kApp, "AppVM");
    }
    void TearDown() override {
        if (pool_) {
            pool_->flush();
            pool_.reset();
        }
    }
    StartedVolumes start() { return pool_->start(kApp, "AppVM", std::vector<std::string>{kTpl}, kOwner); }
    fs::path vm(const std::string& uuid) const { return tmp_.path() / "pool" / "vm" / uuid; }
    // What the qube's root (host uid kOwner) manages in `dir`; exit code 0 if `body` returned true.
    int as_qube(const fs::path& dir, const std::function<bool()>& body) { return as_user(kOwner, dir, body); }
    // A file of a revision (an image file): mounted aside for the read.
    std::string read_revision(const std::string& rev, const fs::path& rel) {
        fs::path view = tmp_.path() / "revision-view";
        fs::create_directories(view);
        mount_image(vm(kApp) / "revisions" / "private" / rev, view, false);
        std::string text = slurp(view / rel);
        unmount_volume(view);
        return text;
    }

    TempDir tmp_;
    std::unique_ptr<FilePool> pool_;
};

// Writes 1 MiB blocks into `name` until a write fails: the errno (0: `limit` bytes written).
int fill_file(const char* name, uint64_t limit) {
    int fd = ::open(name, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) return errno;
    std::string block(1 << 20, 'x');
    int err = 0;
    for (uint64_t done = 0; done < limit; done += block.size())
        if (::write(fd, block.data(), block.size()) != static_cast<ssize_t>(block.size())) {
            err = errno ? errno : ENOSPC;
            break;
        }
    if (err == 0 && ::fsync(fd) < 0) err = errno;
    ::close(fd);
    return err;
}

TEST_F(VolumeLimits, DiskFillOfPrivateEndsAtItsSize) {
    StartedVolumes v = start();
    const fs::path home = v.private_dir / "home";
    // Most of it reserved at once (no data written), then real data until full.
    EXPECT_EQ(as_qube(home, [] {
                  struct statvfs st {};
                  if (::statvfs(".", &st) < 0) return false;
                  off_t free_bytes = static_cast<off_t>(st.f_bavail) * static_cast<off_t>(st.f_frsize);
                  int fd = ::open("reserved", O_WRONLY | O_CREAT, 0600);
                  // At most 2.5 GiB: where volumes have no size, this is the host's disk.
                  off_t want = std::min<off_t>(free_bytes - (100 << 20), 5ll << 29);
                  return fd >= 0 && want > 0 && ::fallocate(fd, 0, 0, want) == 0;
              }),
              0);
    EXPECT_EQ(as_qube(home, [] { return fill_file("data", 1ull << 30) == ENOSPC; }), 0)
        << "writing beyond the private volume's 2 GiB must fail with ENOSPC";
    // The host pays for what was written, not more than the volume's size.
    EXPECT_LT(image_allocated(vm(kApp) / "private.img"), kPrivateImgSize + (64ull << 20));
    pool_->stop(kApp);
}

TEST_F(VolumeLimits, InodeFillOfPrivateEndsButHolds300kFiles) {
    StartedVolumes v = start();
    const fs::path home = v.private_dir / "home";
    // Exit 0: ENOSPC came after at least 300,000 and before 1,000,000 files.
    int rc = as_qube(home, [] {
        char dir[32], name[64];
        for (int n = 0; n < 1000000; ++n) {
            std::snprintf(dir, sizeof dir, "d%d", n / 10000);
            if (n % 10000 == 0 && ::mkdir(dir, 0700) < 0) return errno == ENOSPC && n >= 300000;
            std::snprintf(name, sizeof name, "%s/%d", dir, n);
            int fd = ::open(name, O_WRONLY | O_CREAT | O_EXCL, 0600);
            if (fd < 0) return errno == ENOSPC && n >= 300000;
            ::close(fd);
        }
        return false;  // a million files: no bound
    });
    EXPECT_EQ(rc, 0) << "the private volume must run out of inodes, after 300,000 files";
    pool_->stop(kApp);
}

TEST_F(VolumeLimits, RevisionUnchangedByALaterInPlaceEdit) {
    StartedVolumes v = start();
    ASSERT_TRUE(write_as(kOwner, v.private_dir / "home" / "doc", "first"));
    pool_->stop(kApp);
    v = start();
    // In place: the same inode opened and overwritten, as a database does.
    ASSERT_EQ(as_qube(v.private_dir / "home", [] {
                  int fd = ::open("doc", O_WRONLY);
                  bool ok = fd >= 0 && ::pwrite(fd, "SECOND", 6, 0) == 6;
                  if (fd >= 0) ::close(fd);
                  return ok;
              }),
              0);
    pool_->stop(kApp);
    auto revs = pool_->revisions(kApp, "private");
    ASSERT_EQ(revs.size(), 1u);
    EXPECT_EQ(read_revision(revs[0], "home/doc"), "first");
    // Nor by writes of the next run.
    v = start();
    ASSERT_TRUE(write_as(kOwner, v.private_dir / "home" / "doc", "third"));
    EXPECT_EQ(read_revision(revs[0], "home/doc"), "first");
    pool_->stop(kApp);
}

TEST_F(VolumeLimits, DeepFolderDoesNotStopRevisions) {
    StartedVolumes v = start();
    ASSERT_EQ(as_qube(v.private_dir / "home", [] {
                  for (int i = 0; i < 300; ++i)
                    if (::mkdir("d", 0700) < 0 || ::chdir("d") < 0) return false;
                  return write_file("bottom", "deep");
              }),
              0);
    pool_->stop(kApp);
    v = start();
    ASSERT_TRUE(write_as(kOwner, v.private_dir / "home" / "later", "x"));
    pool_->stop(kApp);
    pool_->flush();
    EXPECT_FALSE(fs::exists(vm(kApp) / "revisions.error")) << slurp(vm(kApp) / "revisions.error");
    EXPECT_EQ(pool_->revisions(kApp, "private").size(), 1u);
}

uint64_t fs_bytes(const fs::path& p) {
    struct statvfs st {};
    if (::statvfs(p.c_str(), &st) < 0) return 0;
    return static_cast<uint64_t>(st.f_blocks) * st.f_frsize;
}

TEST_F(VolumeLimits, ResizeGrowsHaltedOrRunningAndRefusesToShrink) {
    const uint64_t gib = 1ull << 30;
    // Halted.
    pool_->resize(kApp, "AppVM", "private", 3 * gib);
    EXPECT_EQ(pool_->info(kApp, "AppVM", "private", std::vector<std::string>{kTpl}).size, 3 * gib);
    StartedVolumes v = start();
    EXPECT_GT(fs_bytes(v.private_dir), 3 * gib - gib / 2);
    // Running: grown online where the host lets us (CAP_SYS_RESOURCE), else
    // at the qube's stop; the qube sees it at the latest at its next start.
    pool_->resize(kApp, "AppVM", "private", 4 * gib);
    EXPECT_EQ(image_size(vm(kApp) / "private.img"), 4 * gib);
    ASSERT_TRUE(write_as(kOwner, v.private_dir / "home" / "kept", "x"));
    pool_->stop(kApp);
    v = start();
    EXPECT_GT(fs_bytes(v.private_dir), 4 * gib - gib / 2);
    EXPECT_EQ(slurp(v.private_dir / "home" / "kept"), "x");
    pool_->stop(kApp);
    // The same size: nothing to do. Smaller: Qubes' refusal.
    pool_->resize(kApp, "AppVM", "private", 4 * gib);
    try {
        pool_->resize(kApp, "AppVM", "private", 2 * gib);
        ADD_FAILURE() << "shrinking must be refused";
    } catch (const StorageError& e) {
        EXPECT_EQ(std::string(e.what()),
                  "For your own safety, shrinking of private is disabled. If you really know what you are doing, "
                  "use `truncate` on vm/" +
                      kApp + "/private manually.");
    }
    EXPECT_EQ(image_size(vm(kApp) / "private.img"), 4 * gib);
    // A snapshot volume is resized through its source.
    EXPECT_THROW(pool_->resize(kApp, "AppVM", "root", 20 * gib), StorageError);
    EXPECT_THROW(pool_->resize(kApp, "AppVM", "private", 4 * gib + 1), StorageError);
    // A template's own root grows too.
    pool_->resize(kTpl, "TemplateVM", "root", 11 * gib);
    EXPECT_EQ(image_size(vm(kTpl) / "root.img"), 11 * gib);
    pool_->flush();  // the revisions the stops queued are taken in the background
    EXPECT_TRUE(mounts_under(tmp_.path()).empty());
}

}  // namespace
}  // namespace aerie::storage

namespace aerie::storage {
namespace {

// A mount namespace cloned while a volume is mounted (as a qube's launch
// does) keeps the volume's file system alive past its unmount here. Mounted
// again, the volume must be that same file system (its loop device), not a
// second one over the same image that misses what the first has not written.
TEST_F(VolumeLimits, RemountWhileAnotherNamespaceHoldsACopySeesTheSameFileSystem) {
    pool_->hold(kApp, "private");
    const fs::path dir = vm(kApp) / "private";
    int pipefd[2];
    ASSERT_EQ(::pipe(pipefd), 0);
    pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {  // a copy of every mount, kept until killed
        ::close(pipefd[0]);
        if (::unshare(CLONE_NEWNS) != 0) ::_exit(1);
        char ok = 'k';
        if (::write(pipefd[1], &ok, 1) != 1) ::_exit(1);
        ::pause();
        ::_exit(0);
    }
    ::close(pipefd[1]);
    char got = 0;
    ASSERT_EQ(::read(pipefd[0], &got, 1), 1);
    ::close(pipefd[0]);
    { std::ofstream(dir / "written-after-the-copy") << "mine"; }
    pool_->release(kApp, "private");
    pool_->hold(kApp, "private");
    std::ifstream in(dir / "written-after-the-copy");
    std::string text;
    std::getline(in, text);
    ::kill(child, SIGKILL);
    ::waitpid(child, nullptr, 0);
    pool_->release(kApp, "private");
    EXPECT_EQ(text, "mine");
}

}  // namespace
}  // namespace aerie::storage
