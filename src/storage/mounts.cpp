#include "storage/mounts.hpp"

#include <fcntl.h>
#include <linux/loop.h>
#include <sys/ioctl.h>
#include <sys/sysmacros.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <vector>

#include "base/unique_fd.hpp"
#include "storage/image.hpp"

namespace aerie::storage {

namespace fs = std::filesystem;

namespace {

struct HelperArgs {
    int read_fd;
    int write_fd;
};

// The helper only waits for the end of the pipe: it lives so that its
// namespace's maps can be written. It shares our memory, so it does nothing
// that could touch errno or locks (close of a valid descriptor, read).
int userns_helper(void* arg) {
    auto* a = static_cast<HelperArgs*>(arg);
    ::close(a->write_fd);
    char c;
    while (::read(a->read_fd, &c, 1) > 0) {
    }
    return 0;
}

void write_map(pid_t pid, const char* file, const std::string& map) {
    std::string path = "/proc/" + std::to_string(pid) + "/" + file;
    int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
    if (fd < 0) throw_storage_errno("opening " + path, errno);
    ssize_t n = ::write(fd, map.data(), map.size());
    int err = errno;
    ::close(fd);
    if (n != static_cast<ssize_t>(map.size())) throw_storage_errno("writing " + path, n < 0 ? err : EIO);
}

std::string unescape_mountinfo(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1])) &&
            std::isdigit(static_cast<unsigned char>(s[i + 2])) &&
            std::isdigit(static_cast<unsigned char>(s[i + 3]))) {
            out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0'));
            i += 3;
        } else {
            out += s[i];
        }
    }
    return out;
}

}  // namespace

int make_userns_fd(uid_t base, uint32_t count) {
    int pipefd[2];
    if (::pipe2(pipefd, O_CLOEXEC) < 0) throw_storage_errno("pipe", errno);
    HelperArgs args{pipefd[0], pipefd[1]};
    constexpr size_t kStack = 64 * 1024;
    void* stack =
        ::mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) {
        int err = errno;
        ::close(pipefd[0]);
        ::close(pipefd[1]);
        throw_storage_errno("allocating a stack", err);
    }
    // No exit signal: a SIGCHLD handler reaping every child leaves it alone.
    pid_t pid = ::clone(userns_helper, static_cast<char*>(stack) + kStack, CLONE_NEWUSER | CLONE_VM, &args);
    int clone_err = errno;
    int fd = -1;
    std::string error;
    int err = 0;
    if (pid < 0) {
        error = "creating a user namespace";
        err = clone_err;
    } else {
        try {
            std::string map = "0 " + std::to_string(base) + " " + std::to_string(count) + "\n";
            write_map(pid, "uid_map", map);
            write_map(pid, "gid_map", map);
            std::string ns = "/proc/" + std::to_string(pid) + "/ns/user";
            fd = ::open(ns.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0) {
                error = "opening " + ns;
                err = errno;
            }
        } catch (const StorageError& e) {
            error = e.what();
        }
    }
    ::close(pipefd[1]);  // the helper ends
    if (pid > 0) {
        while (::waitpid(pid, nullptr, __WALL) < 0 && errno == EINTR) {
        }
    }
    ::close(pipefd[0]);
    ::munmap(stack, kStack);
    if (!error.empty()) {
        if (err) throw_storage_errno(error, err);
        throw StorageError(error);
    }
    return fd;
}

