// Qube cgroups on this machine's hierarchies: v1 (or v2) limits as the
// daemon's layout gives them, and the v2 core features (freeze, kill) on any
// cgroup2 mount, even one without controllers (the v1-hybrid case). Needs root.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include "backend/ns/cgroup.hpp"
#include "backend/ns/util.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using namespace aerie::backend::ns;

namespace {

pid_t sleeper() {
    pid_t pid = ::fork();
    if (pid == 0) {
        ::execl("/usr/bin/sleep", "sleep", "1000", nullptr);
        ::_exit(127);
    }
    return pid;
}

std::string group() {
    return "aerie-cg-unit-" + std::to_string(::getpid());
}

// The first cgroup2 mount and this process's directory in it.
std::optional<fs::path> own_unified() {
    std::istringstream mounts(try_read_file("/proc/self/mountinfo").value_or(""));
    std::string line;
    fs::path mount;
    while (std::getline(mounts, line))
        if (line.find(" - cgroup2 ") != std::string::npos) {
            std::istringstream f(line);
            std::string id, parent, dev, root, mp;
            f >> id >> parent >> dev >> root >> mp;
            if (root == "/") {
                mount = mp;
                break;
            }
        }
    if (mount.empty()) return std::nullopt;
    std::istringstream cg(try_read_file("/proc/self/cgroup").value_or(""));
    while (std::getline(cg, line))
        if (line.rfind("0::", 0) == 0) return mount / line.substr(4);
    return std::nullopt;
}

}  // namespace

TEST(BackendCgroup, LimitsJoinStatsAndRemovalInTheDaemonsLayout) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    auto layout = detect_cgroup_layout();
    if (layout.version == 0) GTEST_SKIP() << "no cgroups";
    CgroupLimits limits{64ull << 20, 128ull << 20, 1, 100};
    auto cg = QubeCgroup::create(layout, group(), "q1", limits);
    ASSERT_FALSE(cg.empty());
    for (const auto& [c, d] : cg.dirs()) {
        EXPECT_TRUE(fs::is_directory(d)) << d;
        EXPECT_EQ(d.filename(), "q1");
        EXPECT_EQ(d.parent_path().filename(), group());
    }
    if (cg.version() == 1) {
        EXPECT_EQ(read_file(cg.dirs().at("memory") / "memory.limit_in_bytes"),
                  std::to_string(128 << 20) + "\n");
        EXPECT_EQ(read_file(cg.dirs().at("memory") / "memory.soft_limit_in_bytes"),
                  std::to_string(64 << 20) + "\n");
        EXPECT_EQ(read_file(cg.dirs().at("pids") / "pids.max"), "100\n");
        auto period = std::stoull(read_file(cg.dirs().at("cpu") / "cpu.cfs_period_us"));
        EXPECT_EQ(std::stoull(read_file(cg.dirs().at("cpu") / "cpu.cfs_quota_us")), period);
    } else {
        EXPECT_EQ(read_file(cg.dirs().at("unified") / "memory.max"), std::to_string(128 << 20) + "\n");
        EXPECT_EQ(read_file(cg.dirs().at("unified") / "pids.max"), "100\n");
    }
    pid_t p = sleeper();
    cg.join(p);
    EXPECT_EQ(cg.procs(), std::vector<pid_t>{p});
    EXPECT_EQ(cg.process_count(), 1u);
    if (cg.can_freeze()) {
        cg.freeze(true, 5000ms);
        EXPECT_TRUE(cg.frozen());
    }
    cg.kill_all();  // thaws a frozen v1 group so SIGKILL lands
    int st = 0;
    ASSERT_EQ(::waitpid(p, &st, 0), p);
    EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    EXPECT_TRUE(cg.remove(2000ms));
    for (const auto& [c, d] : cg.dirs()) {
        EXPECT_FALSE(fs::exists(d)) << d;
        EXPECT_FALSE(fs::exists(d.parent_path())) << d.parent_path();  // the last qube takes the group along
    }
}

TEST(BackendCgroup, V2FreezeAndKillWithoutControllers) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    auto own = own_unified();
    if (!own || !fs::exists(*own / "cgroup.procs")) GTEST_SKIP() << "no cgroup2 mount";
    fs::path dir = *own / group() / "q2";
    fs::create_directories(dir);
    auto cg = QubeCgroup::from_dirs(2, {{"unified", dir}});
    pid_t p = sleeper();
    cg.join(p);
    EXPECT_EQ(cg.procs(), std::vector<pid_t>{p});
    ASSERT_TRUE(cg.can_freeze());
    cg.freeze(true, 5000ms);
    EXPECT_TRUE(cg.frozen());
    cg.freeze(false, 5000ms);
    EXPECT_FALSE(cg.frozen());
    cg.freeze(true, 5000ms);
    cg.kill_all();  // cgroup.kill works on a frozen group
    int st = 0;
    ASSERT_EQ(::waitpid(p, &st, 0), p);
    EXPECT_TRUE(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    EXPECT_TRUE(cg.remove(2000ms));
    EXPECT_FALSE(fs::exists(dir));
    EXPECT_FALSE(fs::exists(dir.parent_path()));
}

TEST(BackendCgroup, TheParentOfAllQubesCarriesTheBudget) {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root";
    auto layout = detect_cgroup_layout();
    if (layout.version == 0) GTEST_SKIP() << "no cgroups";
    aerie::backend::QubesBudget budget{1000, 100, 1ull << 30, 1500, 50};
    CgroupLimits limits{64ull << 20, 128ull << 20, 4, 100};  // 4 CPUs: more than the parent's 1.5
    auto a = QubeCgroup::create(layout, group(), "qa", limits, budget);
    auto b = QubeCgroup::create(layout, group(), "qb", limits, budget);
    for (const auto& [c, d] : a.dirs()) EXPECT_EQ(d.parent_path(), b.dirs().at(c).parent_path());
    if (a.version() == 1) {
        fs::path pids = a.dirs().at("pids").parent_path(), mem = a.dirs().at("memory").parent_path(),
                 cpu = a.dirs().at("cpu").parent_path();
        EXPECT_EQ(read_file(pids / "pids.max"), "1000\n");
        EXPECT_EQ(read_file(mem / "memory.limit_in_bytes"), std::to_string(1ull << 30) + "\n");
        EXPECT_EQ(read_file(cpu / "cpu.shares"), "512\n");
        auto period = std::stoull(read_file(cpu / "cpu.cfs_period_us"));
        EXPECT_EQ(std::stoull(read_file(cpu / "cpu.cfs_quota_us")), period * 3 / 2);
        // v1 refuses a child more than its parent: the qube gets the parent's quota.
        EXPECT_EQ(std::stoull(read_file(a.dirs().at("cpu") / "cpu.cfs_quota_us")), period * 3 / 2);
    } else {
        fs::path parent = a.dirs().at("unified").parent_path();
        EXPECT_EQ(read_file(parent / "pids.max"), "1000\n");
        EXPECT_EQ(read_file(parent / "memory.max"), std::to_string(1ull << 30) + "\n");
    }
    EXPECT_TRUE(a.remove(2000ms));
    EXPECT_TRUE(b.remove(2000ms));
}
