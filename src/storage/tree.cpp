#include "storage/tree.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "base/unique_fd.hpp"

namespace aerie::storage {

void throw_storage_errno(const std::string& what, int err) {
    throw StorageError(what + ": " + std::strerror(err));
}

namespace fs = std::filesystem;

namespace {

using Fd = base::UniqueFd;

constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

std::string proc_path(int dirfd, const std::string& name) {
    return "/proc/self/fd/" + std::to_string(dirfd) + "/" + name;
}

// Type, identity and the mount an entry lies on, without following links.
struct Entry {
    std::string name;
    struct statx sx;
    bool is_dir() const { return S_ISDIR(sx.stx_mode); }
};

bool stat_at(int dirfd, const std::string& name, unsigned mask, struct statx& out) {
    int flags = AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT | (name.empty() ? AT_EMPTY_PATH : 0);
    return ::statx(dirfd, name.c_str(), flags, mask | STATX_TYPE | STATX_MNT_ID, &out) == 0;
}

// The names in a directory (without "." and ".."), read before anything changes it.
std::vector<std::string> list_names(int dirfd, const std::string& what) {
    int copy = ::openat(dirfd, ".", kDirFlags);
    if (copy < 0) throw_storage_errno("reading " + what, errno);
    DIR* dir = ::fdopendir(copy);
    if (!dir) {
        int err = errno;
        ::close(copy);
        throw_storage_errno("reading " + what, err);
    }
    std::vector<std::string> names;
    errno = 0;
    while (struct dirent* d = ::readdir(dir)) {
        if (std::strcmp(d->d_name, ".") == 0 || std::strcmp(d->d_name, "..") == 0) continue;
        names.emplace_back(d->d_name);
    }
    int err = errno;
    ::closedir(dir);
    if (err) throw_storage_errno("reading " + what, err);
    return names;
}

Fd open_dir_at(int dirfd, const std::string& name, const std::string& what) {
    int fd = ::openat(dirfd, name.c_str(), kDirFlags);
    if (fd < 0) throw_storage_errno("opening " + what, errno);
    return Fd(fd);
}

Fd open_top(const fs::path& path) {
    int fd = ::open(path.c_str(), kDirFlags);
    if (fd < 0) throw_storage_errno("opening " + path.string(), errno);
    return Fd(fd);
}

// ---- copying -----------------------------------------------------------------

class Copier {
public:
    Copier(CopyMode mode, std::string src_top, std::string dst_top)
        : mode_(mode), src_top_(std::move(src_top)), dst_top_(std::move(dst_top)) {}

    void copy_dir(int sfd, int dfd, uint64_t mnt_id, const std::string& rel, int depth) {
        if (depth > kMaxTreeDepth)
            throw StorageError("copying " + src_top_ + ": folders nested deeper than " +
                               std::to_string(kMaxTreeDepth) + " levels at " + rel);
        for (const std::string& name : list_names(sfd, src_top_ + "/" + rel)) {
            const std::string child = rel.empty() ? name : rel + "/" + name;
            struct statx sx;
            if (!stat_at(sfd, name, STATX_BASIC_STATS, sx)) {
                if (errno == ENOENT) continue;  // gone while we read
                throw_storage_errno("reading " + src_top_ + "/" + child, errno);
            }
            const mode_t type = sx.stx_mode & S_IFMT;
            if (type == S_IFDIR) {
                if (sx.stx_mnt_id != mnt_id)
                    throw StorageError("copying " + src_top_ + ": a mount point inside at " + child);
                if (::mkdirat(dfd, name.c_str(), 0700) < 0)
                    throw_storage_errno("creating " + dst_top_ + "/" + child, errno);
                Fd s = open_dir_at(sfd, name, src_top_ + "/" + child);
                Fd d = open_dir_at(dfd, name, dst_top_ + "/" + child);
                copy_dir(s.get(), d.get(), mnt_id, child, depth + 1);
                finish(d.get(), "", sx, true, s.get(), "");
                ++stats.directories;
            } else if (type == S_IFREG) {
                copy_file(sfd, dfd, name, child, sx);
                ++stats.files;
            } else if (type == S_IFLNK) {
                std::string target = read_link(sfd, name, child);
                if (::symlinkat(target.c_str(), dfd, name.c_str()) < 0)
                    throw_storage_errno("creating " + dst_top_ + "/" + child, errno);
                finish(dfd, name, sx, false, sfd, name);
                ++stats.others;
            } else {
                if (::mknodat(dfd, name.c_str(), type | 0600, makedev(sx.stx_rdev_major, sx.stx_rdev_minor)) <
                    0)
                    throw_storage_errno("creating " + dst_top_ + "/" + child, errno);
                finish(dfd, name, sx, false, sfd, name);
                ++stats.others;
            }
        }
    }

