#include <gtest/gtest.h>

#include "base/log_text.hpp"

using namespace aerie::base;

TEST(LogSafe, KeepsPrintableAndEscapesTheRest) {
    EXPECT_EQ(log_safe("qubes.Filecopy+a b"), "qubes.Filecopy+a b");
    EXPECT_EQ(log_safe(std::string("a\nb\x1b[2J\\\x00", 9)), "a\\x0ab\\x1b[2J\\\\\\x00");
    EXPECT_EQ(log_safe("\xff"), "\\xff");
}

TEST(LogSafe, Truncates) {
    std::string big(60000, 'A');
    EXPECT_EQ(log_safe(big, 4), "AAAA...(+59996 bytes)");
    EXPECT_LE(log_safe(big).size(), 256u + 20u);
}

TEST(LogRateLimiter, BurstThenRate) {
    LogRateLimiter limiter(2.0, 5.0);
    auto t0 = LogRateLimiter::Clock::time_point{} + std::chrono::hours(1);
    int allowed = 0;
    for (int i = 0; i < 200; ++i) allowed += limiter.allow("work", t0);
    EXPECT_EQ(allowed, 5);
    EXPECT_EQ(limiter.take_suppressed("work"), 195u);
    EXPECT_EQ(limiter.take_suppressed("work"), 0u);
    EXPECT_TRUE(limiter.allow("other", t0));  // per key
    EXPECT_TRUE(limiter.allow("work", t0 + std::chrono::milliseconds(600)));
    EXPECT_FALSE(limiter.allow("work", t0 + std::chrono::milliseconds(600)));
}

TEST(LogRateLimiter, KeysAreBounded) {
    LogRateLimiter limiter(1.0, 1.0, 4);
    auto t = LogRateLimiter::Clock::now();
    for (int i = 0; i < 100; ++i) EXPECT_TRUE(limiter.allow("k" + std::to_string(i), t));
}
