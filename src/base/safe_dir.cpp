#include "base/safe_dir.hpp"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace aerie::base {

namespace {

constexpr uint64_t kResolveStrict =
    RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV;

long openat2_raw(int dirfd, const char* path, int flags, mode_t mode) {
    struct open_how how {};
    // O_DIRECTORY is left to the caller's type check: with it, a symlink
    // would be reported as ENOTDIR instead of ELOOP.
    how.flags = static_cast<uint64_t>(flags & ~O_DIRECTORY) | O_NOFOLLOW | O_CLOEXEC;
    how.mode = (flags & (O_CREAT | O_TMPFILE)) ? mode : 0;
    how.resolve = kResolveStrict;
    long fd;
    do fd = ::syscall(SYS_openat2, dirfd, path, &how, sizeof how);
    while (fd < 0 && errno == EAGAIN);
    return fd;
}

bool kind_matches(mode_t mode, FileKind kind) {
    switch (kind) {
        case FileKind::Any: return true;
        case FileKind::Directory: return S_ISDIR(mode);
        case FileKind::Regular: return S_ISREG(mode);
        case FileKind::Socket: return S_ISSOCK(mode);
    }
    return false;
}

const char* wanted_name(FileKind kind) {
    switch (kind) {
        case FileKind::Directory: return "a directory";
        case FileKind::Regular: return "a regular file";
        case FileKind::Socket: return "a socket";
        case FileKind::Any: break;
    }
    return "a file";
}

std::string describe(const std::string& label, const std::string& relative) {
    std::string where = label.empty() ? std::string("a qube's tree") : label;
    if (relative.empty() || relative == ".") return where;
    return where + ": " + relative;
}

std::string reason(int err) {
    // openat2 says ELOOP for a symlink and EXDEV for an escape or a mount crossing.
    if (err == ELOOP) return "is or passes through a symbolic link (refused)";
    if (err == EXDEV) return "leaves its tree or crosses a mount (refused)";
    return std::strerror(err);
}

}  // namespace

const char* kind_name(mode_t mode) {
    if (S_ISDIR(mode)) return "a directory";
    if (S_ISREG(mode)) return "a regular file";
    if (S_ISLNK(mode)) return "a symbolic link";
    if (S_ISSOCK(mode)) return "a socket";
    if (S_ISFIFO(mode)) return "a fifo";
    if (S_ISCHR(mode)) return "a character device";
    if (S_ISBLK(mode)) return "a block device";
    return "an unknown file type";
}

UniqueFd open_trusted_dir(const std::filesystem::path& path) {
    UniqueFd fd(::open(path.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) {
        int err = errno;
        throw UnsafePathError(path.string() + ": " + std::strerror(err), err);
    }
    return fd;
}

int open_beneath_errno(int dirfd, const char* relative, int flags, FileKind kind, mode_t mode) noexcept {
    const char* rel = (relative == nullptr || *relative == '\0') ? "." : relative;
    if (rel[0] == '/') return -EXDEV;
    int fd = static_cast<int>(openat2_raw(dirfd, rel, flags, mode));
    if (fd < 0) return -errno;
    // With O_PATH | O_NOFOLLOW a final symlink opens as itself: never wanted.
    struct stat st {};
    int err = 0;
    if (::fstat(fd, &st) != 0)
        err = errno;
    else if (S_ISLNK(st.st_mode))
        err = ELOOP;
    else if (!kind_matches(st.st_mode, kind))
        err = kind == FileKind::Directory ? ENOTDIR : EINVAL;
    if (err != 0) {
        ::close(fd);
        return -err;
    }
    return fd;
}

UniqueFd open_beneath(int dirfd, const std::string& relative, int flags, FileKind kind, const std::string& label,
                      mode_t mode) {
    const char* rel = relative.empty() ? "." : relative.c_str();
    if (rel[0] == '/') throw UnsafePathError(describe(label, relative) + ": an absolute name (refused)", EXDEV);
    UniqueFd fd(static_cast<int>(openat2_raw(dirfd, rel, flags, mode)));
    if (!fd) {
        int err = errno;
        throw UnsafePathError(describe(label, relative) + ": " + reason(err), err);
    }
    struct stat st = stat_fd(fd.get(), describe(label, relative));
    // With O_PATH | O_NOFOLLOW a final symlink opens as itself: never wanted.
    if (S_ISLNK(st.st_mode)) throw UnsafePathError(describe(label, relative) + ": " + reason(ELOOP), ELOOP);
    {
        if (!kind_matches(st.st_mode, kind))
            throw UnsafePathError(describe(label, relative) + ": is " + kind_name(st.st_mode) + ", not " +
                                      wanted_name(kind) + " (refused)",
                                  0);
    }
    return fd;
}

UniqueFd open_dir_beneath(int dirfd, const std::string& relative, const std::string& label) {
    return open_beneath(dirfd, relative, O_PATH | O_DIRECTORY, FileKind::Directory, label);
}

UniqueFd ensure_dir_beneath(int dirfd, const std::string& name, mode_t mode, const std::string& label) {
    if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
        throw UnsafePathError(describe(label, name) + ": not a single name", EINVAL);
    // mkdirat never follows a final symlink: an existing link makes EEXIST,
    // and the open below refuses it.
    if (::mkdirat(dirfd, name.c_str(), mode) != 0 && errno != EEXIST) {
        int err = errno;
        throw UnsafePathError(describe(label, name) + ": mkdir: " + std::strerror(err), err);
    }
    return open_dir_beneath(dirfd, name, label);
}

struct stat stat_fd(int fd, const std::string& label) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
        int err = errno;
        throw UnsafePathError(label + ": fstat: " + std::strerror(err), err);
    }
    return st;
}

int clone_tree_errno(int opath_fd) noexcept {
    int fd = static_cast<int>(
        ::syscall(SYS_open_tree, opath_fd, "", AT_EMPTY_PATH | OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
    return fd < 0 ? -errno : fd;
}

UniqueFd clone_tree(int opath_fd, const std::string& label) {
    int fd = clone_tree_errno(opath_fd);
    if (fd < 0) throw UnsafePathError(label + ": open_tree: " + std::strerror(-fd), -fd);
    return UniqueFd(fd);
}

}  // namespace aerie::base