    // Owner, xattrs, mode and times of a copied entry. `name` empty: `dirfd`
    // is the entry itself (an open directory or file).
    void finish(int dirfd, const std::string& name, const struct statx& sx, bool has_fd, int src_dirfd,
                const std::string& src_name) {
        const bool link = S_ISLNK(sx.stx_mode);
        const std::string what = dst_top_ + "/" + name;
        if (::fchownat(dirfd, name.c_str(), sx.stx_uid, sx.stx_gid,
                       AT_SYMLINK_NOFOLLOW | (name.empty() ? AT_EMPTY_PATH : 0)) < 0)
            throw_storage_errno("setting the owner of " + what, errno);
        copy_xattrs(src_dirfd, src_name, dirfd, name, has_fd);
        if (!link) {
            int rc = has_fd && name.empty() ? ::fchmod(dirfd, sx.stx_mode & 07777)
                                            : ::fchmodat(dirfd, name.c_str(), sx.stx_mode & 07777, 0);
            if (rc < 0) throw_storage_errno("setting the mode of " + what, errno);
        }
        struct timespec times[2] = {
            {static_cast<time_t>(sx.stx_atime.tv_sec), static_cast<long>(sx.stx_atime.tv_nsec)},
            {static_cast<time_t>(sx.stx_mtime.tv_sec), static_cast<long>(sx.stx_mtime.tv_nsec)}};
        int rc = name.empty() ? ::futimens(dirfd, times)
                              : ::utimensat(dirfd, name.c_str(), times, AT_SYMLINK_NOFOLLOW);
        if (rc < 0) throw_storage_errno("setting the times of " + what, errno);
    }

    CopyStats stats;

private:
    std::string read_link(int dirfd, const std::string& name, const std::string& rel) {
        std::string buf(256, '\0');
        for (;;) {
            ssize_t n = ::readlinkat(dirfd, name.c_str(), buf.data(), buf.size());
            if (n < 0) throw_storage_errno("reading the link " + src_top_ + "/" + rel, errno);
            if (static_cast<size_t>(n) < buf.size()) {
                buf.resize(static_cast<size_t>(n));
                return buf;
            }
            buf.resize(buf.size() * 2);
        }
    }

    // Extended attributes, where both sides take them (a security.* or
    // trusted.* one the target refuses is left out).
    void copy_xattrs(int src_dirfd, const std::string& src_name, int dst_dirfd, const std::string& dst_name,
                     bool has_fd) {
        const bool by_fd = has_fd && src_name.empty() && dst_name.empty();
        const std::string sp = by_fd ? std::string() : proc_path(src_dirfd, src_name);
        const std::string dp = by_fd ? std::string() : proc_path(dst_dirfd, dst_name);
        auto list = [&](char* buf, size_t size) {
            return by_fd ? ::flistxattr(src_dirfd, buf, size) : ::llistxattr(sp.c_str(), buf, size);
        };
        ssize_t n = list(nullptr, 0);
        if (n <= 0) return;  // none, or a filesystem without them
        std::vector<char> names(static_cast<size_t>(n));
        n = list(names.data(), names.size());
        if (n <= 0) return;
        std::vector<char> value;
        for (size_t i = 0; i < static_cast<size_t>(n);) {
            const char* key = names.data() + i;
            i += std::strlen(key) + 1;
            auto get = [&](void* buf, size_t size) {
                return by_fd ? ::fgetxattr(src_dirfd, key, buf, size)
                             : ::lgetxattr(sp.c_str(), key, buf, size);
            };
            ssize_t len = get(nullptr, 0);
            if (len < 0) continue;
            value.resize(static_cast<size_t>(len));
            len = get(value.data(), value.size());
            if (len < 0) continue;
            int rc = by_fd ? ::fsetxattr(dst_dirfd, key, value.data(), static_cast<size_t>(len), 0)
                           : ::lsetxattr(dp.c_str(), key, value.data(), static_cast<size_t>(len), 0);
            if (rc < 0 && errno != EPERM && errno != ENOTSUP && errno != EOPNOTSUPP && errno != EINVAL)
                throw_storage_errno("copying the attribute " + std::string(key) + " to " + dst_top_, errno);
        }
    }

