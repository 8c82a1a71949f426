// Untrusted text on its way into a log: one line, printable, bounded. A
// qube chooses service names, arguments and console output; none of it may
// forge log lines, carry terminal escapes or grow a log without bound.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>

namespace aerie::base {

// Printable ASCII kept (backslash doubled); every other byte as \xNN; at most
// `max_bytes` of the input shown, then "...(+N bytes)".
std::string log_safe(std::string_view text, std::size_t max_bytes = 256);

// A per-key token bucket for log lines: `burst` lines at once, then `per_second`.
// allow() says whether this line may be written; when a key is allowed again
// after refusals, take_suppressed() tells how many were dropped in between
// (to log once: "N similar messages suppressed"). Keys are bounded: past
// `max_keys` the oldest-refilled buckets are forgotten.
class LogRateLimiter {
public:
    using Clock = std::chrono::steady_clock;
    LogRateLimiter(double per_second, double burst, std::size_t max_keys = 1024)
        : per_second_(per_second), burst_(burst), max_keys_(max_keys) {}
    bool allow(const std::string& key, Clock::time_point now = Clock::now());
    uint64_t take_suppressed(const std::string& key);

private:
    struct Bucket {
        double tokens = 0;
        Clock::time_point last{};
        uint64_t suppressed = 0;
    };
    double per_second_, burst_;
    std::size_t max_keys_;
    std::map<std::string, Bucket> buckets_;
};

}  // namespace aerie::base
