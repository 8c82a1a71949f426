// What a caller sends to qubes.OpenInVM and qubes.OpenURL: Qubes' name
// block byte for byte, hostile names refused, URL lines checked.
#include <gtest/gtest.h>

#include "services/open_request.hpp"

using namespace aerie::services;

namespace {
std::string block(std::string_view name) {
    std::string b(name);
    b.resize(kOpenNameBlockSize, '\0');
    return b;
}
}  // namespace

TEST(OpenNameBlock, EncodedAsQopenInVm) {
    EXPECT_EQ(encode_open_name_block("/home/user/report.pdf", false), block("report.pdf"));
    EXPECT_EQ(encode_open_name_block("report.pdf", true), block("view-only-report.pdf"));
    // A long name keeps its end, within 255 bytes (prefix included).
    std::string longname(300, 'a');
    longname += ".txt";
    EXPECT_EQ(encode_open_name_block("/x/" + longname, false), block(longname.substr(longname.size() - 255)));
    EXPECT_EQ(encode_open_name_block(longname, true),
              block("view-only-" + longname.substr(longname.size() - 245)));
}

TEST(OpenNameBlock, ReadAsQubesReceiver) {
    auto r = parse_open_name_block(block("report.pdf"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->name, "report.pdf");
    EXPECT_FALSE(r->view_only);
    r = parse_open_name_block(block("view-only-a+b@c-d_e.f"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->name, "a+b@c-d_e.f");
    EXPECT_TRUE(r->view_only);
    // Other bytes become '_'; the name ends at the first NUL; the last byte is always the end.
    r = parse_open_name_block(block(std::string("a b\xff$(x)\0/ignored", 17)));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->name, "a_b___x_");
    r = parse_open_name_block(std::string(kOpenNameBlockSize, 'y'));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->name, std::string(kOpenNameBlockSize - 1, 'y'));
    // Round trip of what qopen-in-vm sends.
    r = parse_open_name_block(encode_open_name_block("/a/b/notes.txt", true));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->name, "notes.txt");
    EXPECT_TRUE(r->view_only);
}

TEST(OpenNameBlock, HostileNamesRefused) {
    struct Case {
        std::string block;
        const char* error;
    };
    for (const auto& [sent, expected] : {
             Case{block("../../home/user/.bashrc"), "the file name contains '/'"},
             Case{block("view-only-/etc/passwd"), "the file name contains '/'"},
             Case{block("a/b"), "the file name contains '/'"},
             Case{block(".."), "the file name is '.' or '..'"},
             Case{block("view-only-.."), "the file name is '.' or '..'"},
             Case{block("."), "the file name is '.' or '..'"},
             Case{block(""), "the file name is empty"},
             Case{block("view-only-"), "the file name is empty"},
             Case{std::string(255, 'a'), "the file name block is not 256 bytes"},
             Case{std::string(257, 'a'), "the file name block is not 256 bytes"},
         }) {
        std::string error;
        EXPECT_EQ(parse_open_name_block(sent, &error), std::nullopt) << sent;
        EXPECT_EQ(error, expected) << sent;
    }
}

TEST(OpenUrlLine, Accepted) {
    EXPECT_EQ(parse_open_url_line("https://example.org/a?b=1&c"), "https://example.org/a?b=1&c");
    EXPECT_EQ(parse_open_url_line(" \thttp://x/ y \t"), "http://x/ y");
    EXPECT_EQ(parse_open_url_line("ftp://h/f"), "ftp://h/f");
    EXPECT_EQ(parse_open_url_line("http://" + std::string(kMaxUrlLine - 7, 'a')),
              "http://" + std::string(kMaxUrlLine - 7, 'a'));
}

TEST(OpenUrlLine, Refused) {
    struct Case {
        std::string line;
        const char* error;
    };
    for (const auto& [line, expected] : {
             Case{"file:///etc/passwd", "Invalid URL: only http://, https:// and ftp:// URLs are opened"},
             Case{"javascript:alert(1)", "Invalid URL: only http://, https:// and ftp:// URLs are opened"},
             Case{"HTTP://x", "Invalid URL: only http://, https:// and ftp:// URLs are opened"},
             Case{"", "Invalid URL: only http://, https:// and ftp:// URLs are opened"},
             Case{"http://a\x1b[2J", "Invalid URL: it contains a control character"},
             Case{std::string("http://a\0b", 10), "Invalid URL: it contains a control character"},
             Case{"http://a\rb", "Invalid URL: it contains a control character"},
             Case{"http://a\x7f", "Invalid URL: it contains a control character"},
             Case{"http://" + std::string(kMaxUrlLine, 'a'), "Invalid URL: longer than 65536 bytes"},
         }) {
        std::string error;
        EXPECT_EQ(parse_open_url_line(line, &error), std::nullopt) << line;
        EXPECT_EQ(error, expected) << line;
    }
}

TEST(OpenSource, Names) {
    EXPECT_TRUE(usable_source_name("work"));
    EXPECT_TRUE(usable_source_name("disp123"));
    for (const char* bad : {"", ".", "..", "a/b", "/"}) EXPECT_FALSE(usable_source_name(bad)) << bad;
}
