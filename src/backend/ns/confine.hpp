// What a qube's processes may do once inside: the capabilities they keep (in
// their own user namespace) and the seccomp filter every one of them runs
// under. Both are computed once per backend and applied by the new PID 1
// right before it executes the qube's init.
//
// Capabilities. The qube's root holds capabilities only over its own user
// namespace and the namespaces it owns (its mounts, network, hostname, IPC,
// processes), so what it keeps lets a Linux system inside work: mounting in
// its own mount namespace, configuring its own network stack, switching
// users, owning files, tracing its own processes (CAP_SYS_PTRACE: the PID
// namespace stops it at the qube's border). Dropped, from the bounding set
// too, so no program inside regains them: CAP_SYS_MODULE, CAP_SYS_RAWIO,
// CAP_SYS_BOOT (a qube stops by signalling its PID 1), CAP_SYS_TIME,
// CAP_MKNOD (/dev holds bind mounts of the host's harmless nodes instead),
// CAP_AUDIT_*, CAP_SYSLOG, CAP_MAC_*, CAP_SYS_PACCT, CAP_SYS_TTY_CONFIG,
// CAP_WAKE_ALARM, CAP_BLOCK_SUSPEND, CAP_BPF, CAP_PERFMON,
// CAP_CHECKPOINT_RESTORE, CAP_LINUX_IMMUTABLE, and any newer one the kernel
// knows but this list does not. Most of these mean nothing outside the
// initial user namespace anyway; dropping them is belt and braces.
//
// no_new_privs is set: set-user-ID programs (sudo, su) do not raise
// privileges inside a qube; Aerie's agent switches users itself.
//
// Seccomp. Default allow; EPERM for kernel-wide or host-dangerous calls:
// module loading, kexec, keyrings (not namespaced), bpf, perf_event_open,
// file handles (open_by_handle_at reaches files outside a mount namespace),
// I/O port access, swap, reboot (CAP_SYS_BOOT is dropped too), process
// accounting, lookup_dcookie, userfaultfd, io_uring (a large attack surface
// that bypasses this filter's view of the calls), and the obsolete module
// and sysctl calls. A new user namespace inside a qube (clone or unshare with
// CLONE_NEWUSER) is refused with EPERM; clone3, whose flags a filter cannot
// read, answers ENOSYS, so C libraries fall back to clone. The 32-bit x86
// and x32 system call tables get the same rules; other architectures are
// killed. Other namespaces stay creatable inside (a qube's root may unshare a
// network namespace of its own), so kernel code such as netfilter is within
// a qube's reach as it is for any user namespace's root.
#pragma once

#include <linux/filter.h>

#include <cstdint>
#include <string>
#include <vector>

namespace aerie::backend::ns {

struct CapabilityPlan {
    std::vector<int> drop;      // from the bounding set, in order
    uint32_t keep[2] = {0, 0};  // effective and permitted (the capset data words)
};

CapabilityPlan capability_plan();
// Names of the capabilities kept, for documentation and tests.
std::vector<std::string> kept_capability_names();

// The system calls answered EPERM (names as libseccomp knows them).
const std::vector<std::string>& denied_syscalls();
// The compiled filter (BPF), ready for seccomp(SECCOMP_SET_MODE_FILTER).
std::vector<sock_filter> build_seccomp_filter();

}  // namespace aerie::backend::ns
