#include "base/limited_log.hpp"

#include <cstdio>

#include <fmt/format.h>

namespace aerie::base {

std::string clip(std::string_view text, std::size_t max_bytes) {
    if (text.size() <= max_bytes) return std::string(text);
    return fmt::format("{}...(+{} bytes)", text.substr(0, max_bytes), text.size() - max_bytes);
}

LimitedLog::LimitedLog(std::string prefix, LimitedLogOptions options)
    : prefix_(std::move(prefix)), options_(options), limiter_(options.per_second, options.burst) {
    sink = [this](const std::string& line) {
        std::string out = prefix_ + ": " + line + "\n";
        std::fwrite(out.data(), 1, out.size(), stderr);
        std::fflush(stderr);
    };
}

void LimitedLog::line(const std::string& key, std::string_view text, LogRateLimiter::Clock::time_point now) {
    uint64_t suppressed = 0;
    {
        std::lock_guard lock(mutex_);
        if (!limiter_.allow(key, now)) return;
        suppressed = limiter_.take_suppressed(key);
    }
    if (suppressed > 0)
        sink(fmt::format("{} similar messages suppressed (about {})", suppressed, log_safe(key, 64)));
    sink(log_safe(text, options_.max_bytes));
}

}  // namespace aerie::base
