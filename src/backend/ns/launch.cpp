#include "backend/ns/launch.hpp"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <deque>
#include <exception>

#include "base/safe_dir.hpp"

namespace aerie::backend::ns {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

constexpr size_t kStepText = 480;

struct ErrorReport {
    int err = 0;
    char step[kStepText] = {};
};

// One thing the child does inside the new root, in order.
struct Step {
    enum Kind { NewFs, Bind, Mkdir, Symlink } kind = NewFs;
    const char* target = nullptr;  // relative to the root ("dev/pts")
    const char* parent = nullptr;  // Mkdir / Symlink: the folder, and the leaf name
    const char* leaf = nullptr;
    const char* fstype = nullptr;      // NewFs
    std::vector<const char*> options;  // NewFs: key, value (nullptr value: a flag) pairs
    unsigned attr = 0;                 // NewFs: MOUNT_ATTR_*
    int tree_fd = -1;                  // Bind: a detached tree
    int empty_fd = -1;                 // Bind: with it, shown through an overlay (overlay_of)
    bool is_file = false;              // Bind: the mount point is a file
    const char* link_to = nullptr;     // Symlink
    mode_t mode = 0755;                // Mkdir
    bool optional = false;             // failure is not fatal
    bool by_qube = false;              // made by the qube's root, after the mounts are locked
    const char* what = nullptr;        // for the error message
};

struct ChildPlan {
    int go_fd = -1;        // read: a byte once the maps are written, another once the cgroups are joined
    int go_fd_other = -1;  // the parent's end, closed at once
    int err_fd = -1;       // write: ErrorReport on failure (close-on-exec)
    int err_fd_other = -1;
    int ready_fd = -1;  // write: a byte once the qube's user namespace exists (close-on-exec)
    int ready_fd_other = -1;
    uid_t id_base = 0;  // host uid and gid of the qube's root
    int root_tree = -1;
    const char* attach_root_what = nullptr;
    const char* pivot_what = nullptr;
    std::vector<Step> steps;
    const char* hostname = nullptr;
    int console_fd = -1;
    std::vector<char*> argv;
    std::vector<char*> envp;
    const char* exec_what = nullptr;
    const std::vector<sock_filter>* seccomp = nullptr;
    const CapabilityPlan* caps = nullptr;
};

// ---- the child: system calls only -------------------------------------------

size_t copy_text(char* dst, size_t pos, size_t cap, const char* src) {
    while (src && *src && pos + 1 < cap) dst[pos++] = *src++;
    dst[pos] = 0;
    return pos;
}

[[noreturn]] void child_fail(const ChildPlan& plan, const char* what, int err) {
    ErrorReport r;
    r.err = err;
    copy_text(r.step, 0, sizeof r.step, what);
    ssize_t n = ::write(plan.err_fd, &r, sizeof r);
    (void)n;
    ::_exit(127);
}

long openat2_path(int dirfd, const char* path) {
    open_how how{};
    how.flags = O_PATH | O_CLOEXEC;
    how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
    return ::syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

}  // namespace

int open_in_root(int root, const char* rel, bool create, bool is_file) {
    long fd = openat2_path(root, rel);
    if (fd >= 0 || errno != ENOENT || !create) return fd >= 0 ? static_cast<int>(fd) : -errno;
    char prefix[PATH_MAX];
    size_t len = 0;
    const char* p = rel;
    int parent = -1;  // -1: the root itself
    while (*p) {
        while (*p == '/') ++p;
        if (!*p) break;
        const char* start = p;
        while (*p && *p != '/') ++p;
        size_t n = static_cast<size_t>(p - start);
        if (len + n + 2 >= sizeof prefix) return -ENAMETOOLONG;
        if (len) prefix[len++] = '/';
        std::memcpy(prefix + len, start, n);
        len += n;
        prefix[len] = 0;
        char leaf[NAME_MAX + 1];
        if (n > NAME_MAX) return -ENAMETOOLONG;
        std::memcpy(leaf, start, n);
        leaf[n] = 0;
        while (*p == '/') ++p;
        bool last = !*p;
        long next = openat2_path(root, prefix);
        if (next < 0 && errno == ENOENT) {
            int dir = parent >= 0 ? parent : root;
            int rc;
            if (last && is_file) {
                rc = ::openat(dir, leaf, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, 0644);
                if (rc >= 0) ::close(rc);
            } else {
                rc = ::mkdirat(dir, leaf, 0755);
            }
            if (rc < 0 && errno != EEXIST) {
                int err = errno;
                if (parent >= 0) ::close(parent);
                return -err;
            }
            next = openat2_path(root, prefix);
        }
        if (next < 0) {
            int err = errno;
            if (parent >= 0) ::close(parent);
            return -err;
        }
        if (parent >= 0) ::close(parent);
        parent = static_cast<int>(next);
    }
    return parent >= 0 ? parent : -ENOENT;
}

namespace {

int new_filesystem(const Step& s) {
    int fc = ::fsopen(s.fstype, FSOPEN_CLOEXEC);
    if (fc < 0) return -errno;
    for (size_t i = 0; i + 1 < s.options.size(); i += 2) {
        int rc = s.options[i + 1] ? ::fsconfig(fc, FSCONFIG_SET_STRING, s.options[i], s.options[i + 1], 0)
                                  : ::fsconfig(fc, FSCONFIG_SET_FLAG, s.options[i], nullptr, 0);
        if (rc < 0) {
            int err = errno;
            ::close(fc);
            return -err;
        }
    }
    if (::fsconfig(fc, FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) < 0) {
        int err = errno;
        ::close(fc);
        return -err;
    }
    int mnt = ::fsmount(fc, FSMOUNT_CLOEXEC, s.attr);
    int err = errno;
    ::close(fc);
    return mnt >= 0 ? mnt : -err;
}

// A read-only overlay of a bind's detached tree and an empty folder: the same
// files, but a file system of its own, so /proc/self/mountinfo inside shows
// "/" as its root and "." as its layers, not the source's path on the host.
// The layers are named relative to the working directory for that reason.
int overlay_of(const Step& s) {
    int fc = ::fsopen("overlay", FSOPEN_CLOEXEC);
    if (fc < 0) return -errno;
    bool ok = ::fchdir(s.tree_fd) == 0 && ::fsconfig(fc, FSCONFIG_SET_STRING, "lowerdir+", ".", 0) == 0 &&
              ::fchdir(s.empty_fd) == 0 && ::fsconfig(fc, FSCONFIG_SET_STRING, "lowerdir+", ".", 0) == 0 &&
              ::fsconfig(fc, FSCONFIG_CMD_CREATE, nullptr, nullptr, 0) == 0;
    int mnt = ok ? ::fsmount(fc, FSMOUNT_CLOEXEC, s.attr) : -1;
    int err = errno;
    ::close(fc);
    return mnt >= 0 ? mnt : -err;
}

int attach(int tree, int target) {
    return ::move_mount(tree, "", target, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0 ? -errno
                                                                                                     : 0;
}

int run_step(int root, const Step& s) {
    switch (s.kind) {
        case Step::NewFs: {
            int target = open_in_root(root, s.target, true, false);
            if (target < 0) return target;
            int mnt = new_filesystem(s);
            if (mnt < 0) {
                ::close(target);
                return mnt;
            }
            int rc = attach(mnt, target);
            ::close(mnt);
            ::close(target);
            return rc;
        }
        case Step::Bind: {
            int target = open_in_root(root, s.target, true, s.is_file);
            if (target < 0) return target;
            // Without overlays (an older kernel): the bind itself.
            int shown = s.empty_fd >= 0 ? overlay_of(s) : -1;
            int rc = attach(shown >= 0 ? shown : s.tree_fd, target);
            if (shown >= 0) ::close(shown);
            ::close(target);
            ::close(s.tree_fd);
            return rc;
        }
        case Step::Mkdir:
        case Step::Symlink: {
            int dir = open_in_root(root, s.parent, true, false);
            if (dir < 0) return dir;
            int rc =
                s.kind == Step::Mkdir ? ::mkdirat(dir, s.leaf, s.mode) : ::symlinkat(s.link_to, dir, s.leaf);
            int err = errno;
            ::close(dir);
            return rc < 0 && err != EEXIST ? -err : 0;
        }
    }
    return -EINVAL;
}

void bring_up_lo() {
    int s = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0) return;
    ifreq ifr{};
    std::memcpy(ifr.ifr_name, "lo", 3);
    if (::ioctl(s, SIOCGIFFLAGS, &ifr) == 0) {
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        ::ioctl(s, SIOCSIFFLAGS, &ifr);
    }
    ::close(s);
}

void wait_for_parent(const ChildPlan& plan) {
    char go = 0;
    ssize_t n;
    do n = ::read(plan.go_fd, &go, 1);
    while (n < 0 && errno == EINTR);
    if (n != 1) ::_exit(1);  // the parent gave up on us
}

[[noreturn]] void child_main(const ChildPlan& plan) {
    ::close(plan.go_fd_other);
    ::close(plan.err_fd_other);
    ::close(plan.ready_fd_other);
    // The daemon's handlers must not run here; the mask stays full until exec.
    for (int sig = 1; sig < NSIG; ++sig) {
        struct sigaction sa {};
        sa.sa_handler = SIG_DFL;
        ::sigaction(sig, &sa, nullptr);
    }
    ::umask(0);

    // Stage one, still the host's root, in a mount namespace the host's user
    // namespace owns: everything the host gives the qube is mounted here.
    // What gets created meanwhile (mount points, the roots of /dev and /run)
    // belongs to the qube's root: the file system ids are its.
    ::syscall(SYS_setfsgid, plan.id_base);
    ::syscall(SYS_setfsuid, plan.id_base);
    // Nothing mounted here reaches the host.
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_SLAVE, nullptr) < 0)
        child_fail(plan, "making the mounts slaves", errno);
    // The root tree goes on top of "/"; absolute paths keep meaning the host's
    // tree until pivot_root, everything else goes through descriptors.
    if (::move_mount(plan.root_tree, "", AT_FDCWD, "/", MOVE_MOUNT_F_EMPTY_PATH) < 0)
        child_fail(plan, plan.attach_root_what, errno);
    for (const Step& s : plan.steps) {
        if (s.by_qube) continue;
        int rc = run_step(plan.root_tree, s);
        if (rc < 0 && !s.optional) child_fail(plan, s.what, -rc);
    }
    if (::fchdir(plan.root_tree) < 0) child_fail(plan, plan.pivot_what, errno);
    if (::syscall(SYS_pivot_root, ".", ".") < 0) child_fail(plan, plan.pivot_what, errno);
    if (::umount2(".", MNT_DETACH) < 0) child_fail(plan, "detaching the host's root", errno);
    if (::chdir("/") < 0) child_fail(plan, "chdir to the new root", errno);
    ::close(plan.root_tree);

