// The ns driver's parsers and small rules: cgroup layouts from mountinfo and
// /proc/self/cgroup, /proc/<pid>/stat, qube names, uid ranges, capabilities.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/capability.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <map>

#include "backend/backend.hpp"
#include "backend/ns/cgroup.hpp"
#include "backend/ns/confine.hpp"
#include "backend/ns/launch.hpp"
#include "backend/ns/util.hpp"

using namespace aerie::backend;
using namespace aerie::backend::ns;

namespace {

// This machine's shape: cgroup v1 controllers, an empty v2 hierarchy at
// /sys/fs/cgroup/unified, the memory cgroup nested.
const char* kHybridMountinfo =
    "21 26 0:20 / /proc rw,relatime - proc proc rw\n"
    "30 22 0:27 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n"
    "31 30 0:28 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n"
    "32 30 0:29 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct\n"
    "34 30 0:31 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    "36 30 0:33 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer\n"
    "38 30 0:35 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n"
    "39 30 0:36 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd\n"
    "40 30 0:37 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
const char* kHybridCgroup =
    "9:name=systemd:/\n8:pids:/\n6:freezer:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n";

std::string no_file(const std::filesystem::path&) {
    return "";
}

}  // namespace

TEST(BackendCgroupLayout, HybridUsesV1WhenTheUnifiedHierarchyHasNoControllers) {
    std::map<std::string, std::string> files = {{"/sys/fs/cgroup/unified/cgroup.controllers", ""}};
    auto layout = parse_cgroup_layout(kHybridMountinfo, kHybridCgroup,
                                      [&](const std::filesystem::path& p) { return files[p.string()]; });
    EXPECT_EQ(layout.version, 1);
    EXPECT_EQ(layout.v1.at("memory"), "/sys/fs/cgroup/memory/process_api/abc");
    EXPECT_EQ(layout.v1.at("cpu"), "/sys/fs/cgroup/cpu");
    EXPECT_EQ(layout.v1.at("cpuacct"), "/sys/fs/cgroup/cpuacct");
    EXPECT_EQ(layout.v1.at("pids"), "/sys/fs/cgroup/pids");
    EXPECT_EQ(layout.v1.at("freezer"), "/sys/fs/cgroup/freezer");
    EXPECT_EQ(layout.v1.count("name=systemd"), 0u);
}

TEST(BackendCgroupLayout, UnifiedWithControllersWins) {
    const char* mountinfo = "30 22 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    const char* cgroup = "0::/system.slice/aeried.service\n";
    auto layout = parse_cgroup_layout(mountinfo, cgroup, [](const std::filesystem::path& p) {
        return p == "/sys/fs/cgroup/system.slice/aeried.service/cgroup.controllers"
                   ? "cpuset cpu io memory pids\n"
                   : "";
    });
    EXPECT_EQ(layout.version, 2);
    EXPECT_EQ(layout.unified, "/sys/fs/cgroup/system.slice/aeried.service");
}

TEST(BackendCgroupLayout, CoMountedControllersShareADirectory) {
    const char* mountinfo =
        "31 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
        "34 30 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
    const char* cgroup = "3:cpu,cpuacct:/user.slice\n2:memory:/user.slice\n";
    auto layout = parse_cgroup_layout(mountinfo, cgroup, no_file);
    EXPECT_EQ(layout.version, 1);
    EXPECT_EQ(layout.v1.at("cpu"), "/sys/fs/cgroup/cpu,cpuacct/user.slice");
    EXPECT_EQ(layout.v1.at("cpuacct"), "/sys/fs/cgroup/cpu,cpuacct/user.slice");
}

TEST(BackendCgroupLayout, MountOfASubtreeIsResolvedAgainstItsRoot) {
    // Inside a container: the hierarchy's /lxc/c1 is mounted at /sys/fs/cgroup/memory.
    const char* mountinfo = "34 30 0:31 /lxc/c1 /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
    auto layout = parse_cgroup_layout(mountinfo, "4:memory:/lxc/c1/daemon\n", no_file);
    EXPECT_EQ(layout.v1.at("memory"), "/sys/fs/cgroup/memory/daemon");
    auto outside = parse_cgroup_layout(mountinfo, "4:memory:/other\n", no_file);
    EXPECT_EQ(outside.version, 0);
}

TEST(BackendCgroupLayout, EscapedMountPoints) {
    const char* mountinfo = "34 30 0:31 / /sys/fs/cgroup/my\\040memory rw - cgroup cgroup rw,memory\n";
    auto layout = parse_cgroup_layout(mountinfo, "4:memory:/\n", no_file);
    EXPECT_EQ(layout.v1.at("memory"), "/sys/fs/cgroup/my memory");
}

TEST(BackendCgroupLayout, NothingUsable) {
    EXPECT_EQ(parse_cgroup_layout("", "", no_file).version, 0);
}

TEST(BackendProcStat, StartTimeStateAndParentDespiteOddCommandNames) {
    std::string stat =
        "4242 (a) b) c) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 "
        "18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
    auto st = parse_proc_stat(stat);
    ASSERT_TRUE(st);
    EXPECT_EQ(st->state, 'S');
    EXPECT_EQ(st->ppid, 17);
    EXPECT_EQ(st->start_time, 987654u);
    EXPECT_FALSE(parse_proc_stat("garbage"));
    EXPECT_FALSE(parse_proc_stat("1 (x) S 0"));
}

