// The receiver against hostile archives: each stream is refused with Qubes'
// error code and reported name, and nothing is ever written outside the
// incoming folder (root/outside and the rest of the sandbox stay as they
// were), whatever links the stream or an earlier one left there.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <climits>
#include <fstream>
#include <functional>

#include "qfile_test_support.hpp"

using namespace aerie::qfile;
using namespace aerie::qfile::test;

namespace {

struct Case {
    const char* what;
    std::string stream;
    std::uint32_t code;
    std::optional<std::string> reported;  // nullopt: the answer carries no name
    std::function<void(const fs::path& root)> before = {};
    UnpackOptions options = {};
};

std::string outside_path(const Sandbox& box) {
    return (box.root / "outside").string();
}

class QfileHostile : public ::testing::Test {
protected:
    // Runs `c`; checks the code, the name reported and the answer's bytes,
    // and that the sandbox outside in/ did not change.
    Received check(const Case& c) {
        if (c.before) c.before(box.root);
        auto before = box.outside_listing();
        auto r = receive(box.root / "in", c.stream, c.options);
        EXPECT_EQ(r.result.error_code, c.code) << c.what;
        EXPECT_EQ(r.result.last_name, c.reported) << c.what;
        EXPECT_EQ(r.answer, encode_result(c.code, r.result.crc32, c.reported)) << c.what;
        EXPECT_EQ(box.outside_listing(), before) << c.what;
        std::ifstream keep(box.root / "outside" / "keep");
        std::string content((std::istreambuf_iterator<char>(keep)), {});
        EXPECT_EQ(content, "host") << c.what;
        return r;
    }

    bool exists_in(const std::string& rel) {
        struct stat st {};
        return ::lstat((box.root / "in" / rel).c_str(), &st) == 0;
    }