void idmapped_bind(const fs::path& source, const fs::path& target, int userns_fd) {
    int tree = ::open_tree(AT_FDCWD, source.c_str(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
    if (tree < 0) throw_storage_errno("cloning " + source.string(), errno);
    struct mount_attr attr {};
    attr.attr_set = MOUNT_ATTR_IDMAP;
    attr.userns_fd = static_cast<uint64_t>(userns_fd);
    int rc = ::mount_setattr(tree, "", AT_EMPTY_PATH, &attr, sizeof attr);
    int err = errno;
    if (rc < 0) {
        ::close(tree);
        throw_storage_errno("id-mapping " + source.string(), err);
    }
    rc = ::move_mount(tree, "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH);
    err = errno;
    ::close(tree);
    if (rc < 0) throw_storage_errno("mounting " + source.string() + " on " + target.string(), err);
}

void plain_bind(const fs::path& source, const fs::path& target) {
    if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND, nullptr) < 0)
        throw_storage_errno("binding " + source.string() + " on " + target.string(), errno);
}

bool idmapped_mounts_work(const fs::path& dir) {
    fs::path probe = dir / (".idmap-probe-" + std::to_string(::getpid()));
    std::error_code ec;
    fs::remove_all(probe, ec);
    if (::mkdir(probe.c_str(), 0700) < 0) return false;
    bool ok = false;
    if (::mkdir((probe / "m").c_str(), 0700) == 0) {
        try {
            int userns = make_userns_fd(0x7ff00000u, 1);
            try {
                idmapped_bind(probe / "m", probe / "m", userns);
                ok = true;
            } catch (const StorageError&) {
            }
            ::close(userns);
        } catch (const StorageError&) {
        }
        if (ok) ::umount2((probe / "m").c_str(), MNT_DETACH);
    }
    fs::remove_all(probe, ec);
    return ok;
}

// The layers are given as /proc/self/fd/N of descriptors opened here: the
// overlay's options (shown in the qube's /proc/self/mountinfo) then name no
// host folder.
void mount_overlay(const fs::path& lower, const fs::path& upper, const fs::path& work,
                   const fs::path& target) {
    std::vector<base::UniqueFd> layers;
    std::string shown[3];
    const fs::path* paths[3] = {&lower, &upper, &work};
    for (int i = 0; i < 3; ++i) {
        int fd = ::open(paths[i]->c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0) throw_storage_errno("opening the overlay layer " + paths[i]->string(), errno);
        layers.emplace_back(fd);
        shown[i] = "/proc/self/fd/" + std::to_string(fd);
    }
    const std::string options = "lowerdir=" + shown[0] + ",upperdir=" + shown[1] + ",workdir=" + shown[2];
    for (const char* extra : {",volatile,redirect_dir=on", ",volatile", ""}) {
        std::string opts = options + extra;
        if (::mount("overlay", target.c_str(), "overlay", 0, opts.c_str()) == 0) return;
        if (errno != EINVAL) break;
    }
    throw_storage_errno("mounting an overlay on " + target.string(), errno);
}

bool unmount_all(const fs::path& target) {
    bool any = false;
    for (int i = 0; i < 64; ++i) {
        if (::umount2(target.c_str(), UMOUNT_NOFOLLOW | MNT_DETACH) == 0) {
            any = true;
            continue;
        }
        if (errno == EINVAL || errno == ENOENT || errno == ENOTDIR) return any;
        throw_storage_errno("unmounting " + target.string(), errno);
    }
    return any;
}

namespace {

constexpr unsigned kLoopMajor = 7;
// <linux/fs.h>'s, which clashes with <sys/mount.h>.
#ifndef FIFREEZE
#define FIFREEZE _IOWR('X', 119, int)
#define FITHAW _IOWR('X', 120, int)
#endif

// A free loop device, opened (made by the kernel on demand; its node made
// here where /dev is no devtmpfs).
int open_free_loop(int* number) {
    int control = ::open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (control < 0) throw_storage_errno("opening /dev/loop-control", errno);
    int n = ::ioctl(control, LOOP_CTL_GET_FREE);
    int err = errno;
    ::close(control);
    if (n < 0) throw_storage_errno("finding a free loop device", err);
    std::string dev = "/dev/loop" + std::to_string(n);
    int fd = ::open(dev.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        ::mknod(dev.c_str(), S_IFBLK | 0660, makedev(kLoopMajor, static_cast<unsigned>(n)));
        fd = ::open(dev.c_str(), O_RDWR | O_CLOEXEC);
    }
    if (fd < 0) throw_storage_errno("opening " + dev, errno);
    *number = n;
    return fd;
}

// Which loop device carries which image file (device, inode): a file system
// whose last mount in this namespace went while a copy of it lived on
// elsewhere (a mount namespace cloned meanwhile, e.g. a qube's during its
// launch) keeps its superblock, and its loop device, until that copy goes.
// Mounting that device again gives the same superblock; a second loop device
// would give a second one over the same image, which corrupts it.
//
// Remembered here as devices are attached; the loop devices of the host are
// read once per process (those of an earlier aeried), not at every mount: a
// host may have hundreds of them, and reading each costs a start milliseconds.
class LoopDevices {
public:
    // The device carrying `image`, opened, or -1.
    int open_carrier(const struct stat& image, int* number) {
        std::lock_guard lock(mutex_);
        if (!scanned_) scan();
        auto it = carriers_.find(key(image));
        if (it == carriers_.end()) return -1;
        int fd = open_if_carrying(it->second, image);
        if (fd < 0) {
            carriers_.erase(it);  // detached since (autoclear): the image is free
            return -1;
        }
        *number = it->second;
        return fd;
    }

    void attached(const struct stat& image, int number) {
        std::lock_guard lock(mutex_);
        carriers_[key(image)] = number;
    }

private:
    using Key = std::pair<dev_t, ino_t>;
    static Key key(const struct stat& st) { return {st.st_dev, st.st_ino}; }

    static int open_if_carrying(int number, const struct stat& image) {
        int fd = ::open(("/dev/loop" + std::to_string(number)).c_str(), O_RDWR | O_CLOEXEC);
        if (fd < 0) return -1;
        struct loop_info64 info {};
        if (::ioctl(fd, LOOP_GET_STATUS64, &info) == 0 && info.lo_device == image.st_dev &&
            info.lo_inode == image.st_ino)
            return fd;
        ::close(fd);
        return -1;
    }

    void scan() {
        scanned_ = true;
        std::error_code ec;
        for (fs::directory_iterator it("/sys/block", ec), end; !ec && it != end; it.increment(ec)) {
            const std::string name = it->path().filename().string();
            if (name.rfind("loop", 0) != 0 || !fs::exists(it->path() / "loop" / "backing_file", ec)) continue;
            int fd = ::open(("/dev/" + name).c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0) continue;
            struct loop_info64 info {};
            if (::ioctl(fd, LOOP_GET_STATUS64, &info) == 0)
                carriers_[{static_cast<dev_t>(info.lo_device), static_cast<ino_t>(info.lo_inode)}] =
                    std::atoi(name.c_str() + 4);
            ::close(fd);
        }
    }

    std::mutex mutex_;
    bool scanned_ = false;
    std::map<Key, int> carriers_;
};

LoopDevices& loop_devices() {
    static LoopDevices devices;
    return devices;
}

}  // namespace

// CAP_SYS_RESOURCE in our effective set (/proc/self/status CapEff).
static bool has_sys_resource() {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("CapEff:", 0) == 0) {
            unsigned long long caps = std::stoull(line.substr(7), nullptr, 16);
            return caps & (1ull << 24);  // CAP_SYS_RESOURCE
        }
    return false;
}

