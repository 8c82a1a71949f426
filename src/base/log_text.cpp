#include "base/log_text.hpp"

#include <algorithm>

#include <fmt/format.h>

namespace aerie::base {

std::string log_safe(std::string_view text, std::size_t max_bytes) {
    std::size_t shown = std::min(text.size(), max_bytes);
    std::string out;
    out.reserve(shown + 16);
    for (std::size_t i = 0; i < shown; ++i) {
        auto c = static_cast<unsigned char>(text[i]);
        if (c == '\\')
            out += "\\\\";
        else if (c >= 0x20 && c < 0x7f)
            out += static_cast<char>(c);
        else
            out += fmt::format("\\x{:02x}", c);
    }
    if (shown < text.size()) out += fmt::format("...(+{} bytes)", text.size() - shown);
    return out;
}

bool LogRateLimiter::allow(const std::string& key, Clock::time_point now) {
    auto it = buckets_.find(key);
    if (it == buckets_.end()) {
        if (buckets_.size() >= max_keys_) {
            auto oldest = std::min_element(buckets_.begin(), buckets_.end(),
                                           [](const auto& a, const auto& b) { return a.second.last < b.second.last; });
            buckets_.erase(oldest);
        }
        it = buckets_.emplace(key, Bucket{burst_, now, 0}).first;
    }
    Bucket& b = it->second;
    double elapsed = std::chrono::duration<double>(now - b.last).count();
    b.tokens = std::min(burst_, b.tokens + std::max(0.0, elapsed) * per_second_);
    b.last = now;
    if (b.tokens >= 1.0) {
        b.tokens -= 1.0;
        return true;
    }
    ++b.suppressed;
    return false;
}

uint64_t LogRateLimiter::take_suppressed(const std::string& key) {
    auto it = buckets_.find(key);
    if (it == buckets_.end()) return 0;
    uint64_t n = it->second.suppressed;
    it->second.suppressed = 0;
    return n;
}

}  // namespace aerie::base