    // Stage two: the qube's own user namespace, and with it the copy of this
    // mount namespace the qube's root will own. Copied into a less privileged
    // user namespace, every mount is locked by the kernel: its read-only,
    // nosuid, nodev, noexec and atime flags cannot be cleared (MNT_LOCK_*),
    // and it cannot be unmounted to reveal what it covers (MNT_LOCKED). Its
    // network, IPC and UTS namespaces are the qube's too; the PID namespace
    // stays the host's (so the qube cannot mount another /proc).
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS) < 0)
        child_fail(plan, "unshare of the qube's user namespace", errno);
    char one = 1;
    if (::write(plan.ready_fd, &one, 1) != 1) ::_exit(1);
    ::close(plan.ready_fd);
    // The parent writes the maps and puts us into our cgroups meanwhile.
    wait_for_parent(plan);
    ::close(plan.go_fd);
    if (::setgroups(0, nullptr) < 0) child_fail(plan, "setgroups in the qube's user namespace", errno);
    if (::setresgid(0, 0, 0) < 0) child_fail(plan, "setresgid to the qube's root", errno);
    if (::setresuid(0, 0, 0) < 0) child_fail(plan, "setresuid to the qube's root", errno);
    int root = ::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0) child_fail(plan, "opening the qube's root", errno);
    for (const Step& s : plan.steps) {
        if (!s.by_qube) continue;
        int rc = run_step(root, s);
        if (rc < 0 && !s.optional) child_fail(plan, s.what, -rc);
    }
    ::close(root);

    if (plan.hostname && ::sethostname(plan.hostname, std::strlen(plan.hostname)) < 0)
        child_fail(plan, "sethostname", errno);
    bring_up_lo();

    // In our cgroups already: ours becomes the root of the qube's view.
    if (::unshare(CLONE_NEWCGROUP) < 0) child_fail(plan, "unshare of the cgroup namespace", errno);

    int null_fd = ::open("/dev/null", O_RDWR);
    if (null_fd < 0) child_fail(plan, "opening /dev/null in the qube", errno);
    if (::dup2(null_fd, 0) < 0) child_fail(plan, "stdin", errno);
    int out = plan.console_fd >= 0 ? plan.console_fd : null_fd;
    if (::dup2(out, 1) < 0 || ::dup2(out, 2) < 0) child_fail(plan, "stdout/stderr", errno);
    for (int fd = 0; fd < 3; ++fd) ::fcntl(fd, F_SETFD, 0);  // dup2 onto itself keeps close-on-exec
    if (::close_range(3, ~0u, CLOSE_RANGE_CLOEXEC) < 0) child_fail(plan, "close_range", errno);
    ::umask(022);

    // Capabilities: the bounding set first (needs CAP_SETPCAP), then ours.
    for (int cap : plan.caps->drop)
        if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            child_fail(plan, "dropping a capability from the bounding set", errno);
    ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
    __user_cap_header_struct hdr{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[2] = {{plan.caps->keep[0], plan.caps->keep[0], 0},
                                      {plan.caps->keep[1], plan.caps->keep[1], 0}};
    if (::syscall(SYS_capset, &hdr, data) < 0) child_fail(plan, "capset", errno);
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) child_fail(plan, "no_new_privs", errno);
    sock_fprog prog{static_cast<unsigned short>(plan.seccomp->size()),
                    const_cast<sock_filter*>(plan.seccomp->data())};
    if (::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) < 0)
        child_fail(plan, "loading the seccomp filter", errno);

    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::execve(plan.argv[0], plan.argv.data(), plan.envp.data());
    child_fail(plan, plan.exec_what, errno);
}

