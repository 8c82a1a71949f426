// The qubes' budget and the size defaults, from a host's facts: the host
// keeps a reserve of tasks, memory and CPU; defaults fit a usual set of
// qubes. Pure; no root needed.
#include <gtest/gtest.h>

#include "backend/host_budget.hpp"

using namespace aerie::backend;

namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;

// The machine these tests were written on: 2 CPUs, 23.5 GiB, pid_max 32768.
HostFacts small_server() {
    return {2, 24683744ull * 1024, 32768, 192734};
}

}  // namespace

TEST(BackendHostBudget, TwoQubesCanNoLongerTakeEveryTask) {
    auto b = qubes_budget(small_server());
    EXPECT_EQ(b.pids_max, 32768u - 8192u);  // a quarter stays the host's
    EXPECT_EQ(b.qube_pids_max, b.pids_max / 8);
    EXPECT_LT(2 * b.qube_pids_max, b.pids_max);  // two bombing qubes leave room for others
    // threads-max bounds when it is the lower one, and the reserve is at least 4096.
    auto t = qubes_budget({2, 8 * kGiB, 4194304, 12000});
    EXPECT_EQ(t.pids_max, 12000u - 4096u);
    EXPECT_EQ(t.qube_pids_max, 988u);
    // A big host: one qube still gets no more than 16384.
    EXPECT_EQ(qubes_budget({64, 512 * kGiB, 4194304, 4000000}).qube_pids_max, 16384u);
}

TEST(BackendHostBudget, MemoryAndCpuKeepAReserve) {
    auto b = qubes_budget(small_server());
    uint64_t total = 24683744ull * 1024;
    EXPECT_EQ(b.memory_bytes, total - total / 8);
    EXPECT_EQ(qubes_budget({2, 4 * kGiB, 32768, 30000}).memory_bytes, 3 * kGiB);     // at least 1 GiB kept
    EXPECT_EQ(qubes_budget({2, 64 * kGiB, 32768, 30000}).memory_bytes, 60 * kGiB);   // at most 4 GiB kept
    EXPECT_EQ(qubes_budget({1, 1 * kGiB, 32768, 30000}).memory_bytes, kGiB / 2);     // at most half
    EXPECT_EQ(b.cpu_quota_milli, 1500u);                                             // half a CPU kept
    EXPECT_EQ(qubes_budget({16, 64 * kGiB, 32768, 30000}).cpu_quota_milli, 14000u);  // an eighth kept
    EXPECT_EQ(qubes_budget({1, 64 * kGiB, 32768, 30000}).cpu_quota_milli, 500u);
    EXPECT_LT(b.cpu_weight, 100u);  // below the host's own groups
}

TEST(BackendHostBudget, UnknownFactsLimitNothing) {
    auto b = qubes_budget({});
    EXPECT_EQ(b.pids_max, 0u);
    EXPECT_EQ(b.memory_bytes, 0u);
    EXPECT_EQ(b.cpu_quota_milli, 0u);
    auto d = qube_size_defaults({});
    EXPECT_EQ(d.memory_mib, 400);  // Qubes' own
    EXPECT_EQ(d.maxmem_mib, 4000);
    EXPECT_EQ(d.vcpus, 2);
}

TEST(BackendHostBudget, SizeDefaultsFitTheHost) {
    auto host = small_server();
    auto d = qube_size_defaults(host);
    EXPECT_EQ(d.memory_mib, 400);
    EXPECT_EQ(d.maxmem_mib, 3500);  // 6 x 4000 MiB would not fit in 23.5 GiB
    EXPECT_EQ(d.vcpus, 1);          // 2 would be every CPU of the host
    uint64_t qubes = qubes_budget(host).memory_bytes;
    EXPECT_LE(static_cast<uint64_t>(d.maxmem_mib) * kMiB * kTypicalQubes, qubes);
    EXPECT_LE(static_cast<uint64_t>(d.memory_mib) * kMiB * kTypicalQubes, qubes);

    auto big = qube_size_defaults({16, 64 * kGiB, 4194304, 500000});
    EXPECT_EQ(big.memory_mib, 400);
    EXPECT_EQ(big.maxmem_mib, 4000);
    EXPECT_EQ(big.vcpus, 2);
    auto one = qube_size_defaults({1, 2 * kGiB, 32768, 15000});
    EXPECT_EQ(one.vcpus, 1);  // a qube needs one; the parent's quota keeps half for the host
    EXPECT_EQ(one.memory_mib, 100);
    EXPECT_EQ(one.maxmem_mib, 100);
}
