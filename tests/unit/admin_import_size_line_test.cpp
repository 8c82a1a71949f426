// ImportWithSize's first line, read as qubesd-query --single-line
// --max-bytes=21 reads it.
#include <gtest/gtest.h>

#include <string>

#include "admin/import_size_line.hpp"

namespace aerie::admin {
namespace {

// Feeds `input` until the reader stops; the state, and the bytes it took.
std::pair<SizeLineReader, size_t> read(const std::string& input) {
    SizeLineReader reader;
    size_t used = 0;
    while (used < input.size() && reader.state() == SizeLineReader::State::More)
        reader.feed(static_cast<unsigned char>(input[used++]));
    if (used == input.size()) reader.end_of_input();
    return {reader, used};
}

TEST(SizeLineReader, TakesTheLineAndNothingAfterIt) {
    auto [reader, used] = read("67108864\n\x01\x02 data");
    EXPECT_EQ(reader.state(), SizeLineReader::State::Done);
    EXPECT_EQ(reader.line(), "67108864");
    EXPECT_EQ(used, 9u);
    // The newline may be the 21st byte, no later.
    EXPECT_EQ(read(std::string(20, '1') + "\n").first.line(), std::string(20, '1'));
    auto [long_line, long_used] = read(std::string(21, '1') + "\n");
    EXPECT_EQ(long_line.state(), SizeLineReader::State::Bad);
    EXPECT_EQ(long_line.error(), "No newline found in first 21 bytes");
    EXPECT_EQ(long_used, 21u);
}

TEST(SizeLineReader, RefusesWhatQubesdQueryRefuses) {
    EXPECT_EQ(read("12").first.error(), "End of input without a newline");
    EXPECT_EQ(read("").first.error(), "End of input without a newline");
    EXPECT_EQ(read("1\t2\n").first.error(), "Invalid byte 9 in input");
    EXPECT_EQ(read("1\x80\n").first.error(), "Invalid byte 128 in input");
    EXPECT_EQ(read("\r\n").first.error(), "Invalid byte 13 in input");
    // Anything printable passes here: aeried checks the number.
    EXPECT_EQ(read("12x\n").first.line(), "12x");
    EXPECT_EQ(read("\n").first.line(), "");
}

}  // namespace
}  // namespace aerie::admin
