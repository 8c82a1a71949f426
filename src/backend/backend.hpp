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
#include <sys/types.h>
#include <vector>

#include "base/unique_fd.hpp"

namespace aerie::backend {

// User namespaces. Every qube runs in its own user namespace whose ids
// 0..65535 map to the host ids
//     qube_uid_base(qid) .. qube_uid_base(qid) + 65535,   qube_uid_base(qid) = 0x10000000 + qid * 65536
// (the same numbers for gids). So root inside qube 3 is host uid 0x10030000,
// and user 1000 inside it host uid 0x100303e8. Nothing a qube owns on the host
// side is owned by host root: whoever prepares what a qube must write (its
// private volume, a TemplateVM's own root) chowns it into the qube's range,
// e.g. `chown -R 0x10030000:0x10030000 private/` for qube root, or base + 1000
// for the qube's user. Files owned by host ids outside the range (the host's
// /usr, a shared template root) appear inside as nobody:nogroup (65534) and
// only their "other" permission bits apply, even to the qube's root.
constexpr uid_t kQubeUidBase = 0x10000000;
constexpr uid_t kQubeIdsPerQube = 65536;
constexpr int kMaxQid = static_cast<int>((0xFFFFFFFFu - kQubeUidBase) / kQubeIdsPerQube) - 1;  // 61438
constexpr uid_t qube_uid_base(int qid) { return kQubeUidBase + static_cast<uid_t>(qid) * kQubeIdsPerQube; }

struct BackendError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// A host directory or file made visible inside the qube. The backend mounts
// one mount object, never its submounts.
struct BindMount {
    // On the host. With source_fd set, only for messages; otherwise a path no
    // qube can write (the host's /usr, Aerie's binaries), opened as it is.
    std::filesystem::path source;
    std::string target;  // inside the qube, absolute
    bool read_only = true;
    // An O_PATH descriptor of the source, opened beneath a trusted parent with
    // base/safe_dir.hpp (and type-checked there): required for anything a qube
    // can write (its private volume, its home, the vchan folder). The backend
    // mounts exactly this object (open_tree of the descriptor), so nothing a
    // qube renames or links afterwards changes what is mounted.
    std::shared_ptr<const base::UniqueFd> source_fd = nullptr;
    // Bound as it is, never shown through a read-only overlay: the folder
    // holds Unix sockets the qube connects to, and connect() through
    // overlayfs to a socket in a lower layer is refused (ECONNREFUSED).
    bool plain = false;
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
                                                // (the ns driver: empty = <runtime base>/<name>)
    // Mount the root read-only (a root shared with other qubes, e.g. the host
    // template's folder itself; a copy-on-write view or a TemplateVM's own root
    // stays writable).
    bool root_read_only = false;
    // PID 1's stdout and stderr, when >= 0: the write end of a pipe whose read
    // end the caller drains into a capped log (base::spawn_log_drainer), so
    // the qube never holds a host file. Not owned; console_log is then unused.
    int console_fd = -1;
    // Otherwise where they go; its stdin is /dev/null. A regular file (or
    // empty: <runtime_dir>/console.log, removed with the runtime folder) is
    // written through a drainer too; anything else (a developer's terminal,
    // aerie-ns-run's /dev/stdout, any path under /dev/) is handed over as it is.
    std::filesystem::path console_log;
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
    // A descriptor that becomes readable when the qube's PID 1 has ended (for
    // an event loop); owned by the backend, valid until cleanup(). -1: none.
    virtual int exit_fd(const std::string& /*name*/) { return -1; }
    // How PID 1 ended (exit code, or 128 + signal), once it has ended and the
    // backend saw it (not for adopted qubes, whose parent is gone).
    virtual std::optional<int> exit_status(const std::string& /*name*/) { return std::nullopt; }
};

}  // namespace aerie::backend