    Sandbox box;
};

TEST_F(QfileHostile, TraversalInNamesIsRefused) {
    std::string abs = (box.root / "outside" / "abs").string();
    for (const Case& c : {
             Case{"dot-dot", entry("../escape", kReg, "x") + end_marker(), EILSEQ, "../escape"},
             Case{"absolute", entry(abs, kReg, "x") + end_marker(), EILSEQ, abs},
             Case{"inner dot-dot", entry("a/../../escape", kReg, "x") + end_marker(), EILSEQ,
                  "a/../../escape"},
             Case{"directory dot-dot", entry("../d", kDir) + end_marker(), EILSEQ, "../d"},
             // A refused link reports its target, as Qubes does.
             Case{"symlink named dot-dot", entry("../l", kLink, "x") + end_marker(), EILSEQ, "x"},
             Case{"dot", entry("./a", kReg, "x") + end_marker(), EILSEQ, "./a"},
             Case{"empty name", header(1, kReg, 0) + std::string(1, '\0') + end_marker(), EILSEQ, ""},
         }) {
        check(c);
        EXPECT_TRUE(box.incoming_listing().empty()) << c.what;
    }
}

TEST_F(QfileHostile, SymlinksLeavingTheirTopDirectoryAreRefused) {
    std::string abs = outside_path(box);
    for (const Case& c : {
             Case{"absolute target", entry("d", kDir) + entry("d/l", kLink, abs) + end_marker(), ENOLINK,
                  abs},
             Case{"climbing target", entry("e", kDir) + entry("e/l", kLink, "../../outside") + end_marker(),
                  ENOLINK, "../../outside"},
             Case{"top-level link", entry("l", kLink, "x") + end_marker(), ENOLINK, "x"},
             Case{"climbing through a name",
                  entry("f", kDir) + entry("f/l", kLink, "x/../../y") + end_marker(), ENOLINK, "x/../../y"},
         }) {
        check(c);
    }
    EXPECT_FALSE(exists_in("d/l"));
    EXPECT_FALSE(exists_in("e/l"));
    EXPECT_FALSE(exists_in("l"));
}

// A link the stream itself made is never followed by a later entry.
TEST_F(QfileHostile, LaterEntriesDoNotFollowAReceivedLink) {
    std::string s = entry("d", kDir) + entry("d/e", kDir) + entry("d/e/up", kLink, "..") +
                    entry("d/e/up/f", kReg, "x") + end_marker();
    check({"write through a received link", s, ENOTDIR, "up"});
    EXPECT_TRUE(exists_in("d/e/up"));
    EXPECT_FALSE(exists_in("d/f"));
}

// Links already in the incoming folder (left by the user or an earlier
// transfer) are refused as parents and never replaced or followed.
TEST_F(QfileHostile, PlantedLinksAreNotFollowed) {
    auto plant = [](const fs::path& root) {
        fs::create_symlink(root / "outside", root / "in" / "planted");
        fs::create_symlink(root / "outside" / "keep", root / "in" / "victim");
        fs::create_directories(root / "in" / "d");
        fs::create_symlink(root / "outside", root / "in" / "d" / "l");
    };
    check({"a parent that is a planted link", entry("planted/x", kReg, "x") + end_marker(), ENOTDIR,
           "planted", plant});
    check({"a deeper parent that is a planted link", entry("d/l/x", kReg, "x") + end_marker(), ENOTDIR, "l"});
    check({"a file over a planted link", entry("victim", kReg, "evil") + end_marker(), EEXIST, "victim"});
    check({"a directory over a planted link", entry("planted", kDir) + entry("planted", kDir) + end_marker(),
           ENOTDIR, "planted"});
    check({"a link over a planted link", entry("d/l", kLink, "x") + end_marker(), EEXIST, "d/l"});
    struct stat st {};
    ASSERT_EQ(::stat((box.root / "outside").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0755u) << "the directory's mode was not set through the link";
    EXPECT_FALSE(fs::exists(box.root / "outside" / "x"));
}

TEST_F(QfileHostile, ExistingNamesAreNotOverwritten) {
    std::ofstream(box.root / "in" / "a") << "mine";
    check({"an existing file", entry("a", kReg, "theirs") + end_marker(), EEXIST, "a"});
    std::ifstream a(box.root / "in" / "a");
    std::string content((std::istreambuf_iterator<char>(a)), {});
    EXPECT_EQ(content, "mine");
    check({"a file over a directory sent before", entry("b", kReg) + entry("b", kDir) + end_marker(), ENOTDIR,
           "b"});
}

TEST_F(QfileHostile, OtherTypesAndBadModesAreRefused) {
    for (const Case& c : {
             Case{"fifo", entry("f", 010644) + end_marker(), EINVAL, "f"},
             Case{"character device", entry("c", 020666) + end_marker(), EINVAL, "c"},
             Case{"block device", entry("b", 060666) + end_marker(), EINVAL, "b"},
             Case{"socket", entry("s", 0140777) + end_marker(), EINVAL, "s"},
             Case{"every mode bit", entry("m", 0xffffffffu) + end_marker(), EINVAL, "m"},
             Case{"no type", entry("n", 0644) + end_marker(), EINVAL, "n"},
         }) {
        check(c);
    }
    EXPECT_TRUE(box.incoming_listing().empty());
}

TEST_F(QfileHostile, SetuidAndSetgidBitsAreDropped) {
    check({"setuid file", entry("s", 0106755, "x") + end_marker(), 0, "s"});
    struct stat st {};
    ASSERT_EQ(::stat((box.root / "in" / "s").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0755u);
}

TEST_F(QfileHostile, BadTimestampsAreRefused) {
    check({"nanoseconds past a second",
           header(2, kReg, 1, 1000000000u) + "a" + std::string(1, '\0') + "x" + end_marker(), EINVAL, "a"});
}

TEST_F(QfileHostile, TruncatedStreamsAreReported) {
    auto r = check(
        {"inside a file's data", header(2, kReg, 10) + "a" + std::string(1, '\0') + "xy", kLegalEof, "a"});
    EXPECT_FALSE(exists_in("a")) << "an incomplete file stays invisible";
    r = check({"inside a name", header(10, kReg, 0) + "abc", kLegalEof, std::nullopt});
    EXPECT_EQ(r.answer.size(), kResultHeaderSize);
    check({"inside a link target",
           entry("d", kDir) + header(4, kLink, 5) + "d/l" + std::string(1, '\0') + "ab", kLegalEof, "d/l"});
    check({"inside a header", entry("b", kReg, "x") + "\1\0\0", EREMOTEIO, "b"});
    check({"without the end marker", entry("c", kReg, "x"), EREMOTEIO, "c"});
    check({"nothing at all", "", EREMOTEIO, ""});
}

TEST_F(QfileHostile, OversizedFieldsAreRefused) {
    auto r = check({"a name of 16384 bytes", header(16384, kReg, 0) + std::string(16384, 'a') + end_marker(),
                    ENAMETOOLONG, std::nullopt});
    EXPECT_EQ(r.answer.size(), kResultHeaderSize);
    check({"a link target of 16384 bytes",
           entry("d", kDir) + header(4, kLink, 16384) + "d/l" + std::string(1, '\0') +
               std::string(16384, 'x') + end_marker(),
           ENAMETOOLONG, "d/l"});
    check({"a file larger than a signed size", header(2, kReg, 1ull << 63) + "f" + std::string(1, '\0'),
           EDQUOT, "f"});
}

TEST_F(QfileHostile, FileAndByteLimitsHold) {
    UnpackOptions files;
    files.max_files = 2;
    check({"one file too many",
           entry("a", kReg, "1") + entry("b", kReg, "2") + entry("c", kReg, "3") + end_marker(),
           EDQUOT,
           "b",
           {},
           files});
    EXPECT_TRUE(exists_in("b"));
    EXPECT_FALSE(exists_in("c"));
    UnpackOptions bytes;
    bytes.max_bytes = 1000;
    check({"one byte too many",
           entry("d", kReg, std::string(600, 'x')) + entry("e", kReg, std::string(401, 'y')) + end_marker(),
           EDQUOT,
           "e",
           {},
           bytes});
    EXPECT_TRUE(exists_in("d"));
    EXPECT_FALSE(exists_in("e"));
    check({"a link target past the limit",
           entry("f", kDir) + entry("f/l", kLink, std::string(1001, 'z')) + end_marker(),
           EDQUOT,
           "f/l",
           {},
           bytes});
}

TEST_F(QfileHostile, NamesEndAtTheirFirstNul) {
    check({"a NUL hiding a traversal",
           header(12, kReg, 1) + "a" + std::string(1, '\0') + "../../x" + std::string(3, '\0') + "x" +
               end_marker(),
           0, "a"});
    EXPECT_TRUE(exists_in("a"));
}

TEST_F(QfileHostile, UnsafeCharactersOnlyWithAllowAllNames) {
    check({"a newline", entry("a\nb", kReg, "x") + end_marker(), EILSEQ, "a\nb"});
    UnpackOptions all;
    all.name_flags |= kAllowUnsafeCharacters;
    check({"a newline, allowed", entry("a\nb", kReg, "x") + end_marker(), 0, "a\nb", {}, all});
    check({"traversal, all names allowed",
           entry("../\xff", kReg, "x") + end_marker(),
           EILSEQ,
           "../\xff",
           {},
           all});
}

}  // namespace
