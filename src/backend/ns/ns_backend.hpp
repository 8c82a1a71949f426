// The `ns` driver: a qube is a process tree in its own Linux namespaces
// (user, mount, PID, network, IPC, UTS, cgroup), under its own cgroups, with
// reduced capabilities and a seccomp filter (see launch.hpp, confine.hpp,
// cgroup.hpp). No helper process stays behind: the daemon is the parent of
// every qube's PID 1, and what it needs to find a qube again after a restart
// is a record in the qube's runtime folder.
//
// Runtime folder: <runtime base>/<name> unless the spec names another one (a
// link <runtime base>/<name> then points there). It holds `qube.json` (PID 1's
// host pid and start time, the uid base, the cgroup folders) and, unless the
// spec says otherwise, `console.log`. A qube whose record names a live PID 1
// with the same start time is adopted by a new backend over the same base;
// the records of dead ones are cleaned up (cgroups, folder).
//
// Thread-safe: calls for different qubes may run at once.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "backend/ns/cgroup.hpp"
#include "backend/ns/confine.hpp"
#include "backend/ns/util.hpp"

namespace aerie::backend::ns {

struct NsOptions {
    std::filesystem::path runtime_base = "/run/aerie/qubes";
    // The qubes' cgroups: <daemon's own cgroup>/<cgroup_group>/<name>.
    std::string cgroup_group = "aerie";
    // The limits of <cgroup_group>, the parent of all qubes; nullopt: from
    // this host's size (qubes_budget(read_host_facts())).
    std::optional<QubesBudget> budget;
    uint64_t pids_max = 0;  // processes and threads per qube; 0: the budget's qube_pids_max
};

struct StartTimings {
    std::chrono::microseconds total{0};    // start() from entry to return
    std::chrono::microseconds cgroups{0};  // creating the cgroups, writing limits
    std::chrono::microseconds prepare{0};  // detached mount trees, plan
    std::chrono::microseconds setup{0};    // clone to PID 1's exec
};

class NsBackend final : public Backend {
public:
    explicit NsBackend(NsOptions options = {});
    ~NsBackend() override;  // qubes keep running

    RunningQube start(const QubeSpec& spec) override;
    void shutdown(const std::string& name, std::chrono::milliseconds timeout) override;
    void kill(const std::string& name) override;
    void pause(const std::string& name) override;
    void unpause(const std::string& name) override;
    PowerState state(const std::string& name) override;
    QubeStats stats(const std::string& name) override;
    std::vector<RunningQube> adopt() override;
    void cleanup(const std::string& name) override;
    int exit_fd(const std::string& name) override;
    std::optional<int> exit_status(const std::string& name) override;

    StartTimings last_start_timings() const;
    const CgroupLayout& cgroup_layout() const { return layout_; }
    const QubesBudget& budget() const { return budget_; }
    // The cgroup folders of a known qube (for tests and diagnostics).
    std::map<std::string, std::filesystem::path> cgroup_dirs(const std::string& name);

private:
    struct Qube;
    std::shared_ptr<Qube> find(const std::string& name);
    std::shared_ptr<Qube> load_record(const std::filesystem::path& dir);
    bool reap(Qube& q, std::chrono::milliseconds wait);  // true once PID 1 has ended
    void kill_locked(Qube& q);
    void cleanup_locked(Qube& q);

    NsOptions opt_;
    CgroupLayout layout_;
    QubesBudget budget_;
    std::vector<sock_filter> seccomp_;
    CapabilityPlan caps_;
    mutable std::mutex mu_;  // qubes_, timings_, cgroup folder creation and removal
    std::map<std::string, std::shared_ptr<Qube>> qubes_;
    StartTimings timings_;
};

}  // namespace aerie::backend::ns
