#include "admin/import_size_line.hpp"

namespace aerie::admin {

SizeLineReader::State SizeLineReader::fail(std::string message) {
    error_ = std::move(message);
    line_.clear();
    return state_ = State::Bad;
}

SizeLineReader::State SizeLineReader::feed(unsigned char c) {
    if (state_ != State::More) return state_;
    ++seen_;
    if (c == '\n') return state_ = State::Done;
    if (c < 0x20 || c > 0x7e) return fail("Invalid byte " + std::to_string(c) + " in input");
    if (seen_ >= kMaxBytes) return fail("No newline found in first " + std::to_string(kMaxBytes) + " bytes");
    line_ += static_cast<char>(c);
    return state_;
}

SizeLineReader::State SizeLineReader::end_of_input() {
    if (state_ != State::More) return state_;
    return fail("End of input without a newline");
}

}  // namespace aerie::admin
