// The mounts storage makes for a running qube: overlays (copy-on-write views)
// and id-mapped binds (a qube's volumes shown in its uid range).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "storage/error.hpp"

namespace aerie::storage {

// A user namespace whose ids 0..count-1 are the host's base..base+count-1,
// as a descriptor for MOUNT_ATTR_IDMAP. Costs well under a millisecond (a
// short-lived helper sharing our memory, no fork of the daemon's pages).
int make_userns_fd(uid_t base, uint32_t count);

// Mounts `source` at `target` (an existing folder) with the ids of the user
// namespace `userns_fd` (make_userns_fd(base, count)): what is owned by id u
// (< count) on disk shows as base + u, and a file made through it by base + u
// is stored as u; host ids outside the range cannot make files there
// (EOVERFLOW). Throws StorageError.
void idmapped_bind(const std::filesystem::path& source, const std::filesystem::path& target, int userns_fd);
void plain_bind(const std::filesystem::path& source, const std::filesystem::path& target);

// Whether id-mapped mounts of folders under `dir` work here (kernel and
// filesystem); tried once with a throw-away mount.
bool idmapped_mounts_work(const std::filesystem::path& dir);

// An overlay at `target`: `lower` read-only below, changes in `upper`
// (`work` is overlayfs' scratch folder, on the same filesystem as `upper`).
// For layers thrown away at stop: "volatile" (no syncs of the upper layer,
// which would make every unmount wait for a journal commit) and
// redirect_dir=on where the kernel has it.
void mount_overlay(const std::filesystem::path& lower, const std::filesystem::path& upper,
                   const std::filesystem::path& work, const std::filesystem::path& target);

// Unmounts everything stacked on `target`, detached (MNT_DETACH: at once even
// if busy; and without waiting for an RCU grace period on recent kernels).
// Returns whether anything was mounted there.
bool unmount_all(const std::filesystem::path& target);

// Attaches the image file `image` to a free loop device (autoclear: the
// device goes when its file system is unmounted) and mounts its ext4 file
// system at `target`: nodev, nosuid unless `allow_suid` (a template's root
// holds sudo), noinit_itable (the image stays sparse). `scratch` (volatile,
// thrown away after the run): no write barriers, so its mount waits for no
// flush of the host's disk. Throws StorageError.
void mount_image(const std::filesystem::path& image, const std::filesystem::path& target, bool allow_suid,
                 bool scratch = false);

// Unmounts the file system at `target` (a volume): at once if it is not
// busy, else detached (it goes when its last user does). Whether anything
// was mounted there.
bool unmount_volume(const std::filesystem::path& target);

// Whether `path` is the root of a mount (a volume mounted there).
bool is_mount_root(const std::filesystem::path& path);

// Grows the file system mounted at `target` to its image's size, online
// (the image file must have been extended first): the loop device is told
// the new size, then resize2fs. False (nothing grown but the device) where
// this process lacks CAP_SYS_RESOURCE, which ext4's online resize needs.
bool grow_mounted_filesystem(const std::filesystem::path& target);

// A mounted volume held still (FIFREEZE: every write waits, the file system
// on disk is consistent) while its image is copied; thawed when destroyed.
class FrozenVolume {
public:
    explicit FrozenVolume(const std::filesystem::path& target);
    ~FrozenVolume();
    FrozenVolume(const FrozenVolume&) = delete;
    FrozenVolume& operator=(const FrozenVolume&) = delete;

private:
    int fd_ = -1;
};

// Mount points at or below `dir`, as /proc/self/mountinfo lists them,
// deepest first.
std::vector<std::filesystem::path> mounts_under(const std::filesystem::path& dir);

}  // namespace aerie::storage
