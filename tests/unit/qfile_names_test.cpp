// The name and symlink rules every qfile receiver applies (Qubes' rules).
#include <gtest/gtest.h>

#include <cerrno>

#include "qfile/names.hpp"

using namespace aerie::qfile;

namespace {

constexpr std::uint32_t kDefault = kAllowNonCanonicalSymlinks;  // what qubes.Filecopy uses

TEST(QfileNames, AcceptsCanonicalRelativeNames) {
    for (const char* ok :
         {"a", "a/b", "a.b/c d", "..a", "a..", ".hidden", "a/...", "caf\xc3\xa9", "\xe6\x97\xa5"})
        EXPECT_EQ(validate_file_name(ok, kDefault), 0) << ok;
}

TEST(QfileNames, RefusesTraversalAndNonCanonicalNames) {
    for (const char* bad :
         {"", "/", "/etc/passwd", "..", "../a", "a/..", "a/../b", ".", "./a", "a/.", "a//b", "a/", "a/b/"})
        EXPECT_EQ(validate_file_name(bad, kDefault), EILSEQ) << bad;
}

TEST(QfileNames, RefusesControlAndUnsafeCharactersUnlessAllowed) {
    for (const char* bad : {"a\nb", "a\x7f", "a\x01", "\xff", "\xc3", "\xc0\xaf",  // overlong "/"
                            "\xe0\x80\xaf", "\xed\xa0\x80",                        // overlong, surrogate
                            "a\xe2\x80\xae"
                            "b",                  // right-to-left override
                            "\xd7\x90",           // Hebrew alef (RTL)
                            "\xe2\x80\x8b",       // zero width space
                            "\xcc\x81",           // combining acute
                            "\xf0\x9f\x98\x80"})  // emoji (other symbol)
    {
        EXPECT_EQ(validate_file_name(bad, kDefault), EILSEQ) << bad;
        EXPECT_FALSE(safe_for_display(bad)) << bad;
    }
    EXPECT_EQ(validate_file_name("a\nb\xff", kDefault | kAllowUnsafeCharacters), 0);
    // Traversal stays refused with any characters allowed.
    EXPECT_EQ(validate_file_name("../\xff", kDefault | kAllowUnsafeCharacters), EILSEQ);
}

TEST(QfileNames, SymlinksStayInsideTheirTopDirectory) {
    // "a/b" may point beside itself, "a/b/c" one level up, never above "a".
    EXPECT_EQ(validate_symlink("a/b", "c", kDefault), 0);
    EXPECT_EQ(validate_symlink("a/b", "c/d/", kDefault), 0);
    EXPECT_EQ(validate_symlink("a/b", "../c", kDefault), ENOLINK);
    EXPECT_EQ(validate_symlink("a/b/c", "../d", kDefault), 0);
    EXPECT_EQ(validate_symlink("a/b/c", "../../d", kDefault), ENOLINK);
    EXPECT_EQ(validate_symlink("a/b/c", "..", kDefault), 0);
    EXPECT_EQ(validate_symlink("a/b/c", "x/../../y", kDefault), ENOLINK);
    EXPECT_EQ(validate_symlink("a/b", "/etc/passwd", kDefault), ENOLINK);
    EXPECT_EQ(validate_symlink("a/b", "", 0), ENOLINK);
    // A top-level entry is never a link.
    EXPECT_EQ(validate_symlink("a", "b", kDefault), ENOLINK);
    // A bad link name is a bad name.
    EXPECT_EQ(validate_symlink("../a/b", "c", kDefault), EILSEQ);
    EXPECT_EQ(validate_symlink("a/b\n", "c", kDefault), EILSEQ);
    EXPECT_EQ(validate_symlink("a/b", "c\n", kDefault), EILSEQ);
}

TEST(QfileNames, NonCanonicalTargetsOnlyWhenAllowed) {
    EXPECT_EQ(validate_symlink("a/b", "./c", kDefault), 0);
    EXPECT_EQ(validate_symlink("a/b", "c//d", kDefault), 0);
    EXPECT_EQ(validate_symlink("a/b", "./c", 0), EILSEQ);
    EXPECT_EQ(validate_symlink("a/b/c", "./../d", kDefault), 0);
    EXPECT_EQ(validate_symlink("a/b/c", "./../../d", kDefault), ENOLINK);
}

TEST(QfileNames, UnsafeSymlinksOnlyNeedAName) {
    EXPECT_EQ(validate_symlink("a", "/etc/passwd", kAllowUnsafeSymlinks), 0);
    EXPECT_EQ(validate_symlink("..", "x", kAllowUnsafeSymlinks), EILSEQ);
}

TEST(QfileNames, DisplaySafety) {
    EXPECT_TRUE(safe_for_display("plain name.txt"));
    EXPECT_TRUE(
        safe_for_display("Gr\xc3\xbc\xc3\x9f"
                         "e"));                                 // Grüße
    EXPECT_TRUE(safe_for_display("\xd0\x9c\xd0\xb8\xd1\x80"));  // Мир
    EXPECT_TRUE(code_point_safe_for_display(0x00e9));
    EXPECT_FALSE(code_point_safe_for_display(0x202e));
    EXPECT_FALSE(code_point_safe_for_display(0x110000));
    EXPECT_FALSE(code_point_safe_for_display(0x1f));
}

TEST(QfileNames, QubeNames) {
    for (const char* ok : {"work", "a", "sys-net", "a.b_c-1", "x234567890123456789012345678901"})
        EXPECT_TRUE(valid_qube_name(ok)) << ok;
    for (const char* bad : {"", "1a", "-a", "a/b", "..", "none", "default", "Domain-0", "vm-dm", "a b",
                            "x2345678901234567890123456789012"})
        EXPECT_FALSE(valid_qube_name(bad)) << bad;
}

}  // namespace
