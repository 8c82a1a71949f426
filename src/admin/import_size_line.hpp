// The line admin.vm.volume.ImportWithSize reads first from its caller's
// stdin, as Qubes' qubesd-query --single-line --max-bytes=21 does: printable
// ASCII up to a newline, which must come within the first 21 bytes. The
// volume's data follows on the same stream, so it is read a byte at a time:
// each byte is fed until the state is Done or Bad. (aeried checks the size
// itself: digits, no leading zero, at most 19.)
#pragma once

#include <string>

namespace aerie::admin {

class SizeLineReader {
public:
    static constexpr size_t kMaxBytes = 21;
    enum class State { More, Done, Bad };

    State feed(unsigned char c);
    State end_of_input();  // the stream ended: Bad unless Done before
    State state() const { return state_; }
    const std::string& line() const { return line_; }    // Done: without the newline
    const std::string& error() const { return error_; }  // Bad: qubesd-query's message

private:
    State fail(std::string message);

    State state_ = State::More;
    size_t seen_ = 0;
    std::string line_, error_;
};

}  // namespace aerie::admin