void mount_image(const fs::path& image, const fs::path& target, bool allow_suid, bool scratch) {
    int file = ::open(image.c_str(), O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (file < 0) throw_storage_errno("opening " + image.string(), errno);
    struct stat image_st {};
    if (::fstat(file, &image_st) < 0) {
        int err = errno;
        ::close(file);
        throw_storage_errno("reading " + image.string(), err);
    }
    int number = -1;
    int loop = loop_devices().open_carrier(image_st, &number);
    // Another process may take the same free device first: try again.
    for (int attempt = 0; loop < 0 && attempt < 16; ++attempt) {
        try {
            loop = open_free_loop(&number);
        } catch (...) {
            ::close(file);
            throw;
        }
        struct loop_config config {};
        config.fd = static_cast<uint32_t>(file);
        config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        std::snprintf(reinterpret_cast<char*>(config.info.lo_file_name), LO_NAME_SIZE, "%s", image.c_str());
        if (::ioctl(loop, LOOP_CONFIGURE, &config) == 0) {
            loop_devices().attached(image_st, number);
            break;
        }
        int err = errno;
        ::close(loop);
        loop = -1;
        if (err != EBUSY) {
            ::close(file);
            throw_storage_errno("attaching " + image.string() + " to a loop device", err);
        }
    }
    ::close(file);
    if (loop < 0) throw StorageError("attaching " + image.string() + ": no free loop device");
    std::string dev = "/dev/loop" + std::to_string(number);
    unsigned long flags = MS_NODEV | MS_NOATIME | (allow_suid ? 0 : MS_NOSUID);
    int rc = ::mount(dev.c_str(), target.c_str(), "ext4", flags, scratch ? "noinit_itable,nobarrier" : "noinit_itable");
    int err = errno;
    ::close(loop);  // from now on the mount holds it; without a mount it goes
    if (rc < 0) throw_storage_errno("mounting " + image.string() + " on " + target.string(), err);
}

bool unmount_volume(const fs::path& target) {
    if (::umount2(target.c_str(), UMOUNT_NOFOLLOW) == 0) return true;
    if (errno == EBUSY) return unmount_all(target);
    if (errno == EINVAL || errno == ENOENT || errno == ENOTDIR) return false;
    throw_storage_errno("unmounting " + target.string(), errno);
}

bool is_mount_root(const fs::path& path) {
    struct statx stx {};
    if (::statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, &stx) < 0) return false;
    return (stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) && (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT);
}

