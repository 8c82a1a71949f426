// Data ports shared fairly: one qube cannot take them all, dom0 keeps a reserve.
#include <gtest/gtest.h>

#include "qrexec/port_pool.hpp"

namespace aerie::qrexec {
namespace {

TEST(QrexecPortPool, OneQubeStopsAtItsCapAndOthersStillGetPorts) {
    PortPool pool;
    for (uint32_t i = 0; i < PortPool::kPerQubeCap; ++i) ASSERT_TRUE(pool.allocate(5, 5).port) << i;
    auto over = pool.allocate(5, 5);
    EXPECT_FALSE(over.port);
    EXPECT_NE(over.refusal.find("already holds 64 data ports"), std::string::npos) << over.refusal;
    EXPECT_TRUE(pool.allocate(6, 6).port);
    EXPECT_TRUE(pool.allocate(PortPool::kDom0, 0).port);
    EXPECT_EQ(pool.held_by(5), PortPool::kPerQubeCap);
}

TEST(QrexecPortPool, Dom0KeepsItsReserveWhenQubesTookTheRest) {
    PortPool pool(50);
    uint32_t taken = 0;
    // Qubes below and above this one (50): each half of the ports fills.
    for (uint32_t source : {10u, 11u, 90u, 91u})
        for (uint32_t i = 0; i < (PortPool::kPorts - PortPool::kDom0Reserve) / 4; ++i, ++taken)
            ASSERT_TRUE(pool.allocate(source, source).port) << source << " " << i;
    EXPECT_FALSE(pool.allocate(12, 12).port);
    auto qube = pool.allocate(99, 99);
    EXPECT_FALSE(qube.port);
    EXPECT_NE(qube.refusal.find("kept for dom0"), std::string::npos) << qube.refusal;
    for (uint32_t i = 0; i < PortPool::kDom0Reserve; ++i) ASSERT_TRUE(pool.allocate(PortPool::kDom0, 0).port) << i;
    EXPECT_FALSE(pool.allocate(PortPool::kDom0, 0).port);
    EXPECT_EQ(pool.in_use(), PortPool::kPorts);
}

TEST(QrexecPortPool, ReleaseOnlyByTheRemoteDomainAndPortsAreReused) {
    PortPool pool(50);
    auto g = pool.allocate(7, 7);
    ASSERT_TRUE(g.port);
    EXPECT_EQ(*g.port, kFirstDataPort);
    EXPECT_FALSE(pool.release(*g.port, 8));   // another domain's word
    EXPECT_FALSE(pool.release(kLastDataPort + 1, 7));
    EXPECT_TRUE(pool.release(*g.port, 7));
    EXPECT_FALSE(pool.release(*g.port, 7));   // once
    EXPECT_EQ(pool.held_by(7), 0u);
    for (uint32_t i = 0; i < PortPool::kPerQubeCap; ++i) ASSERT_TRUE(pool.allocate(7, 7).port);
    EXPECT_TRUE(pool.release(kFirstDataPort + 6, 7));
    EXPECT_EQ(pool.allocate(7, 7).port, kFirstDataPort + 6);  // back under the cap
}

TEST(QrexecPortPool, ForgetFreesAPortWhoeverHoldsIt) {
    PortPool pool;
    auto g = pool.allocate(7, 9);
    ASSERT_TRUE(g.port);
    pool.forget(*g.port);
    EXPECT_EQ(pool.held_by(7), 0u);
    EXPECT_EQ(pool.in_use(), 0u);
    pool.forget(*g.port);  // nothing held: no change
    EXPECT_EQ(pool.in_use(), 0u);
}

// As Qubes: calls between two qubes take ports from the half that the other
// qube's daemon never gives (the lower domain's daemon gives 514, 516, ...;
// the higher one's 513, 515, ...); calls with dom0 take any port.
TEST(QrexecPortPool, PortsForAnotherQubeComeFromItsHalf) {
    PortPool pool(42);
    EXPECT_EQ(pool.allocate(43, 43).port, 514u);
    EXPECT_EQ(pool.allocate(44, 44).port, 516u);
    EXPECT_EQ(pool.allocate(41, 41).port, 513u);
    EXPECT_EQ(pool.allocate(7, 7).port, 515u);
    EXPECT_EQ(pool.allocate(PortPool::kDom0, 0).port, 517u);
    EXPECT_EQ(pool.allocate(PortPool::kDom0, 0).port, 518u);
    EXPECT_TRUE(pool.release(514, 43));
    EXPECT_EQ(pool.allocate(44, 44).port, 514u);  // freed, and of that half
    EXPECT_EQ(pool.allocate(40, 40).port, 519u);
}

}  // namespace
}  // namespace aerie::qrexec
