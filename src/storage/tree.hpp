// Whole-tree operations on volume directories, done with *at() calls on
// descriptors: nothing follows a symbolic link a qube left in its volume, and
// no path is built deeper than the tree's top.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "storage/error.hpp"

namespace aerie::storage {

// How copy_tree() makes the regular files of the copy.
enum class CopyMode {
    // Independent copies of the data: a reflink (shared extents, copy on
    // write) where the filesystem can, else the bytes (holes kept). Hard
    // links inside the tree stay hard links in the copy.
    Data,
    // A snapshot: a reflink where the filesystem can, else a hard link to the
    // source's inode (`cp -al`). A hard-linked file shares later in-place
    // writes with its source; a file replaced or removed in the source keeps
    // its old content in the snapshot.
    Snapshot,
};

struct CopyStats {
    uint64_t files = 0, directories = 0, others = 0;
    uint64_t reflinked = 0, hard_linked = 0, bytes_copied = 0;
};

// Copies the tree `src` (a directory) to `dst`, which must not exist:
// ownership, permission bits (set-id bits too), timestamps, extended
// attributes (where the target filesystem takes them), symbolic links,
// device nodes, FIFOs and sockets. Throws StorageError; a failed copy leaves
// no `dst`.
CopyStats copy_tree(const std::filesystem::path& src, const std::filesystem::path& dst, CopyMode mode);

// Removes `path` and everything below it; nothing if it does not exist.
// Any depth (deep folders are moved up while the tree is taken apart).
void remove_tree(const std::filesystem::path& path);
// Removes everything inside the directory `path`, keeping it.
void empty_directory(const std::filesystem::path& path);

// Bytes of disk the tree's files use below `path` (st_blocks, each inode
// once, the top directory itself not counted): what `du -s` counts.
uint64_t disk_usage(const std::filesystem::path& path);

// Moves the tree's owners from one id range to another: uid/gid u in
// [from, from + count) becomes to + (u - from); ids outside stay as they
// are. Set-id bits survive. Returns how many entries changed.
uint64_t shift_owner(const std::filesystem::path& path, uid_t from, uid_t to, uint32_t count);

// Deepest folder nesting the copying, counting and shifting walks follow.
inline constexpr int kMaxTreeDepth = 256;

}  // namespace aerie::storage
