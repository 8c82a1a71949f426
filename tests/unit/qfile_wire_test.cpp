// The qfile wire format pinned byte for byte: a stream written out by hand
// from Qubes' format (file header fields, little-endian; the name with its
// NUL; directories sent twice; the end marker) and the receiver's answer.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "qfile/crc32.hpp"
#include "qfile/packer.hpp"
#include "qfile_test_support.hpp"

using namespace aerie::qfile;
using namespace aerie::qfile::test;

namespace {

// clang-format off
// A file "a" ("hi\n", 0644), a directory "d" (0755) holding a symlink "d/l"
// to "x", then "d" again, then the end; every entry with atime
// 1000000000.000000005 and mtime 1234567890.999999999.
const std::string kGolden = hex_bytes(
    // namelen 2  | mode 0100644 | filelen 3               | atime      | atime_nsec | mtime      | mtime_nsec
    "02 00 00 00  a4 81 00 00  03 00 00 00 00 00 00 00  00 ca 9a 3b  05 00 00 00  d2 02 96 49  ff c9 9a 3b"
    "61 00"     // "a\0"
    "68 69 0a"  // "hi\n"
    // namelen 2  | mode 040755  | filelen 0
    "02 00 00 00  ed 41 00 00  00 00 00 00 00 00 00 00  00 ca 9a 3b  05 00 00 00  d2 02 96 49  ff c9 9a 3b"
    "64 00"  // "d\0"
    // namelen 4  | mode 0120777 | filelen 1 (the target, no NUL)
    "04 00 00 00  ff a1 00 00  01 00 00 00 00 00 00 00  00 ca 9a 3b  05 00 00 00  d2 02 96 49  ff c9 9a 3b"
    "64 2f 6c 00"  // "d/l\0"
    "78"           // "x"
    "02 00 00 00  ed 41 00 00  00 00 00 00 00 00 00 00  00 ca 9a 3b  05 00 00 00  d2 02 96 49  ff c9 9a 3b"
    "64 00"
    // the end marker: a header of zeroes
    "00 00 00 00  00 00 00 00  00 00 00 00 00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00  00 00 00 00");

// error 0 | padding | CRC-32 of all 174 bytes above (64-bit) | last name length 1 | "d"
const std::string kGoldenAnswer = hex_bytes("00 00 00 00  00 00 00 00  8e 57 99 6f 00 00 00 00  01 00 00 00  64");
// clang-format on

TEST(QfileWire, HeaderFieldsAreLittleEndianAtFixedOffsets) {
    FileHeader h{0x04030201, 0x08070605, 0x100f0e0d0c0b0a09ull, 0x14131211, 0x18171615,
                 0x1c1b1a19, 0x201f1e1d};
    auto b = encode_file_header(h);
    for (std::size_t i = 0; i < b.size(); ++i) EXPECT_EQ(b[i], i + 1) << "byte " << i;
    EXPECT_EQ(decode_file_header(b), h);
}

TEST(QfileWire, ResultHeaderHasPaddingAndA64BitChecksum) {
    EXPECT_EQ(encode_result(17, 0xdeadbeef, std::string("ab")),
              hex_bytes("11 00 00 00 00 00 00 00 ef be ad de 00 00 00 00 02 00 00 00 61 62"));
    EXPECT_EQ(encode_result(36, 1, std::nullopt),
              hex_bytes("24 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00"));
}

TEST(QfileWire, ChecksumIsGzipCrc32) {
    Crc32 c;
    c.update("123456789", 9);
    EXPECT_EQ(c.value(), 0xcbf43926u);
    Crc32 golden;
    golden.update(kGolden.data(), kGolden.size());
    EXPECT_EQ(golden.value(), 0x6f99578eu);
}

TEST(QfileWire, ReceiverCreatesTheGoldenTreeAndAnswersItsBytes) {
    Sandbox box;
    auto r = receive(box.root / "in", kGolden);
    EXPECT_EQ(r.answer, kGoldenAnswer);
    EXPECT_EQ(r.result.error_code, 0u);
    struct stat st {};
    ASSERT_EQ(::stat((box.root / "in" / "a").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode, 0100644u);
    EXPECT_EQ(st.st_mtim.tv_sec, 1234567890);
    EXPECT_EQ(st.st_mtim.tv_nsec, 999999999);
    EXPECT_EQ(st.st_atim.tv_sec, 1000000000);
    EXPECT_EQ(st.st_atim.tv_nsec, 5);
    ASSERT_EQ(::lstat((box.root / "in" / "d").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode, 040755u);
    EXPECT_EQ(st.st_mtim.tv_sec, 1234567890);
    EXPECT_EQ(fs::read_symlink(box.root / "in" / "d" / "l"), "x");
    std::ifstream a(box.root / "in" / "a");
    std::string content((std::istreambuf_iterator<char>(a)), {});
    EXPECT_EQ(content, "hi\n");
}

// The sender writes the golden stream for the same tree, and accepts the
// golden answer.
TEST(QfileWire, SenderWritesTheGoldenStream) {
    ::signal(SIGPIPE, SIG_IGN);  // as qfile-agent does
    Sandbox box;
    fs::path src = box.root / "src";
    fs::create_directories(src / "d");
    std::ofstream(src / "a") << "hi\n";
    fs::create_symlink("x", src / "d" / "l");
    ::chmod((src / "a").c_str(), 0644);
    ::chmod((src / "d").c_str(), 0755);
    const timespec times[2] = {{1000000000, 5}, {1234567890, 999999999}};
    for (const char* p : {"a", "d/l", "d"})
        ASSERT_EQ(::utimensat(AT_FDCWD, (src / p).c_str(), times, AT_SYMLINK_NOFOLLOW), 0) << p;

    int to_receiver[2], to_sender[2];
    ASSERT_EQ(::pipe(to_receiver), 0);
    ASSERT_EQ(::pipe(to_sender), 0);
    std::string seen;
    std::thread receiver([&] {
        char buf[4096];
        while (seen.size() < kGolden.size()) {
            ssize_t n = ::read(to_receiver[0], buf, sizeof buf);
            if (n <= 0) break;
            seen.append(buf, static_cast<std::size_t>(n));
        }
        (void)!::write(to_sender[1], kGoldenAnswer.data(), kGoldenAnswer.size());
        ::close(to_sender[1]);
    });
    Packer packer(to_receiver[1], to_sender[0]);
    EXPECT_NO_THROW({
        packer.send((src / "a").string(), false);
        packer.send((src / "d").string() + "/", false);
        packer.finish();
    });
    receiver.join();
    ::close(to_receiver[0]);
    ::close(to_receiver[1]);
    ::close(to_sender[0]);
    EXPECT_EQ(seen, kGolden);
}

TEST(QfileWire, SenderRefusesAnAnswerWithAnotherChecksum) {
    ::signal(SIGPIPE, SIG_IGN);
    int to_receiver[2], to_sender[2];
    ASSERT_EQ(::pipe(to_receiver), 0);
    ASSERT_EQ(::pipe(to_sender), 0);
    std::string bad = encode_result(0, 12345, std::string(""));
    std::thread receiver([&] {
        char buf[64];
        std::size_t got = 0;
        while (got < kFileHeaderSize) {
            ssize_t n = ::read(to_receiver[0], buf, sizeof buf);
            if (n <= 0) break;
            got += static_cast<std::size_t>(n);
        }
        (void)!::write(to_sender[1], bad.data(), bad.size());
    });
    Packer packer(to_receiver[1], to_sender[0]);
    try {
        packer.finish();
        ADD_FAILURE() << "accepted a wrong checksum";
    } catch (const PackError& e) {
        EXPECT_STREQ(e.what(), "File transfer failed: checksum mismatch");
    }
    receiver.join();
    for (int fd : {to_receiver[0], to_receiver[1], to_sender[0], to_sender[1]}) ::close(fd);
}

TEST(QfileWire, SenderShowsTheReceiversErrorsAsQubesDoes) {
    EXPECT_EQ(describe_result(EEXIST, "a", true), "A file named \"a\" already exists in QubesIncoming dir");
    EXPECT_EQ(describe_result(EINVAL, "x\"\n", true),
              "File copy: Corrupted data from packer; Last file: \"x__\"");
    EXPECT_EQ(describe_result(EINVAL, "", false), "File copy: Corrupted data from packer\"\"");
    EXPECT_EQ(describe_result(EILSEQ, "../a", true),
              "Forbidden character in file or link target. Name might look somewhat like \"../a\"");
    EXPECT_EQ(describe_result(ENOLINK, "/etc", true),
              "Cannot verify that link at \"/etc\" would not be broken by copy");
    EXPECT_EQ(describe_result(EDQUOT, "big", true), "File copy: \"Disk quota exceeded; Last file: big\"");
}

}  // namespace
