// Starting one qube's PID 1: the new process in its own user, mount, PID,
// network, IPC, UTS and cgroup namespaces, its file system assembled and
// entered, its privileges reduced, its init executed.
//
// The parent (the daemon, real root) prepares everything before the clone:
// detached copies (open_tree) of the root and of every bind mount source, so
// the qube's root never needs to reach host paths its own uids could not, the
// compiled seccomp filter, the capability sets, every string. The child then
// only makes system calls (no allocation: the daemon may be multithreaded),
// waits until the parent has written its uid/gid maps, and sets itself up
// while the parent puts it into its cgroups (slow on cgroup v1: each move
// waits for an RCU grace period):
//
// root ids in the new user namespace; every mount made a slave; the root
// tree attached; inside it (paths resolved with RESOLVE_IN_ROOT, so symbolic
// links in the root cannot point mounts elsewhere) a fresh /proc, a
// read-only /sys, a /dev tmpfs with the host's null, zero, full, random,
// urandom and tty bound in, a new devpts instance with /dev/ptmx, /dev/shm,
// /dev/mqueue, tmpfs /run and /tmp, the spec's bind mounts; pivot_root and
// the old root detached; hostname; lo up; once in its cgroups, a cgroup
// namespace rooted at its cgroup; stdio; capabilities, no_new_privs,
// seccomp; execve.
//
// Mount flags are not locked: the qube's own root made these mounts in its
// own mount namespace, so it may remount a read-only bind writable or unmount
// /proc there. Nothing is revealed beneath (only the qube's root folder), and
// what the host provides (its /usr, a shared template root, Aerie's binaries)
// belongs to host ids outside the qube's range, so file permissions still
// refuse writes to it. Read-only matters on its own only for files owned by
// the qube's range, which are the qube's anyway.
//
// The error pipe is close-on-exec: end of file means the init runs; anything
// read is the failed step and its errno ("pivot_root into /x: Invalid
// argument"), thrown as BackendError.
#pragma once

#include <linux/filter.h>
#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "backend/backend.hpp"
#include "backend/ns/confine.hpp"
#include "backend/ns/util.hpp"

namespace aerie::backend::ns {

struct LaunchRequest {
    std::filesystem::path root;
    bool root_read_only = false;
    std::vector<BindMount> mounts;
    std::string hostname;
    std::vector<std::string> argv;  // argv[0]: absolute path inside the qube
    std::vector<std::string> env;   // "KEY=value"
    uid_t id_base = 0;              // host uid/gid of the qube's root
    uint32_t id_count = 65536;
    int console_fd = -1;  // PID 1's stdout and stderr
    const std::vector<sock_filter>* seccomp = nullptr;
    const CapabilityPlan* caps = nullptr;
    // Called in the parent once the child exists and runs its setup (puts it
    // into its cgroups); the child executes nothing of the qube before it
    // returns. May throw; the child is then killed.
    std::function<void(pid_t)> attach;
};

struct Launched {
    pid_t pid = 0;
    Fd pidfd;
    std::chrono::microseconds prepare{0};  // before the clone
    std::chrono::microseconds setup{0};    // clone to exec of PID 1
};

Launched launch(const LaunchRequest& req);

// Opens `rel` below the directory `root` with every symbolic link and ".."
// resolved as if `root` were "/" (RESOLVE_IN_ROOT), creating missing folders,
// and a missing last component as a folder or an empty file. Returns an
// O_PATH descriptor, or -errno. Only system calls: safe in the child.
int open_in_root(int root, const char* rel, bool create, bool is_file);
// "/a//b/" -> "a/b"; throws BackendError for relative targets, "." or "..".
std::string relative_target(const std::string& target);

}  // namespace aerie::backend::ns
