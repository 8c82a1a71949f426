// The safe resolver: names beneath a descriptor never follow a link out.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "base/safe_dir.hpp"

namespace fs = std::filesystem;
using namespace aerie::base;

namespace {

class SafeDirTest : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/aerie-safe-dir-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        top_ = tmpl;
        fs::create_directories(top_ / "tree" / "home" / "user");
        fs::create_directories(top_ / "outside");
        std::ofstream(top_ / "outside" / "secret") << "host";
        std::ofstream(top_ / "tree" / "file") << "data";
    }
    void TearDown() override { fs::remove_all(top_); }
    fs::path top_;
};

TEST_F(SafeDirTest, OpensADirectoryBeneath) {
    UniqueFd tree = open_trusted_dir(top_ / "tree");
    UniqueFd home = open_dir_beneath(tree.get(), "home/user", "private");
    EXPECT_TRUE(home.valid());
}

TEST_F(SafeDirTest, RefusesASymlinkAtTheEnd) {
    fs::remove_all(top_ / "tree" / "home");
    fs::create_directory_symlink("../outside", top_ / "tree" / "home");
    UniqueFd tree = open_trusted_dir(top_ / "tree");
    try {
        open_dir_beneath(tree.get(), "home", "private of work");
        FAIL() << "a symlink was followed";
    } catch (const UnsafePathError& e) {
        EXPECT_EQ(e.error(), ELOOP);
        EXPECT_NE(std::string(e.what()).find("private of work: home: is or passes through a symbolic link"),
                  std::string::npos)
            << e.what();
    }
}

TEST_F(SafeDirTest, RefusesAnAbsoluteSymlinkAndDotDot) {
    fs::remove_all(top_ / "tree" / "home");
    fs::create_directory_symlink("/", top_ / "tree" / "home");
    UniqueFd tree = open_trusted_dir(top_ / "tree");
    EXPECT_THROW(open_dir_beneath(tree.get(), "home"), UnsafePathError);
    EXPECT_THROW(open_dir_beneath(tree.get(), "../outside"), UnsafePathError);
    EXPECT_THROW(open_dir_beneath(tree.get(), "/etc"), UnsafePathError);
    EXPECT_EQ(open_beneath_errno(tree.get(), "home", O_PATH | O_DIRECTORY, FileKind::Directory), -ELOOP);
    EXPECT_EQ(open_beneath_errno(tree.get(), "../outside/secret", O_RDONLY, FileKind::Regular), -EXDEV);
}

TEST_F(SafeDirTest, RefusesALinkInTheMiddle) {
    fs::create_directory_symlink("../outside", top_ / "tree" / "mid");
    UniqueFd tree = open_trusted_dir(top_ / "tree");
    EXPECT_THROW(open_beneath(tree.get(), "mid/secret", O_RDONLY, FileKind::Regular), UnsafePathError);
}

TEST_F(SafeDirTest, ChecksTheType) {
    UniqueFd tree = open_trusted_dir(top_ / "tree");
    try {
        open_dir_beneath(tree.get(), "file", "private");
        FAIL() << "a file passed as a directory";
    } catch (const UnsafePathError& e) {
        EXPECT_NE(std::string(e.what()).find("not a directory"), std::string::npos) << e.what();
    }
    EXPECT_TRUE(open_beneath(tree.get(), "file", O_RDONLY, FileKind::Regular).valid());
    EXPECT_THROW(open_beneath(tree.get(), "home", O_PATH, FileKind::Regular), UnsafePathError);
    EXPECT_THROW(open_beneath(tree.get(), "file", O_PATH, FileKind::Socket), UnsafePathError);
}

TEST_F(SafeDirTest, EnsureDirMakesOrRefuses) {
    UniqueFd tree = open_trusted_dir(top_ / "tree");
    EXPECT_TRUE(ensure_dir_beneath(tree.get(), "new", 0755).valid());
    EXPECT_TRUE(fs::is_directory(top_ / "tree" / "new"));
    fs::create_directory_symlink("/", top_ / "tree" / "planted");
    EXPECT_THROW(ensure_dir_beneath(tree.get(), "planted", 0755), UnsafePathError);
    EXPECT_THROW(ensure_dir_beneath(tree.get(), "a/b", 0755), UnsafePathError);
    EXPECT_THROW(ensure_dir_beneath(tree.get(), "..", 0755), UnsafePathError);
}

TEST_F(SafeDirTest, TrustedDirDoesNotFollowAFinalLink) {
    fs::create_directory_symlink(top_ / "outside", top_ / "link");
    EXPECT_THROW(open_trusted_dir(top_ / "link"), UnsafePathError);
}

TEST_F(SafeDirTest, ReopensItselfForAnEmptyName) {
    UniqueFd tree = open_trusted_dir(top_ / "tree");
    UniqueFd again = open_dir_beneath(tree.get(), "");
    struct stat a = stat_fd(tree.get(), "a"), b = stat_fd(again.get(), "b");
    EXPECT_EQ(a.st_ino, b.st_ino);
}

}  // namespace