// ---- the parent --------------------------------------------------------------

// An O_PATH descriptor of a mount's source: the caller's, opened beneath a
// trusted parent (anything a qube can write), or a trusted host path opened here.
Fd open_source(const BindMount& m, const std::string& what) {
    if (m.source_fd && m.source_fd->valid()) {
        Fd fd(::fcntl(m.source_fd->get(), F_DUPFD_CLOEXEC, 0));
        if (!fd) throw_errno(what, errno);
        return fd;
    }
    Fd fd(::open(m.source.c_str(), O_PATH | O_CLOEXEC));
    if (!fd) throw_errno(what, errno);
    return fd;
}

bool is_directory(int fd, const std::string& what) {
    return S_ISDIR(base::stat_fd(fd, what).st_mode);
}

// A detached copy of the one mount object `opath_fd` refers to (never its
// submounts: the host's mounts below a source stay the host's), with `attr`.
Fd clone_detached(int opath_fd, unsigned attr, const std::string& what) {
    Fd fd = base::clone_tree(opath_fd, what);
    if (attr) {
        mount_attr ma{};
        ma.attr_set = attr;
        if (::mount_setattr(fd.get(), "", AT_EMPTY_PATH, &ma, sizeof ma) < 0)
            throw_errno(what + " (mount attributes)", errno);
    }
    return fd;
}

}  // namespace

