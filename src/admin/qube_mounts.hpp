// The mounts the host makes for a qube from trees the qube can write: its
// private volume at /rw, that volume's home/ at /home, and the folders of its
// runtime directory (vchan, QubesDB, the Air uplink). Each is opened here as an
// O_PATH descriptor with base/safe_dir.hpp, beneath a parent no qube can
// write, and handed to the backend as that descriptor (BindMount::source_fd):
// what is mounted is the object that was checked, whatever the qube renamed or
// linked in its tree while it last ran.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/backend.hpp"

namespace aerie::admin {

// A start refused because of what a qube left in its own tree (e.g. /rw/home
// replaced by a symbolic link); the message names the qube and what was wrong.
struct QubeTreeError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// /rw (the private volume as the pool started it: `private_dir` is a trusted
// host path of a folder or mount point the pool made) and /home (its home/,
// resolved beneath it with no symlink, magic link or mount crossing followed
// and required to be a directory). A missing home/ is made first, as the
// qube's root (`owner`, its host uid), so it belongs to the qube as the pool
// would have made it. Throws QubeTreeError.
std::vector<backend::BindMount> private_volume_mounts(const std::string& qube,
                                                      const std::filesystem::path& private_dir, uid_t owner);

// `runtime`/`name` (a folder the host made in the qube's runtime directory,
// opened with open_trusted_dir: its path is the host's) at `target`.
backend::BindMount runtime_folder_mount(const std::filesystem::path& runtime, const std::string& name,
                                        const std::string& target, bool read_only);

// A small tmpfs of the qube's own, mounted on `dir` (a folder the host has
// just made in the qube's runtime directory, e.g. its vchan folder): what the
// qube writes there (its agent's sockets) is bounded (1 MiB, 1024 inodes)
// instead of filling the host's /run, and the qube's mountinfo shows "/" as
// its root instead of a host path. Owned by `owner` with `mode`.
void mount_qube_folder(const std::filesystem::path& dir, uid_t owner, mode_t mode = 0700);
// Detaches what mount_qube_folder mounted on `dir` (nothing there: no error).
void unmount_qube_folder(const std::filesystem::path& dir);

}  // namespace aerie::admin
