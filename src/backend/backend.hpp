// Isolation drivers behind one interface. The admin daemon decides *what*
// runs (a qube's spec: root file system, volumes, limits); a backend makes a
// compartment of it and reports on it. The `ns` driver (Linux namespaces,
// cgroups, seccomp) is the first; a VM driver may follow.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace aerie::backend {

struct BackendError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A host path made visible inside the qube.
struct BindMount {
    std::filesystem::path source;  // on the host
    std::string target;            // inside the qube, absolute
    bool read_only = true;
};

// Everything a backend needs to start one qube. Paths are host paths.
struct QubeSpec {
    std::string name;
    std::string uuid;
    int qid = 0;
    // The qube's root file system, already prepared by storage (a directory:
    // for an AppVM the copy-on-write view of its template's root).
    std::filesystem::path root;
    std::vector<BindMount> mounts;  // e.g. the private volume at /rw, Aerie's binaries
    uint64_t memory_mib = 400;      // soft limit (memory.high / soft_limit)
    uint64_t maxmem_mib = 4000;     // hard limit (memory.max / limit_in_bytes)
    int vcpus = 2;
    std::string hostname;                       // default: name
    std::vector<std::string> init_argv;         // PID 1 inside, path inside the qube
    std::map<std::string, std::string> env;     // PID 1's environment
    std::filesystem::path runtime_dir;          // host-side per-qube folder the backend owns
};

enum class PowerState { Halted, Running, Paused, Crashed };
const char* to_string(PowerState state);  // Qubes' words: "Halted", "Running", ...

struct QubeStats {
    uint64_t memory_bytes = 0;  // current, of the whole compartment
    uint64_t cpu_usec = 0;
    uint32_t processes = 0;
};

// What a backend keeps about a started qube; enough to find it again after
// the admin daemon restarts (it is written under runtime_dir).
struct RunningQube {
    std::string name;
    pid_t init_pid = 0;  // in the host's PID namespace
};

class Backend {
public:
    virtual ~Backend() = default;
    // Starts the compartment and its init; returns once PID 1 runs.
    virtual RunningQube start(const QubeSpec& spec) = 0;
    // Asks PID 1 to stop (SIGTERM); kills everything after `timeout`.
    // Returns when nothing of the qube is left.
    virtual void shutdown(const std::string& name, std::chrono::milliseconds timeout) = 0;
    virtual void kill(const std::string& name) = 0;
    virtual void pause(const std::string& name) = 0;
    virtual void unpause(const std::string& name) = 0;
    virtual PowerState state(const std::string& name) = 0;
    virtual QubeStats stats(const std::string& name) = 0;
    // Qubes found running (e.g. after a daemon restart), adopted.
    virtual std::vector<RunningQube> adopt() = 0;
    // Removes what a dead qube left behind (mounts, cgroups, runtime files).
    virtual void cleanup(const std::string& name) = 0;
};

}  // namespace aerie::backend