    void copy_file(int sfd, int dfd, const std::string& name, const std::string& rel,
                   const struct statx& sx) {
        const std::pair<uint64_t, uint64_t> id{makedev(sx.stx_dev_major, sx.stx_dev_minor), sx.stx_ino};
        // A second name of an inode already copied: the same link in the copy.
        if (sx.stx_nlink > 1 && !(mode_ == CopyMode::Snapshot && !reflink_)) {
            auto it = links_.find(id);
            if (it != links_.end()) {
                if (::linkat(top_dst_fd, it->second.c_str(), dfd, name.c_str(), 0) < 0)
                    throw_storage_errno("linking " + dst_top_ + "/" + rel, errno);
                return;
            }
        }
        if (mode_ == CopyMode::Snapshot && !reflink_) {
            if (::linkat(sfd, name.c_str(), dfd, name.c_str(), 0) < 0)
                throw_storage_errno("linking " + dst_top_ + "/" + rel + " to its source", errno);
            ++stats.hard_linked;
            return;
        }
        Fd in(::openat(sfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY));
        if (!in) throw_storage_errno("opening " + src_top_ + "/" + rel, errno);
        Fd out(::openat(dfd, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!out) throw_storage_errno("creating " + dst_top_ + "/" + rel, errno);
        bool cloned = false;
        if (reflink_) {
            if (::ioctl(out.get(), FICLONE, in.get()) == 0) {
                cloned = true;
                ++stats.reflinked;
            } else if (errno == EOPNOTSUPP || errno == ENOTTY || errno == EINVAL || errno == EXDEV ||
                       errno == ENOSYS || errno == EBADF) {
                reflink_ = false;
            } else {
                throw_storage_errno("cloning " + src_top_ + "/" + rel, errno);
            }
        }
        if (!cloned) {
            if (mode_ == CopyMode::Snapshot) {
                // No reflinks here: the snapshot is a hard link after all.
                out.reset();
                ::unlinkat(dfd, name.c_str(), 0);
                if (::linkat(sfd, name.c_str(), dfd, name.c_str(), 0) < 0)
                    throw_storage_errno("linking " + dst_top_ + "/" + rel + " to its source", errno);
                ++stats.hard_linked;
                return;
            }
            copy_data(in.get(), out.get(), static_cast<off_t>(sx.stx_size), rel);
        }
        finish(out.get(), "", sx, true, in.get(), "");
        if (sx.stx_nlink > 1) links_.emplace(id, rel);
    }

    // The data ranges of `in` (holes stay holes), then the size.
    void copy_data(int in, int out, off_t size, const std::string& rel) {
        off_t pos = 0;
        while (pos < size) {
            off_t data = ::lseek(in, pos, SEEK_DATA);
            if (data < 0) {
                if (errno == ENXIO) break;  // only a hole is left
                data = pos;                 // no SEEK_DATA: copy everything
            }
            off_t hole = ::lseek(in, data, SEEK_HOLE);
            if (hole < 0) hole = size;
            off_t at = data;
            while (at < hole) {
                loff_t from = at, to = at;
                ssize_t n = ::copy_file_range(in, &from, out, &to, static_cast<size_t>(hole - at), 0);
                if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL || errno == EOPNOTSUPP))
                    n = copy_by_hand(in, out, at, hole - at);
                if (n < 0) throw_storage_errno("copying " + src_top_ + "/" + rel, errno);
                if (n == 0) break;  // the file shrank meanwhile
                at += n;
                stats.bytes_copied += static_cast<uint64_t>(n);
            }
            pos = hole;
        }
        if (::ftruncate(out, size) < 0) throw_storage_errno("sizing " + dst_top_ + "/" + rel, errno);
    }