bool grow_mounted_filesystem(const fs::path& target) {
    struct stat st;
    if (::stat(target.c_str(), &st) < 0) throw_storage_errno("reading " + target.string(), errno);
    if (major(st.st_dev) != kLoopMajor) throw StorageError(target.string() + " is not a mounted volume");
    std::string dev = "/dev/loop" + std::to_string(minor(st.st_dev));
    int loop = ::open(dev.c_str(), O_RDONLY | O_CLOEXEC);
    if (loop < 0) throw_storage_errno("opening " + dev, errno);
    int rc = ::ioctl(loop, LOOP_SET_CAPACITY, 0);
    int err = errno;
    try {
        if (rc < 0) throw_storage_errno("resizing " + dev, err);
        if (!has_sys_resource()) {
            ::close(loop);
            return false;
        }
        run_e2fsprogs("resize2fs", {dev});
    } catch (...) {
        ::close(loop);
        throw;
    }
    ::close(loop);
    return true;
}

FrozenVolume::FrozenVolume(const fs::path& target) {
    fd_ = ::open(target.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd_ < 0) throw_storage_errno("opening " + target.string(), errno);
    if (::ioctl(fd_, FIFREEZE, 0) < 0) {
        int err = errno;
        ::close(fd_);
        throw_storage_errno("freezing " + target.string(), err);
    }
}

FrozenVolume::~FrozenVolume() {
    ::ioctl(fd_, FITHAW, 0);
    ::close(fd_);
}

std::vector<fs::path> mounts_under(const fs::path& dir) {
    std::ifstream in("/proc/self/mountinfo");
    const std::string top = dir.lexically_normal().string();
    std::vector<fs::path> found;
    std::string line;
    while (std::getline(in, line)) {
        // id parent major:minor root mount-point ...
        size_t pos = 0;
        for (int field = 0; field < 4 && pos != std::string::npos; ++field) {
            pos = line.find(' ', pos);
            if (pos != std::string::npos) ++pos;
        }
        if (pos == std::string::npos) continue;
        size_t end = line.find(' ', pos);
        std::string mp = unescape_mountinfo(line.substr(pos, end == std::string::npos ? end : end - pos));
        if (mp == top ||
            (mp.size() > top.size() && mp.compare(0, top.size(), top) == 0 && mp[top.size()] == '/'))
            found.emplace_back(mp);
    }
    std::reverse(found.begin(), found.end());  // the last made first
    return found;
}

}  // namespace aerie::storage
