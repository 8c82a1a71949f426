// A log of lines that carry text someone else chose (a qube's service name,
// argument, method; a peer's error): every line escaped and bounded by
// log_safe, and lines per key (the qube the line is about) rate-limited, so
// that no caller can fill a log or drown everyone else's lines. When a key is
// let through again after lines were dropped, one line says how many.
#pragma once

#include <cstddef>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>

#include "base/log_text.hpp"

namespace aerie::base {

struct LimitedLogOptions {
    double per_second = 5;       // lines per key, steady
    double burst = 20;           // lines per key at once
    std::size_t max_bytes = 512; // of one line's text, before the escaping
};

// At most `max_bytes` of `text`, then "...(+N bytes)"; not escaped (a line
// built of clipped fields goes through LimitedLog, which escapes it once).
std::string clip(std::string_view text, std::size_t max_bytes);

class LimitedLog {
public:
    // Lines go to `sink` (without a newline); by default to stderr as "<prefix>: <line>\n".
    explicit LimitedLog(std::string prefix, LimitedLogOptions options = {});

    // Logs `text` if `key` is within its rate. Thread-safe.
    void line(const std::string& key, std::string_view text,
              LogRateLimiter::Clock::time_point now = LogRateLimiter::Clock::now());

    std::function<void(const std::string&)> sink;

private:
    std::string prefix_;
    LimitedLogOptions options_;
    std::mutex mutex_;
    LogRateLimiter limiter_;
};

}  // namespace aerie::base
