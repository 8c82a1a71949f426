// qubes.VMExec's argument: Qubes' encoding decoded byte for byte, hostile
// encodings refused with what was wrong, and the command checks.
#include <gtest/gtest.h>

#include "services/vmexec_args.hpp"

using aerie::services::decode_vmexec_argument;
using aerie::services::encode_vmexec_argument;
using aerie::services::kMaxVmexecWords;
using aerie::services::vmexec_command;
using Words = std::vector<std::string>;

TEST(VmexecDecode, PlainWordsAndEscapes) {
    EXPECT_EQ(decode_vmexec_argument("ls+-2Ftmp"), (Words{"ls", "/tmp"}));
    EXPECT_EQ(decode_vmexec_argument("a--b+--x"), (Words{"a-b", "-x"}));
    EXPECT_EQ(decode_vmexec_argument("-20-7E-FF-00"), (Words{std::string(" ~\xff\0", 4)}));
    EXPECT_EQ(decode_vmexec_argument("Az09_."), (Words{"Az09_."}));
}

TEST(VmexecDecode, EmptyWordsAreKeptAsQubesDoes) {
    EXPECT_EQ(decode_vmexec_argument("a++b"), (Words{"a", "", "b"}));
    EXPECT_EQ(decode_vmexec_argument("+"), (Words{"", ""}));
    EXPECT_EQ(decode_vmexec_argument(""), (Words{""}));
    EXPECT_EQ(decode_vmexec_argument("a+"), (Words{"a", ""}));
}

TEST(VmexecDecode, EscapeScanningFollowsQubes) {
    // "---41": "--" is '-', then "-41" is 'A'.
    EXPECT_EQ(decode_vmexec_argument("---41"), (Words{"-A"}));
    // "-4--": "-4-" is no escape.
    std::string error;
    EXPECT_EQ(decode_vmexec_argument("-4--", &error), std::nullopt);
    EXPECT_EQ(error, "bad escape at offset 0: '-' can be used only in '-HH' (upper-case hex) or '--'");
}

TEST(VmexecDecode, BadEscapesAreRefused) {
    for (const char* bad : {"-", "a-", "-4", "-4g", "-4a", "-ab", "x-G0", "---", "a+-"}) {
        std::string error;
        EXPECT_EQ(decode_vmexec_argument(bad, &error), std::nullopt) << bad;
        EXPECT_NE(error.find("bad escape at offset "), std::string::npos) << bad << ": " << error;
    }
}

TEST(VmexecDecode, IllegalCharactersAreNamed) {
    std::string error;
    EXPECT_EQ(decode_vmexec_argument("ls /", &error), std::nullopt);
    EXPECT_EQ(error, "illegal character byte 0x20 at offset 2 (allowed: A-Z a-z 0-9 _ . - +)");
    EXPECT_EQ(decode_vmexec_argument("a/b", &error), std::nullopt);
    EXPECT_EQ(error, "illegal character '/' at offset 1 (allowed: A-Z a-z 0-9 _ . - +)");
    EXPECT_EQ(decode_vmexec_argument(std::string("a\0b", 3), &error), std::nullopt);
    EXPECT_EQ(error, "illegal character byte 0x00 at offset 1 (allowed: A-Z a-z 0-9 _ . - +)");
    EXPECT_EQ(decode_vmexec_argument("\xc3\xbc", &error), std::nullopt);
    EXPECT_EQ(error, "illegal character byte 0xc3 at offset 0 (allowed: A-Z a-z 0-9 _ . - +)");
}

TEST(VmexecDecode, TooManyWords) {
    std::string error;
    EXPECT_TRUE(decode_vmexec_argument(std::string(kMaxVmexecWords - 1, '+')));
    EXPECT_EQ(decode_vmexec_argument(std::string(kMaxVmexecWords, '+'), &error), std::nullopt);
    EXPECT_EQ(error, "more than 4096 words");
}

// The output of qubesadmin's encode_for_vmexec for these words (computed with it).
TEST(VmexecEncode, AsQubesadmin) {
    EXPECT_EQ(encode_vmexec_argument({"printf", "%s|", "a b", "-x", "\xc3\xbc", ""}),
              "printf+-25s-7C+a-20b+--x+-C3-BC+");
    EXPECT_EQ(encode_vmexec_argument({"ls", "/tmp/a_b.c"}), "ls+-2Ftmp-2Fa_b.c");
}

TEST(VmexecEncode, RoundTripsEveryByte) {
    std::string all;
    for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
    Words words{"prog", all, "", "+-"};
    EXPECT_EQ(decode_vmexec_argument(encode_vmexec_argument(words)), words);
}

TEST(VmexecCommand, TheCommandAsDecoded) {
    EXPECT_EQ(vmexec_command("ls+-2E-2E+-2Fetc-2F..-2Fetc"), (Words{"ls", "..", "/etc/../etc"}));
    EXPECT_EQ(vmexec_command("-2Fbin-2Ftrue"), (Words{"/bin/true"}));
    EXPECT_EQ(vmexec_command("-2E-2Frun"), (Words{"./run"}));
    EXPECT_EQ(vmexec_command("printf+a++b"), (Words{"printf", "a", "", "b"}));
}

TEST(VmexecCommand, RefusedWithTheReason) {
    struct Case {
        const char* argument;
        const char* error;
    };
    for (auto [argument, expected] : {
             Case{"", "no command given (the service argument is empty)"},
             Case{"+ls", "the program name is empty"},
             Case{"..", "the program path has a '..' component"},
             Case{"-2E-2E-2Fbin-2Fsh", "the program path has a '..' component"},
             Case{"bin-2F..-2Fsh", "the program path has a '..' component"},
             Case{"-2Fbin-2F..", "the program path has a '..' component"},
             Case{".", "the program name is '.'"},
             Case{"ls+a-00b", "word 1 contains a NUL byte"},
             Case{"l-00s", "word 0 contains a NUL byte"},
             Case{"ls+a-",
                  "decode error: bad escape at offset 4: '-' can be used only in '-HH' (upper-case hex) or "
                  "'--'"},
             Case{"ls%20", "decode error: illegal character '%' at offset 2 (allowed: A-Z a-z 0-9 _ . - +)"},
         }) {
        std::string error;
        EXPECT_EQ(vmexec_command(argument, &error), std::nullopt) << argument;
        EXPECT_EQ(error, expected) << argument;
    }
}
