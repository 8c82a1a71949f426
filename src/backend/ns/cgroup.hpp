// A qube's control groups: limits from its spec, the freezer for pause, and
// the list of its processes for kill. cgroup v2 when the memory and pids
// controllers are available in a unified hierarchy, otherwise cgroup v1 (one
// directory per hierarchy: memory, cpu, cpuacct, pids, freezer; co-mounted
// controllers share one). A qube's cgroups live under the daemon's own cgroup
// of each hierarchy: <own>/<group>/<qube name>. <own>/<group> is the parent of
// all qubes: its limits (QubesBudget: tasks, memory, CPU) keep a reserve for
// the host whatever the qubes do together.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "backend/host_budget.hpp"

namespace aerie::backend::ns {

// Where this process sits in the cgroup hierarchies.
struct CgroupLayout {
    int version = 0;  // 2, 1, or 0 when no usable hierarchy was found
    // v2: the daemon's own cgroup directory. v1: controller -> the daemon's own
    // cgroup directory in the hierarchy holding that controller.
    std::filesystem::path unified;
    std::map<std::string, std::filesystem::path> v1;
};

// Parses /proc/self/mountinfo and /proc/self/cgroup (texts, for tests);
// `unified_controllers` reads a v2 cgroup's cgroup.controllers.
CgroupLayout parse_cgroup_layout(const std::string& mountinfo, const std::string& proc_cgroup,
                                 const std::function<std::string(const std::filesystem::path&)>& read_file);
// The layout of the running process.
CgroupLayout detect_cgroup_layout();

struct CgroupLimits {
    uint64_t memory_bytes = 0;  // soft (v1 soft limit, v2 memory.low); 0: none
    uint64_t maxmem_bytes = 0;  // hard; 0: none
    int vcpus = 0;              // CPU bandwidth in whole CPUs; 0: none
    uint64_t pids_max = 0;      // 0: none
};

class QubeCgroup {
public:
    QubeCgroup() = default;
    // Creates <own>/<group>/<name> in every hierarchy and writes the limits:
    // `budget` on <own>/<group> (every time: it is removed with its last
    // qube), `limits` on the qube's own folder.
    static QubeCgroup create(const CgroupLayout& layout, const std::string& group, const std::string& name,
                             const CgroupLimits& limits, const QubesBudget& budget = {});
    // The same cgroup, from a record (after a daemon restart).
    static QubeCgroup from_dirs(int version, std::map<std::string, std::filesystem::path> dirs);

    int version() const { return version_; }
    // v2: {"unified": dir}; v1: controller -> dir.
    const std::map<std::string, std::filesystem::path>& dirs() const { return dirs_; }
    bool empty() const { return dirs_.empty(); }

    void join(pid_t pid) const;  // moves the process into every hierarchy
    std::vector<pid_t> procs() const;
    // Freezes or thaws, and waits until the freezer says so.
    void freeze(bool frozen, std::chrono::milliseconds timeout) const;
    bool frozen() const;
    bool can_freeze() const;
    // SIGKILL to every process (cgroup.kill on v2); thaws a frozen v1 group so
    // the signals land. Does not wait.
    void kill_all() const;
    uint64_t memory_bytes() const;
    uint64_t cpu_usec() const;
    uint32_t process_count() const;
    // Removes the directories (waits briefly for dying processes to leave);
    // false when some stayed (still busy).
    bool remove(std::chrono::milliseconds timeout) const;

private:
    std::vector<std::filesystem::path> distinct_dirs() const;
    std::optional<std::filesystem::path> dir_of(const std::string& controller) const;

    int version_ = 0;
    std::map<std::string, std::filesystem::path> dirs_;
};

}  // namespace aerie::backend::ns
