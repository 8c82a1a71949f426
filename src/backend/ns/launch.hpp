// Starting one qube's PID 1: the new process in its own user, mount, PID,
// network, IPC, UTS and cgroup namespaces, its file system assembled and
// entered, its privileges reduced, its init executed.
//
// The parent (the daemon, real root) prepares everything before the clone:
// detached copies (open_tree of an O_PATH descriptor: one mount object each,
// never its submounts) of the root and of every bind mount source (the
// spec's descriptors for what a qube can write, trusted host paths for the
// rest), the compiled seccomp filter, the capability sets, every string. The
// child then only makes system calls (no allocation: the daemon may be
// multithreaded), while the parent puts it into its cgroups (slow on cgroup
// v1: each move waits for an RCU grace period).
//
// The child is made in new mount, PID and network namespaces but the host's
// user namespace, and builds the qube's tree in two stages.
//
// Stage one, as the host's root (with the qube root's file system ids, so
// what it creates belongs to the qube): every mount made a slave; the root
// tree attached; inside it (paths resolved with RESOLVE_IN_ROOT, so symbolic
// links in the root cannot point mounts elsewhere) a fresh /proc of its PID
// namespace, a read-only sysfs (of this empty network namespace), a /dev
// tmpfs with the host's null, zero, full, random, urandom and tty bound in, a
// tmpfs /run, the spec's bind mounts (read-only folders through a read-only
// overlay, so /proc/self/mountinfo shows no host path for them); pivot_root
// and the old root detached.
//
// Then it unshares a user namespace (with new mount, network, IPC and UTS
// namespaces): the copy of its mount namespace, owned by the qube's user
// namespace, has every mount locked by the kernel (MNT_LOCK_READONLY,
// _NOSUID, _NODEV, _NOEXEC, _ATIME; MNT_LOCKED), so the qube's root cannot
// remount a read-only bind writable, drop nosuid or nodev, or unmount what
// the host mounted. It tells the parent, which writes the uid/gid maps and
// lets it go on.
//
// Stage two, as the qube's root: its own sysfs over the first, a new devpts
// instance with /dev/ptmx, /dev/shm, /dev/mqueue, tmpfs /tmp, /run/lock, the
// /dev links; hostname; lo up; a cgroup namespace rooted at its cgroup;
// stdio; capabilities, no_new_privs, seccomp; execve. The PID namespace stays
// owned by the host's user namespace (the qube cannot mount another /proc);
// its mount, network, IPC and UTS namespaces are its own.
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
