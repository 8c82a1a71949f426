// Hostile or broken policy files: binary data, NUL bytes, invalid UTF-8, huge
// lines and files, unreadable files. Each gives a clear error naming the file
// (and line) instead of crashing or being half-read.
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "policy_test_support.hpp"

namespace aerie::policy {
namespace {

using test::parse_error;
using namespace std::string_literals;

std::string line(long n, const std::string& message) {
    return test::kFile + ":" + std::to_string(n) + ": " + message;
}

TEST(PolicyBadInput, NulByte) {
    EXPECT_EQ(parse_error("svc * work personal deny\nsvc * wo\0rk personal deny\n"s),
              line(2, "line contains a NUL byte"));
    // Even in a comment.
    EXPECT_EQ(parse_error("# \0\n"s), line(1, "line contains a NUL byte"));
}

TEST(PolicyBadInput, InvalidUtf8) {
    EXPECT_EQ(parse_error("# ok\n# caf\xc3\xa9 fine\nsvc * \xff personal deny\n"),
              line(3, "line is not valid UTF-8 text"));
    EXPECT_EQ(parse_error("# \xc0\xaf overlong\n"), line(1, "line is not valid UTF-8 text"));
    EXPECT_EQ(parse_error("# \xed\xa0\x80 surrogate\n"), line(1, "line is not valid UTF-8 text"));
    EXPECT_EQ(parse_error("# \xf4\x90\x80\x80 beyond U+10FFFF\n"),
              line(1, "line is not valid UTF-8 text"));
    EXPECT_EQ(parse_error("# truncated \xe2\x82\n"), line(1, "line is not valid UTF-8 text"));
    EXPECT_EQ(parse_error("# lone continuation \x80\n"), line(1, "line is not valid UTF-8 text"));
    // Valid multi-byte text passes (and is then judged as policy).
    EXPECT_EQ(parse_error("# \xf0\x9f\x98\x80 \xe2\x82\xac\n"), "no error");
}

TEST(PolicyBadInput, LineLengthLimit) {
    std::string longest = "#" + std::string(kMaxLineBytes - 1, 'x');
    EXPECT_EQ(parse_error(longest + "\r\n"), "no error");  // the terminator does not count
    EXPECT_EQ(parse_error("\n" + longest + "x\n"),
              line(2, "line too long (65537 bytes, at most 65536)"));
    std::string megabyte(1 << 20, 'a');
    EXPECT_EQ(parse_error("svc * work personal deny\n" + megabyte),
              line(2, "line too long (1048576 bytes, at most 65536)"));
    // A long line of whitespace is no exception.
    EXPECT_EQ(parse_error(std::string(kMaxLineBytes + 1, ' ')),
              line(1, "line too long (65537 bytes, at most 65536)"));
}

TEST(PolicyBadInput, RandomBinaryGarbage) {
    std::mt19937 rng(12345);
    std::uniform_int_distribution<int> byte(0, 255);
    for (int round = 0; round < 50; ++round) {
        std::string data(4096, '\0');
        for (char& c : data) c = static_cast<char>(byte(rng));
        try {
            test::parse(data);
            ADD_FAILURE() << "garbage accepted in round " << round;
        } catch (const PolicySyntaxError& e) {
            EXPECT_EQ(e.file(), test::kFile);
            EXPECT_GE(e.line(), 1);
            EXPECT_FALSE(e.message().empty());
        }
    }
}

TEST(PolicyBadInput, PrintableGarbageGivesSyntaxErrors) {
    std::mt19937 rng(777);
    std::uniform_int_distribution<int> printable(0x20, 0x7e);
    for (int round = 0; round < 200; ++round) {
        std::string data;
        for (int i = 0; i < 300; ++i) data += (i % 37 == 36) ? '\n' : static_cast<char>(printable(rng));
        try {
            test::parse(data);
        } catch (const PolicySyntaxError& e) {
            EXPECT_EQ(e.file(), test::kFile);
            EXPECT_GE(e.line(), 1);
        }
    }
}

TEST(PolicyBadInput, ErrorsInIncludedFilesNameThatFile) {
    MemoryFiles files;
    files.add_file("/etc/qubes/policy.d/inc", std::string("# ok\n\xfe\n"));
    EXPECT_EQ(parse_error("!include inc\n", files),
              "/etc/qubes/policy.d/inc:2: line is not valid UTF-8 text");
}

TEST(PolicyBadInput, HugeFileIsRefused) {
    MemoryFiles files;
    files.add_file("/etc/qubes/policy.d/10-huge.policy", std::string(kMaxFileBytes + 1, '#'));
    std::string err = test::load_error(files, LoadOptions{});
    EXPECT_EQ(err, "cannot read /etc/qubes/policy.d/10-huge.policy: larger than 67108864 bytes");
    // Included, it is an error at the include line.
    files.add_file("/etc/qubes/policy.d/05-inc.policy", "\n!include 10-huge.policy\n");
    EXPECT_EQ(test::load_error(files, LoadOptions{}),
              "/etc/qubes/policy.d/05-inc.policy:2: cannot read /etc/qubes/policy.d/10-huge.policy: "
              "larger than 67108864 bytes");
}

// Files that exist but cannot be read (what EACCES or EIO looks like).
class UnreadableFiles final : public PolicyFiles {
public:
    MemoryFiles inner;
    std::string unreadable;