TEST(BackendProcStat, OwnProcess) {
    auto st = read_proc_stat(::getpid());
    ASSERT_TRUE(st);
    EXPECT_EQ(st->ppid, ::getppid());
    EXPECT_GT(st->start_time, 0u);
    EXPECT_FALSE(read_proc_stat(0));
}

TEST(BackendNames, QubesRules) {
    EXPECT_TRUE(valid_qube_name("work"));
    EXPECT_TRUE(valid_qube_name("sys-net.2_b-c"));
    EXPECT_TRUE(valid_qube_name(std::string(31, 'a')));
    EXPECT_FALSE(valid_qube_name(std::string(32, 'a')));
    EXPECT_FALSE(valid_qube_name(""));
    EXPECT_FALSE(valid_qube_name("1work"));
    EXPECT_FALSE(valid_qube_name("../etc"));
    EXPECT_FALSE(valid_qube_name("a/b"));
    EXPECT_FALSE(valid_qube_name("a b"));
}

TEST(BackendIds, EachQubeItsOwnRange) {
    EXPECT_EQ(qube_uid_base(0), 0x10000000u);
    EXPECT_EQ(qube_uid_base(3), 0x10030000u);
    EXPECT_EQ(qube_uid_base(kMaxQid) + kQubeIdsPerQube - 1 + 1, qube_uid_base(kMaxQid + 1));
    // The last range still fits below the invalid uid (uint32 max).
    EXPECT_LE(static_cast<uint64_t>(qube_uid_base(kMaxQid)) + kQubeIdsPerQube, 0xFFFFFFFFull);
}

TEST(BackendPowerState, QubesWords) {
    EXPECT_STREQ(to_string(PowerState::Halted), "Halted");
    EXPECT_STREQ(to_string(PowerState::Running), "Running");
    EXPECT_STREQ(to_string(PowerState::Paused), "Paused");
    EXPECT_STREQ(to_string(PowerState::Crashed), "Crashed");
}

TEST(BackendConfine, DangerousCapabilitiesAreDroppedOthersKept) {
    auto plan = capability_plan();
    auto dropped = [&](int cap) { return std::count(plan.drop.begin(), plan.drop.end(), cap) == 1; };
    auto kept = [&](int cap) { return (plan.keep[cap / 32] >> (cap % 32)) & 1u; };
    for (int cap : {CAP_SYS_MODULE, CAP_SYS_RAWIO, CAP_SYS_BOOT, CAP_SYS_TIME, CAP_MKNOD, CAP_AUDIT_CONTROL,
                    CAP_AUDIT_WRITE, CAP_AUDIT_READ, CAP_SYSLOG, CAP_MAC_ADMIN, CAP_MAC_OVERRIDE, CAP_BPF,
                    CAP_PERFMON}) {
        EXPECT_TRUE(dropped(cap)) << cap;
        EXPECT_FALSE(kept(cap)) << cap;
    }
    for (int cap :
         {CAP_CHOWN, CAP_SETUID, CAP_SETGID, CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_KILL, CAP_SYS_PTRACE}) {
        EXPECT_TRUE(kept(cap)) << cap;
        EXPECT_FALSE(dropped(cap)) << cap;
    }
}

TEST(BackendConfine, FilterCompilesAndCoversTheListedCalls) {
    auto prog = build_seccomp_filter();
    EXPECT_GT(prog.size(), 20u);
    const auto& denied = denied_syscalls();
    for (const char* name : {"kexec_load", "init_module", "finit_module", "keyctl", "bpf", "perf_event_open",
                             "open_by_handle_at", "userfaultfd", "reboot", "swapon"})
        EXPECT_NE(std::find(denied.begin(), denied.end(), name), denied.end()) << name;
}

TEST(BackendMountTargets, NormalisedAndConfined) {
    EXPECT_EQ(relative_target("/rw"), "rw");
    EXPECT_EQ(relative_target("//usr//lib/"), "usr/lib");
    EXPECT_THROW(relative_target("rw"), BackendError);
    EXPECT_THROW(relative_target("/rw/../etc"), BackendError);
    EXPECT_THROW(relative_target("/./x"), BackendError);
    EXPECT_THROW(relative_target("/"), BackendError);
}

TEST(BackendMountTargets, LinksInTheRootStayInside) {
    namespace fs = std::filesystem;
    fs::path root = fs::temp_directory_path() / ("aerie-root-" + std::to_string(::getpid()));
    fs::remove_all(root);
    fs::create_directories(root / "etc");
    fs::create_symlink("/etc", root / "rw");      // absolute: the root's /etc, not the host's
    fs::create_symlink("../../..", root / "up");  // cannot climb out
    int dir = ::open(root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(dir, 0);
    int fd = open_in_root(dir, "rw/aerie-mount-point", true, false);
    ASSERT_GE(fd, 0) << -fd;
    ::close(fd);
    EXPECT_TRUE(fs::is_directory(root / "etc" / "aerie-mount-point"));
    EXPECT_FALSE(fs::exists("/etc/aerie-mount-point"));
    fd = open_in_root(dir, "up/tmp/file-point", true, true);
    ASSERT_GE(fd, 0) << -fd;
    ::close(fd);
    EXPECT_TRUE(fs::is_regular_file(root / "tmp" / "file-point"));
    EXPECT_EQ(open_in_root(dir, "missing", false, false), -ENOENT);
    ::close(dir);
    fs::remove_all(root);
}
