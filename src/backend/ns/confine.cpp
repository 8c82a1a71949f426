#include "backend/ns/confine.hpp"

#include <linux/capability.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

#include "backend/backend.hpp"
#include "backend/ns/util.hpp"

namespace aerie::backend::ns {

namespace {

struct KeptCap {
    int cap;
    const char* name;
};

const KeptCap kKept[] = {
    {CAP_CHOWN, "CAP_CHOWN"},
    {CAP_DAC_OVERRIDE, "CAP_DAC_OVERRIDE"},
    {CAP_DAC_READ_SEARCH, "CAP_DAC_READ_SEARCH"},
    {CAP_FOWNER, "CAP_FOWNER"},
    {CAP_FSETID, "CAP_FSETID"},
    {CAP_KILL, "CAP_KILL"},
    {CAP_SETGID, "CAP_SETGID"},
    {CAP_SETUID, "CAP_SETUID"},
    {CAP_SETPCAP, "CAP_SETPCAP"},
    {CAP_NET_BIND_SERVICE, "CAP_NET_BIND_SERVICE"},
    {CAP_NET_BROADCAST, "CAP_NET_BROADCAST"},
    {CAP_NET_ADMIN, "CAP_NET_ADMIN"},
    {CAP_NET_RAW, "CAP_NET_RAW"},
    {CAP_IPC_LOCK, "CAP_IPC_LOCK"},
    {CAP_IPC_OWNER, "CAP_IPC_OWNER"},
    {CAP_SYS_CHROOT, "CAP_SYS_CHROOT"},
    {CAP_SYS_PTRACE, "CAP_SYS_PTRACE"},
    {CAP_SYS_ADMIN, "CAP_SYS_ADMIN"},
    {CAP_SYS_NICE, "CAP_SYS_NICE"},
    {CAP_SYS_RESOURCE, "CAP_SYS_RESOURCE"},
    {CAP_LEASE, "CAP_LEASE"},
    {CAP_SETFCAP, "CAP_SETFCAP"},
};

int last_cap() {
    auto text = try_read_file("/proc/sys/kernel/cap_last_cap");
    int v = text ? std::atoi(text->c_str()) : 0;
    return v > 0 ? v : CAP_LAST_CAP;
}

const std::vector<std::string> kDenied = {
    // modules and kexec
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "query_module",
    "get_kernel_syms",
    "kexec_load",
    "kexec_file_load",
    // kernel-wide state a namespace does not cover
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "lookup_dcookie",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "_sysctl",
    "nfsservctl",
    "uselib",
    "syslog",
    // file handles reach files outside the mount namespace
    "open_by_handle_at",
    "name_to_handle_at",
    // hardware
    "iopl",
    "ioperm",
    "vm86",
    "vm86old",
    // kernel memory tricks and the io_uring side door
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
};

struct CtxDeleter {
    void operator()(scmp_filter_ctx ctx) const { seccomp_release(ctx); }
};

void check(int rc, const std::string& what) {
    if (rc < 0) throw_errno("seccomp filter: " + what, -rc);
}

}  // namespace

CapabilityPlan capability_plan() {
    CapabilityPlan plan;
    int last = last_cap();
    for (int cap = 0; cap <= last; ++cap) {
        bool keep = false;
        for (const auto& k : kKept) keep = keep || k.cap == cap;
        if (keep) {
            plan.keep[cap / 32] |= 1u << (cap % 32);
        } else {
            plan.drop.push_back(cap);
        }
    }
    return plan;
}

std::vector<std::string> kept_capability_names() {
    std::vector<std::string> out;
    for (const auto& k : kKept) out.emplace_back(k.name);
    return out;
}

const std::vector<std::string>& denied_syscalls() {
    return kDenied;
}

std::vector<sock_filter> build_seccomp_filter() {
    std::unique_ptr<void, CtxDeleter> holder(seccomp_init(SCMP_ACT_ALLOW));
    scmp_filter_ctx ctx = holder.get();
    if (!ctx) throw BackendError("seccomp filter: seccomp_init failed");
    // The backend sets no_new_privs itself, right before loading.
    check(seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0), "attribute NNP");
    check(seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS), "attribute BADARCH");
    if (seccomp_arch_native() == SCMP_ARCH_X86_64) {
        // Without them, 32-bit and x32 entry points would be killed as a bad
        // architecture; with them, they get the same rules.
        int rc = seccomp_arch_add(ctx, SCMP_ARCH_X86);
        if (rc < 0 && rc != -EEXIST) check(rc, "adding x86");
        rc = seccomp_arch_add(ctx, SCMP_ARCH_X32);
        if (rc < 0 && rc != -EEXIST) check(rc, "adding x32");
    }
    for (const auto& name : kDenied) {
        int nr = seccomp_syscall_resolve_name(name.c_str());
        if (nr == __NR_SCMP_ERROR) continue;  // not on this architecture
        check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), nr, 0), name);
    }
    const uint64_t newuser = CLONE_NEWUSER;
    check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(clone), 1,
                           SCMP_A0(SCMP_CMP_MASKED_EQ, newuser, newuser)),
          "clone");
    check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EPERM), SCMP_SYS(unshare), 1,
                           SCMP_A0(SCMP_CMP_MASKED_EQ, newuser, newuser)),
          "unshare");
    int clone3 = seccomp_syscall_resolve_name("clone3");
    if (clone3 != __NR_SCMP_ERROR) check(seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), clone3, 0), "clone3");

    Fd mem(::memfd_create("aerie-seccomp", MFD_CLOEXEC));
    if (!mem) throw_errno("seccomp filter: memfd_create", errno);
    check(seccomp_export_bpf(ctx, mem.get()), "export");
    off_t size = ::lseek(mem.get(), 0, SEEK_END);
    if (size <= 0 || size % sizeof(sock_filter) != 0) throw BackendError("seccomp filter: bad export size");
    std::vector<sock_filter> prog(static_cast<size_t>(size) / sizeof(sock_filter));
    if (::pread(mem.get(), prog.data(), static_cast<size_t>(size), 0) != size)
        throw_errno("seccomp filter: reading export", errno);
    return prog;
}

}  // namespace aerie::backend::ns
