#include "admin/qube_mounts.hpp"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include <fmt/format.h>

#include "base/safe_dir.hpp"

namespace aerie::admin {

namespace fs = std::filesystem;
using base::UnsafePathError;

namespace {

std::shared_ptr<const base::UniqueFd> share(base::UniqueFd fd) {
    return std::make_shared<const base::UniqueFd>(std::move(fd));
}

// This thread's file system identity switched to a qube's uid for a while
// (setfsuid is per thread): what it creates belongs to the qube, also through
// an id-mapped mount, where host root could create nothing.
class AsOwner {
public:
    explicit AsOwner(uid_t owner) {
        old_gid_ = static_cast<gid_t>(::syscall(SYS_setfsgid, owner));
        old_uid_ = static_cast<uid_t>(::syscall(SYS_setfsuid, owner));
    }
    ~AsOwner() {
        ::syscall(SYS_setfsuid, old_uid_);
        ::syscall(SYS_setfsgid, old_gid_);
    }
    AsOwner(const AsOwner&) = delete;
    AsOwner& operator=(const AsOwner&) = delete;

private:
    uid_t old_uid_;
    gid_t old_gid_;
};

}  // namespace

std::vector<backend::BindMount> private_volume_mounts(const std::string& qube, const fs::path& private_dir,
                                                      uid_t owner) {
    const std::string label = "the private volume of the qube '" + qube + "'";
    try {
        auto volume = share(base::open_trusted_dir(private_dir));
        // The qube's root may have replaced /rw/home by anything. Refused
        // rather than replaced by an empty /home: the start fails loudly
        // instead of giving the user a home whose writes vanish.
        base::UniqueFd home;
        int fd =
            base::open_beneath_errno(volume->get(), "home", O_PATH | O_DIRECTORY, base::FileKind::Directory);
        if (fd >= 0) {
            home.reset(fd);
        } else if (fd == -ENOENT) {
            AsOwner as(owner);
            home = base::ensure_dir_beneath(volume->get(), "home", 0755, label);
        } else {
            home = base::open_dir_beneath(volume->get(), "home", label);  // throws, saying why
        }
        return {
            {private_dir, "/rw", false, volume},
            {private_dir / "home", "/home", false, share(std::move(home))},
        };
    } catch (const UnsafePathError& e) {
        throw QubeTreeError(std::string(e.what()) + " (/rw/home inside the qube must be a directory)");
    }
}

backend::BindMount runtime_folder_mount(const fs::path& runtime, const std::string& name,
                                        const std::string& target, bool read_only) {
    // The runtime directory and its folders are the host's (no qube can
    // rename or replace them; the vchan folder is a mount point of its own,
    // which a RESOLVE_NO_XDEV open beneath the runtime directory would refuse).
    return {runtime / name, target, read_only, share(base::open_trusted_dir(runtime / name))};
}

void mount_qube_folder(const fs::path& dir, uid_t owner, mode_t mode) {
    std::string options = fmt::format("mode={:04o},size=1m,nr_inodes=1024,uid=", mode) + std::to_string(owner) +
                          ",gid=" + std::to_string(owner);
    if (::mount("aerie-qube", dir.c_str(), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, options.c_str()) != 0)
        throw std::runtime_error("mounting a tmpfs on " + dir.string() + ": " + std::strerror(errno));
}

void unmount_qube_folder(const fs::path& dir) {
    // Only a mount of ours: umount2 with UMOUNT_NOFOLLOW, and only when the
    // folder is a mount point (EINVAL otherwise, ignored like ENOENT).
    ::umount2(dir.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW);
}

}  // namespace aerie::admin