    Kind kind(const std::string& path) const override { return inner.kind(path); }
    std::vector<std::string> list(const std::string& dir) const override {
        if (dir == unreadable) throw FileReadError("cannot list directory " + dir + ": Permission denied");
        return inner.list(dir);
    }
    std::string read(const std::string& path, size_t max_bytes) const override {
        if (path == unreadable) throw FileReadError("cannot read " + path + ": Permission denied");
        return inner.read(path, max_bytes);
    }
    std::string resolve(const std::string& path) const override { return inner.resolve(path); }
};

TEST(PolicyBadInput, UnreadableFiles) {
    const std::string dir = "/etc/qubes/policy.d";
    UnreadableFiles files;
    files.inner.add_file(dir + "/10-a.policy", "svc * work personal deny\n");
    files.inner.add_file(dir + "/20-b.policy", "\n\n!include secret\n");
    files.inner.add_file(dir + "/secret", "svc * work personal deny\n");
    files.inner.add_file(dir + "/sub/x.policy", "");

    files.unreadable = dir + "/10-a.policy";
    EXPECT_EQ(test::load_error(files, LoadOptions{}),
              "cannot read " + dir + "/10-a.policy: Permission denied");
    EXPECT_THROW(load_policy(files, LoadOptions{}), PolicyLoadError);

    files.unreadable = dir + "/secret";
    EXPECT_EQ(test::load_error(files, LoadOptions{}),
              dir + "/20-b.policy:3: cannot read " + dir + "/secret: Permission denied");

    files.unreadable = dir;
    EXPECT_EQ(test::load_error(files, LoadOptions{}),
              "cannot list directory " + dir + ": Permission denied");

    files.unreadable = dir + "/sub";
    files.inner.add_file(dir + "/30-c.policy", "!include-dir sub\n");
    EXPECT_EQ(test::load_error(files, LoadOptions{}),
              dir + "/30-c.policy:1: cannot list directory " + dir + "/sub: Permission denied");
}

TEST(PolicyBadInput, EmptyAndCommentOnlyFiles) {
    EXPECT_EQ(test::parse("").size(), 0u);
    EXPECT_EQ(test::parse("\n\n\r\n").size(), 0u);
    EXPECT_EQ(test::parse("# only\n   # comments").size(), 0u);
}

}  // namespace
}  // namespace aerie::policy

namespace aerie::policy {
namespace {

// Each file includes the next one twice: 2^20 loads if nothing stopped it.
TEST(PolicyBadInput, IncludeFanOutIsBounded) {
    MemoryFiles files;
    const int levels = 20;
    for (int i = 0; i < levels; ++i) {
        std::string next = "/etc/qubes/policy.d/f" + std::to_string(i + 1);
        files.add_file("/etc/qubes/policy.d/f" + std::to_string(i),
                       i + 1 < levels ? "!include " + next + "\n!include " + next + "\n"
                                      : "svc * @anyvm @anyvm deny\n");
    }
    std::string error = test::parse_error("!include f0\n", files);
    EXPECT_NE(error.find("more than 4096 policy files loaded"), std::string::npos) << error;
}

}  // namespace
}  // namespace aerie::policy