    static ssize_t copy_by_hand(int in, int out, off_t at, off_t len) {
        char buf[65536];
        ssize_t n = ::pread(in, buf, static_cast<size_t>(std::min<off_t>(len, sizeof buf)), at);
        if (n <= 0) return n;
        ssize_t done = 0;
        while (done < n) {
            ssize_t w = ::pwrite(out, buf + done, static_cast<size_t>(n - done), at + done);
            if (w < 0) return -1;
            done += w;
        }
        return n;
    }

public:
    int top_dst_fd = -1;

private:
    CopyMode mode_;
    std::string src_top_, dst_top_;
    bool reflink_ = true;
    std::map<std::pair<uint64_t, uint64_t>, std::string> links_;  // inode -> its first name in the copy
};

// ---- removing ----------------------------------------------------------------

class Remover {
public:
    Remover(int top_fd, uint64_t mnt_id, std::string top)
        : top_fd_(top_fd), mnt_id_(mnt_id), top_(std::move(top)) {}

    // Empties the directory `dirfd`. Below kDeep levels, folders are moved up
    // to the top and taken apart from there: any depth with few descriptors.
    void empty(int dirfd, int depth) {
        for (const std::string& name : list_names(dirfd, top_)) {
            struct statx sx;
            if (!stat_at(dirfd, name, 0, sx)) {
                if (errno == ENOENT) continue;
                throw_storage_errno("removing in " + top_, errno);
            }
            if (!S_ISDIR(sx.stx_mode)) {
                if (::unlinkat(dirfd, name.c_str(), 0) < 0 && errno != ENOENT)
                    throw_storage_errno("removing " + name + " in " + top_, errno);
                continue;
            }
            if (sx.stx_mnt_id != mnt_id_)
                throw StorageError("not removing " + top_ + ": a mount point inside (" + name + ")");
            if (depth >= kDeep) {
                std::string up = ".aerie-deep-" + std::to_string(++moved_);
                if (::renameat(dirfd, name.c_str(), top_fd_, up.c_str()) < 0)
                    throw_storage_errno("removing in " + top_, errno);
                pending_ = true;
                continue;
            }
            {
                Fd child = open_dir_at(dirfd, name, top_ + "/.../" + name);
                empty(child.get(), depth + 1);
            }
            if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) < 0 && errno != ENOENT)
                throw_storage_errno("removing " + name + " in " + top_, errno);
        }
    }

    void run() {
        do {
            pending_ = false;
            empty(top_fd_, 0);
        } while (pending_);
    }

private:
    static constexpr int kDeep = 64;
    int top_fd_;
    uint64_t mnt_id_;
    std::string top_;
    uint64_t moved_ = 0;
    bool pending_ = false;
};

// ---- walking (usage, owners) -------------------------------------------------

template <typename Visit>
void walk(int dirfd, uint64_t mnt_id, const std::string& top, int depth, unsigned mask, Visit& visit) {
    if (depth > kMaxTreeDepth) return;
    for (const std::string& name : list_names(dirfd, top)) {
        struct statx sx;
        if (!stat_at(dirfd, name, mask, sx)) continue;
        visit(dirfd, name, sx);
        if (S_ISDIR(sx.stx_mode) && sx.stx_mnt_id == mnt_id) {
            int child = ::openat(dirfd, name.c_str(), kDirFlags);
            if (child < 0) continue;
            Fd guard(child);
            walk(child, mnt_id, top, depth + 1, mask, visit);
        }
    }
}

}  // namespace