std::string relative_target(const std::string& target) {
    if (target.empty() || target[0] != '/') throw BackendError("mount target is not absolute: " + target);
    std::string out;
    size_t i = 0;
    while (i < target.size()) {
        while (i < target.size() && target[i] == '/') ++i;
        size_t j = target.find('/', i);
        if (j == std::string::npos) j = target.size();
        std::string comp = target.substr(i, j - i);
        if (comp == "." || comp == "..") throw BackendError("mount target with . or ..: " + target);
        if (!comp.empty()) out += (out.empty() ? "" : "/") + comp;
        i = j;
    }
    if (out.empty()) throw BackendError("mount target is the root: " + target);
    return out;
}

namespace {

void write_map(pid_t pid, const char* file, uid_t base, uint32_t count) {
    std::string path = "/proc/" + std::to_string(pid) + "/" + file;
    write_file(path, "0 " + std::to_string(base) + " " + std::to_string(count) + "\n");
}

}  // namespace

Launched launch(const LaunchRequest& req) {
    auto t0 = Clock::now();
    if (req.argv.empty() || req.argv[0].empty() || req.argv[0][0] != '/')
        throw BackendError("init must be an absolute path inside the qube");
    if (!req.seccomp || !req.caps) throw BackendError("launch without seccomp filter or capability plan");

    // Every string the child uses lives here until it has exec'd.
    std::deque<std::string> text;
    auto keep = [&](std::string s) -> const char* { return text.emplace_back(std::move(s)).c_str(); };
    std::vector<Fd> trees;

    ChildPlan plan;
    const std::string root = req.root.string();
    unsigned root_attr = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (req.root_read_only ? MOUNT_ATTR_RDONLY : 0);
    // Mount points the qube's root could not create itself in a root it does
    // not own (e.g. a template owned by host root): made here, resolved inside
    // the root like the child does, so links in the root lead nowhere else.
    Fd root_dir = base::open_trusted_dir(req.root);
    std::vector<Fd> sources;  // of req.mounts, in order
    for (const auto& m : req.mounts)
        sources.push_back(open_source(
            m, "bind mount of " + m.source.string() + " on " + root + "/" + relative_target(m.target)));
    {
        int dir = root_dir.get();
        auto ensure = [&](const std::string& rel, bool is_file) {
            int fd = open_in_root(dir, rel.c_str(), true, is_file);
            if (fd < 0) throw_errno("creating the mount point " + root + "/" + rel, -fd);
            ::close(fd);
        };
        for (const char* d : {"proc", "sys", "dev", "run", "tmp"}) ensure(d, false);
        for (size_t i = 0; i < req.mounts.size(); ++i) {
            std::string rel = relative_target(req.mounts[i].target);
            std::string top = rel.substr(0, rel.find('/'));
            if (top == "dev" || top == "run" || top == "tmp") continue;  // the qube's own tmpfs
            ensure(rel, !is_directory(sources[i].get(), req.mounts[i].source.string()));
        }
    }
    Fd root_tree = clone_detached(root_dir.get(), root_attr, "cloning the root " + root);
    plan.root_tree = root_tree.get();
    plan.attach_root_what = keep("attaching the root " + root);
    plan.pivot_what = keep("pivot_root into " + root);

    // by_qube: made by the qube's root once in its user namespace (what is its
    // own: its devpts, /dev/shm, /tmp); the rest by the host, then locked.
    auto new_fs = [&](const char* type, const char* target, unsigned attr, std::vector<const char*> opts,
                      bool optional = false, bool by_qube = false) {
        Step s;
        s.kind = Step::NewFs;
        s.by_qube = by_qube;
        s.fstype = type;
        s.target = target;
        s.attr = attr;
        s.options = std::move(opts);
        s.optional = optional;
        s.what = keep(std::string("mounting ") + type + " on " + root + "/" + target);
        plan.steps.push_back(std::move(s));
    };
    // Read-only folders are shown through an overlay (overlay_of) with this
    // empty layer, so their host paths stay out of the qube's mountinfo.
    Fd empty_layer;
    {
        Step empty;
        empty.fstype = "tmpfs";
        empty.options = {"mode", "0555", "nr_inodes", "16"};
        empty.attr = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
        int fd = new_filesystem(empty);
        if (fd >= 0) empty_layer.reset(fd);
    }
    auto bind = [&](int source_fd, const fs::path& source, const std::string& target, unsigned attr, bool plain) {
        std::string rel = relative_target(target);
        std::string what = "bind mount of " + source.string() + " on " + root + "/" + rel;
        trees.push_back(clone_detached(source_fd, attr, what));
        Step s;
        s.kind = Step::Bind;
        s.target = keep(rel);
        s.tree_fd = trees.back().get();
        s.is_file = !is_directory(source_fd, what);
        s.attr = attr;
        if (!s.is_file && !plain && (attr & MOUNT_ATTR_RDONLY)) s.empty_fd = empty_layer.get();
        s.what = keep(what);
        plan.steps.push_back(std::move(s));
    };
    auto link_or_dir = [&](Step::Kind kind, const std::string& rel, const char* to, mode_t mode) {
        Step s;
        s.kind = kind;
        size_t slash = rel.rfind('/');
        s.parent = keep(rel.substr(0, slash));
        s.leaf = keep(rel.substr(slash + 1));
        s.link_to = to;
        s.mode = mode;
        s.by_qube = true;
        s.what = keep((kind == Step::Mkdir ? "creating " : "linking ") + root + "/" + rel);
        plan.steps.push_back(std::move(s));
    };

    const unsigned nosuid_nodev = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
    const unsigned sealed = nosuid_nodev | MOUNT_ATTR_NOEXEC;
    // /proc shows the qube's PID namespace (this one's, made by the clone).
    new_fs("proc", "proc", sealed, {});
    // The host's sysfs shows the network namespace of its mounter: this one's
    // (empty) first, proving to the kernel that sysfs may be mounted in the
    // qube's mount namespace; then the qube's own on top.
    new_fs("sysfs", "sys", sealed | MOUNT_ATTR_RDONLY, {}, true);
    new_fs("sysfs", "sys", sealed | MOUNT_ATTR_RDONLY, {}, true, true);
    new_fs("tmpfs", "dev", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, {"mode", "0755", "size", "1m"});
    for (const char* dev : {"null", "zero", "full", "random", "urandom", "tty"}) {
        std::string path = std::string("/dev/") + dev;
        Fd node(::open(path.c_str(), O_PATH | O_CLOEXEC));
        if (!node) throw_errno("opening " + path, errno);
        bind(node.get(), path, path, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, false);
    }
    new_fs("devpts", "dev/pts", MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
           {"newinstance", nullptr, "ptmxmode", "0666", "mode", "0620", "gid", "5"}, false, true);
    link_or_dir(Step::Symlink, "dev/ptmx", "pts/ptmx", 0);
    new_fs("tmpfs", "dev/shm", nosuid_nodev, {"mode", "1777"}, false, true);
    new_fs("mqueue", "dev/mqueue", sealed, {}, true, true);
    link_or_dir(Step::Symlink, "dev/fd", "/proc/self/fd", 0);
    link_or_dir(Step::Symlink, "dev/stdin", "/proc/self/fd/0", 0);
    link_or_dir(Step::Symlink, "dev/stdout", "/proc/self/fd/1", 0);
    link_or_dir(Step::Symlink, "dev/stderr", "/proc/self/fd/2", 0);
    new_fs("tmpfs", "run", nosuid_nodev, {"mode", "0755"});
    link_or_dir(Step::Mkdir, "run/lock", nullptr, 01777);
    new_fs("tmpfs", "tmp", nosuid_nodev, {"mode", "1777"}, false, true);
    // The spec's mounts, parents before children.
    std::vector<size_t> order;
    for (size_t i = 0; i < req.mounts.size(); ++i) order.push_back(i);
    auto depth = [&](size_t i) {
        return std::count(req.mounts[i].target.begin(), req.mounts[i].target.end(), '/');
    };
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return depth(a) < depth(b); });
    for (size_t i : order) {
        const BindMount& m = req.mounts[i];
        bind(sources[i].get(), m.source, m.target, nosuid_nodev | (m.read_only ? MOUNT_ATTR_RDONLY : 0), m.plain);
    }
    sources.clear();
    root_dir.reset();

    if (!req.hostname.empty()) plan.hostname = keep(req.hostname);
    plan.console_fd = req.console_fd;
    for (const auto& a : req.argv) plan.argv.push_back(const_cast<char*>(keep(a)));
    plan.argv.push_back(nullptr);
    for (const auto& e : req.env) plan.envp.push_back(const_cast<char*>(keep(e)));
    plan.envp.push_back(nullptr);
    plan.exec_what = keep("executing " + req.argv[0] + " in the qube");
    plan.seccomp = req.seccomp;
    plan.caps = req.caps;

    int go[2], err[2], ready[2];
    if (::pipe2(go, O_CLOEXEC) < 0) throw_errno("pipe", errno);
    Fd go_r(go[0]), go_w(go[1]);
    if (::pipe2(err, O_CLOEXEC) < 0) throw_errno("pipe", errno);
    Fd err_r(err[0]), err_w(err[1]);
    if (::pipe2(ready, O_CLOEXEC) < 0) throw_errno("pipe", errno);
    Fd ready_r(ready[0]), ready_w(ready[1]);
    plan.ready_fd = ready_w.get();
    plan.ready_fd_other = ready_r.get();
    plan.id_base = req.id_base;
    plan.go_fd = go_r.get();
    plan.go_fd_other = go_w.get();
    plan.err_fd = err_w.get();
    plan.err_fd_other = err_r.get();

    sigset_t all, old;
    sigfillset(&all);
    ::pthread_sigmask(SIG_SETMASK, &all, &old);
    auto t1 = Clock::now();
    int pidfd = -1;
    // The user namespace (and with it the qube's network, IPC and UTS ones)
    // comes later, from the child itself, once the host's mounts are in place.
    // The network namespace made here only keeps the first sysfs empty.
    long pid = ::syscall(SYS_clone, CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_PIDFD | SIGCHLD,
                         nullptr, &pidfd, nullptr, nullptr);
    if (pid == 0) child_main(plan);
    int clone_err = errno;
    ::pthread_sigmask(SIG_SETMASK, &old, nullptr);
    if (pid < 0) throw_errno("clone of the qube's first process", clone_err);

    Launched out;
    out.pid = static_cast<pid_t>(pid);
    out.pidfd.reset(pidfd);
    go_r.reset();
    err_w.reset();
    ready_w.reset();
    root_tree.reset();
    empty_layer.reset();
    trees.clear();
    auto abandon = [&] {
        ::kill(out.pid, SIGKILL);
        int st;
        while (::waitpid(out.pid, &st, __WALL) < 0 && errno == EINTR) {
        }
    };
    auto send_go = [&] {
        char one = 1;
        if (::write(go_w.get(), &one, 1) != 1) throw_errno("starting the qube's first process", errno);
    };
    // The child builds its file system while we put it into its cgroups.
    std::exception_ptr attach_error;
    try {
        if (req.attach) req.attach(out.pid);
    } catch (...) {
        attach_error = std::current_exception();
    }
    // Once it has made its user namespace: the maps, then the go.
    if (!attach_error) {
        char got_ready = 0;
        ssize_t n = 0;
        for (;;) {
            pollfd p{ready_r.get(), POLLIN, 0};
            int rc = ::poll(&p, 1, 30000);
            if (rc < 0 && errno == EINTR) continue;
            if (rc == 0) {
                abandon();
                throw BackendError("the qube's first process did not make its user namespace within 30 s");
            }
            do n = ::read(ready_r.get(), &got_ready, 1);
            while (n < 0 && errno == EINTR);
            break;
        }
        if (n == 1) {
            try {
                write_map(out.pid, "uid_map", req.id_base, req.id_count);
                write_map(out.pid, "gid_map", req.id_base, req.id_count);
                send_go();
            } catch (...) {
                abandon();
                throw;
            }
        }
    }
    go_w.reset();  // without the byte the child gives up

    ErrorReport report;
    size_t got = 0;
    for (;;) {
        pollfd p{err_r.get(), POLLIN, 0};
        int rc = ::poll(&p, 1, 30000);
        if (rc < 0 && errno == EINTR) continue;
        if (rc == 0) {
            abandon();
            throw BackendError("the qube's first process did not start within 30 s");
        }
        ssize_t n = ::read(err_r.get(), reinterpret_cast<char*>(&report) + got, sizeof report - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        got += static_cast<size_t>(n);
        if (got == sizeof report) break;
    }
    if (got > 0) {
        abandon();
        report.step[kStepText - 1] = 0;
        throw BackendError(errno_text(report.step, report.err));
    }
    if (attach_error) {
        abandon();
        std::rethrow_exception(attach_error);
    }
    auto t2 = Clock::now();
    out.prepare = std::chrono::duration_cast<std::chrono::microseconds>(t1 - t0);
    out.setup = std::chrono::duration_cast<std::chrono::microseconds>(t2 - t1);
    return out;
}

}  // namespace aerie::backend::ns
