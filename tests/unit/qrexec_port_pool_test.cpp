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
    PortPool pool;
    uint32_t taken = 0;
    for (uint32_t source = 10; taken < PortPool::kPorts - PortPool::kDom0Reserve; ++source)
        for (uint32_t i = 0; i < PortPool::kPerQubeCap && taken < PortPool::kPorts - PortPool::kDom0Reserve;
             ++i, ++taken)
            ASSERT_TRUE(pool.allocate(source, source).port);
    auto qube = pool.allocate(99, 99);
    EXPECT_FALSE(qube.port);
    EXPECT_NE(qube.refusal.find("kept for dom0"), std::string::npos) << qube.refusal;
    for (uint32_t i = 0; i < PortPool::kDom0Reserve; ++i) ASSERT_TRUE(pool.allocate(PortPool::kDom0, 0).port) << i;
    EXPECT_FALSE(pool.allocate(PortPool::kDom0, 0).port);
    EXPECT_EQ(pool.in_use(), PortPool::kPorts);
}

TEST(QrexecPortPool, ReleaseOnlyByTheRemoteDomainAndPortsAreReused) {
    PortPool pool;
    auto g = pool.allocate(7, 7);
    ASSERT_TRUE(g.port);
    EXPECT_EQ(*g.port, kFirstDataPort);
    EXPECT_FALSE(pool.release(*g.port, 8));   // another domain's word
    EXPECT_FALSE(pool.release(kLastDataPort + 1, 7));
    EXPECT_TRUE(pool.release(*g.port, 7));
    EXPECT_FALSE(pool.release(*g.port, 7));   // once
    EXPECT_EQ(pool.held_by(7), 0u);
    for (uint32_t i = 0; i < PortPool::kPerQubeCap; ++i) ASSERT_TRUE(pool.allocate(7, 7).port);
    EXPECT_TRUE(pool.release(kFirstDataPort + 3, 7));
    EXPECT_EQ(pool.allocate(7, 7).port, kFirstDataPort + 3);  // back under the cap
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

}  // namespace
}  // namespace aerie::qrexec
