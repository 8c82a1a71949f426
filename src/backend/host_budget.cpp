#include "backend/host_budget.hpp"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <string>

namespace aerie::backend {

namespace {

constexpr uint64_t kMiB = 1ull << 20;
constexpr uint64_t kGiB = 1ull << 30;

uint64_t read_number(const char* path) {
    std::ifstream in(path);
    uint64_t v = 0;
    in >> v;
    return in ? v : 0;
}

uint64_t mem_total_bytes() {
    std::ifstream in("/proc/meminfo");
    std::string key;
    uint64_t kib = 0;
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream f(line);
        if (f >> key >> kib && key == "MemTotal:") return kib * 1024;
    }
    return 0;
}

// Down to a multiple of 100 MiB (the numbers people set), at least `floor`.
long long round_mib(uint64_t bytes, long long floor) {
    auto mib = static_cast<long long>(bytes / kMiB);
    return std::max(floor, mib / 100 * 100);
}

}  // namespace

HostFacts read_host_facts() {
    HostFacts h;
    cpu_set_t set;
    CPU_ZERO(&set);
    if (::sched_getaffinity(0, sizeof set, &set) == 0) h.cpus = static_cast<uint64_t>(CPU_COUNT(&set));
    if (!h.cpus) {
        long n = ::sysconf(_SC_NPROCESSORS_ONLN);
        h.cpus = n > 0 ? static_cast<uint64_t>(n) : 0;
    }
    h.memory_bytes = mem_total_bytes();
    h.pid_max = read_number("/proc/sys/kernel/pid_max");
    h.threads_max = read_number("/proc/sys/kernel/threads-max");
    return h;
}

QubesBudget qubes_budget(const HostFacts& host) {
    QubesBudget b;
    uint64_t tasks = host.pid_max && host.threads_max ? std::min(host.pid_max, host.threads_max)
                                                      : std::max(host.pid_max, host.threads_max);
    if (tasks) {
        uint64_t reserve = std::min(std::max<uint64_t>(tasks / 4, 4096), tasks / 2);
        b.pids_max = tasks - reserve;
        b.qube_pids_max = std::min<uint64_t>(std::clamp<uint64_t>(b.pids_max / 8, 512, 16384), b.pids_max);
    }
    if (host.memory_bytes) {
        uint64_t reserve =
            std::min(std::clamp<uint64_t>(host.memory_bytes / 8, kGiB, 4 * kGiB), host.memory_bytes / 2);
        b.memory_bytes = host.memory_bytes - reserve;
    }
    if (host.cpus) {
        uint64_t milli = host.cpus * 1000;
        b.cpu_quota_milli = milli - std::max<uint64_t>(milli / 8, 500);
    }
    b.cpu_weight = 50;
    return b;
}

QubeSizeDefaults qube_size_defaults(const HostFacts& host) {
    QubeSizeDefaults d;
    if (host.memory_bytes) {
        uint64_t share = qubes_budget(host).memory_bytes / kTypicalQubes;
        d.memory_mib = std::min(d.memory_mib, round_mib(share, 100));
        long long maxmem = std::min(round_mib(share, 100), round_mib(host.memory_bytes / 2, 100));
        d.maxmem_mib = std::max(d.memory_mib, std::min(d.maxmem_mib, maxmem));
    }
    // A qube's vcpus are a CPU-time quota: with one CPU less than the host
    // has, a busy qube leaves the host (and the other qubes) a CPU.
    if (host.cpus) d.vcpus = std::clamp<long long>(static_cast<long long>(host.cpus) - 1, 1, d.vcpus);
    return d;
}

}  // namespace aerie::backend
