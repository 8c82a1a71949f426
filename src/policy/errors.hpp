// Errors raised by the policy engine: a syntax error in the policy files
// (always carries FILE:LINE), and a denial of one request (carries the reason).
#pragma once

#include <stdexcept>
#include <string>

namespace aerie::policy {

// A policy that does not parse. what() is "FILE:LINE: message", the form Qubes
// logs; file()/line()/message() give the parts to tools such as the linter.
class PolicySyntaxError : public std::runtime_error {
public:
    PolicySyntaxError(std::string file, long line, std::string message)
        : std::runtime_error(file + ":" + std::to_string(line) + ": " + message),
          file_(std::move(file)), line_(line), message_(std::move(message)) {}

    const std::string& file() const { return file_; }
    long line() const { return line_; }
    const std::string& message() const { return message_; }

private:
    std::string file_;
    long line_;
    std::string message_;
};

// The policy as a whole cannot be used (unreadable directory, invalid file name).
// Like a syntax error, it makes every evaluation deny.
class PolicyLoadError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// A syntax problem in one token or field, before file and line are known.
// The loader rethrows it as PolicySyntaxError with the location.
class TokenError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

}  // namespace aerie::policy
