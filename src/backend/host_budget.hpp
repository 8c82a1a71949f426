// What all qubes together may take of the host, and the defaults of a new
// qube's size, from the host's own size: the host keeps a reserve of tasks,
// memory and CPU that no qube (nor all of them together) can take away.
// Pure functions over HostFacts (read once from /proc), so tests can give
// any host.
#pragma once

#include <cstdint>
#include <filesystem>

namespace aerie::backend {

struct HostFacts {
    uint64_t cpus = 0;          // CPUs this process may run on; 0: unknown
    uint64_t memory_bytes = 0;  // MemTotal; 0: unknown
    uint64_t pid_max = 0;       // kernel.pid_max; 0: unknown
    uint64_t threads_max = 0;   // kernel.threads-max; 0: unknown
};

// This host's facts (affinity mask, /proc/meminfo, /proc/sys/kernel).
HostFacts read_host_facts();

// The limits of the one parent cgroup every qube lives under.
struct QubesBudget {
    uint64_t pids_max = 0;         // tasks of all qubes together; 0: no limit
    uint64_t qube_pids_max = 0;    // tasks of one qube; 0: no limit
    uint64_t memory_bytes = 0;     // memory of all qubes together; 0: no limit
    uint64_t cpu_quota_milli = 0;  // CPU time of all qubes, thousandths of a CPU; 0: no limit
    uint32_t cpu_weight = 0;       // cgroup v2 cpu.weight (the host's own groups: 100); 0: unchanged
};

// Tasks: the host keeps a quarter of min(pid_max, threads-max), at least
// 4096; one qube gets an eighth of what all qubes may have (512..16384), so
// a fork bomb in one qube leaves room for seven more. Memory: the host keeps
// an eighth of MemTotal, 1..4 GiB (at most half). CPU: the host keeps an
// eighth of its CPUs, at least half a CPU, and qubes have half the weight of
// the host's own groups.
QubesBudget qubes_budget(const HostFacts& host);

// How many qubes the defaults are sized to run at once (Qubes' usual set:
// sys-net, sys-firewall, sys-usb, work, personal, untrusted).
inline constexpr uint64_t kTypicalQubes = 6;

// Defaults of a new qube's size, Qubes' own (memory 400, maxmem 4000, vcpus
// 2) where the host has room for them: memory and maxmem shrink so that
// kTypicalQubes of them fit in the qubes' memory budget (maxmem also at most
// half of MemTotal, as qubesd caps it), vcpus leaves the host a CPU of its
// own. Unknown facts: Qubes' values.
struct QubeSizeDefaults {
    long long memory_mib = 400;
    long long maxmem_mib = 4000;
    long long vcpus = 2;
};
QubeSizeDefaults qube_size_defaults(const HostFacts& host);

}  // namespace aerie::backend