CopyStats copy_tree(const fs::path& src, const fs::path& dst, CopyMode mode) {
    Fd s = open_top(src);
    struct statx sx;
    if (!stat_at(s.get(), "", STATX_BASIC_STATS, sx)) throw_storage_errno("reading " + src.string(), errno);
    if (::mkdir(dst.c_str(), 0700) < 0) throw_storage_errno("creating " + dst.string(), errno);
    try {
        Fd d = open_top(dst);
        Copier copier(mode, src.string(), dst.string());
        copier.top_dst_fd = d.get();
        copier.copy_dir(s.get(), d.get(), sx.stx_mnt_id, "", 0);
        copier.finish(d.get(), "", sx, true, s.get(), "");
        return copier.stats;
    } catch (...) {
        try {
            remove_tree(dst);
        } catch (...) {
        }
        throw;
    }
}

void empty_directory(const fs::path& path) {
    Fd top = open_top(path);
    struct statx sx;
    if (!stat_at(top.get(), "", 0, sx)) throw_storage_errno("reading " + path.string(), errno);
    Remover(top.get(), sx.stx_mnt_id, path.string()).run();
}

void remove_tree(const fs::path& path) {
    struct statx sx;
    if (::statx(AT_FDCWD, path.c_str(), AT_SYMLINK_NOFOLLOW | AT_NO_AUTOMOUNT, STATX_TYPE, &sx) < 0) {
        if (errno == ENOENT) return;
        throw_storage_errno("reading " + path.string(), errno);
    }
    if (S_ISDIR(sx.stx_mode)) {
        empty_directory(path);
        if (::rmdir(path.c_str()) < 0 && errno != ENOENT)
            throw_storage_errno("removing " + path.string(), errno);
    } else if (::unlink(path.c_str()) < 0 && errno != ENOENT) {
        throw_storage_errno("removing " + path.string(), errno);
    }
}

uint64_t disk_usage(const fs::path& path) {
    int fd = ::open(path.c_str(), kDirFlags);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        throw_storage_errno("opening " + path.string(), errno);
    }
    Fd top(fd);
    struct statx sx;
    if (!stat_at(top.get(), "", 0, sx)) throw_storage_errno("reading " + path.string(), errno);
    uint64_t total = 0;
    std::set<std::pair<uint64_t, uint64_t>> seen;
    auto visit = [&](int, const std::string&, const struct statx& e) {
        if (e.stx_nlink > 1 && !S_ISDIR(e.stx_mode) &&
            !seen.emplace(makedev(e.stx_dev_major, e.stx_dev_minor), e.stx_ino).second)
            return;
        total += e.stx_blocks * 512;
    };
    walk(top.get(), sx.stx_mnt_id, path.string(), 0, STATX_BLOCKS | STATX_NLINK | STATX_INO, visit);
    return total;
}

uint64_t shift_owner(const fs::path& path, uid_t from, uid_t to, uint32_t count) {
    Fd top = open_top(path);
    struct statx sx;
    if (!stat_at(top.get(), "", STATX_BASIC_STATS, sx))
        throw_storage_errno("reading " + path.string(), errno);
    uint64_t changed = 0;
    auto moved = [&](uint32_t id) -> uint32_t {
        return id >= from && id - from < count ? to + (id - from) : id;
    };
    auto visit = [&](int dirfd, const std::string& name, const struct statx& e) {
        uid_t uid = moved(e.stx_uid);
        gid_t gid = moved(e.stx_gid);
        if (uid == e.stx_uid && gid == e.stx_gid) return;
        int flags = AT_SYMLINK_NOFOLLOW | (name.empty() ? AT_EMPTY_PATH : 0);
        if (::fchownat(dirfd, name.c_str(), uid, gid, flags) < 0)
            throw_storage_errno("changing the owner in " + path.string(), errno);
        // chown drops set-id bits; give them back.
        if (!S_ISLNK(e.stx_mode) && (e.stx_mode & (S_ISUID | S_ISGID)) && !S_ISDIR(e.stx_mode))
            ::fchmodat(dirfd, name.c_str(), e.stx_mode & 07777, 0);
        ++changed;
    };
    visit(top.get(), "", sx);
    walk(top.get(), sx.stx_mnt_id, path.string(), 0, STATX_BASIC_STATS, visit);
    return changed;
}

}  // namespace aerie::storage
