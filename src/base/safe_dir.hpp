// The one way host code touches a tree a qube can write (its private volume,
// its volatile volume, an own root, the vchan and QubesDB folders it sees).
//
// Such a tree is hostile: any name in it may have been replaced by a symlink
// (to "/", to another qube's volume, to "../.lower"), a magic link, a mount
// point or a file of another type, at any moment. So host code never resolves
// a path inside it by name. It opens the tree's top once, from a host path it
// trusts (a folder of the pool or the runtime folder that no qube can write),
// and then resolves names beneath that descriptor only with
//   openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)
// and checks the type of what it got through the descriptor (fstat). Mounts
// of such trees are made from O_PATH descriptors
// (open_tree(fd, "", AT_EMPTY_PATH | OPEN_TREE_CLONE), never recursive), so
// what is mounted is exactly the object that was checked.
//
// docs/security.md lists every host operation on qube-writable data and
// which of these it uses.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <filesystem>
#include <stdexcept>
#include <string>

#include "base/unique_fd.hpp"

namespace aerie::base {

// A refused or failed resolution: names the tree, the name inside it, and why
// ("is a symbolic link", "is not a directory", strerror).
class UnsafePathError : public std::runtime_error {
public:
    UnsafePathError(const std::string& what, int err) : std::runtime_error(what), err_(err) {}
    int error() const { return err_; }  // the errno, 0 for a type mismatch

private:
    int err_;
};

enum class FileKind { Any, Directory, Regular, Socket };

// Opens a trusted host path (one no qube can write) as O_PATH | O_DIRECTORY,
// not following a final symlink. Throws UnsafePathError.
UniqueFd open_trusted_dir(const std::filesystem::path& path);

// Resolves `relative` (no leading "/", no ".." escaping: openat2 refuses any
// way out) beneath `dirfd` without following any symlink, magic link or mount
// crossing, opens it with `flags` (O_CLOEXEC is added; O_NOFOLLOW is implied)
// and checks its type. An empty `relative` or "." reopens `dirfd` itself.
// Throws UnsafePathError naming `label`/`relative`.
UniqueFd open_beneath(int dirfd, const std::string& relative, int flags, FileKind kind,
                      const std::string& label = "", mode_t mode = 0);

// The same, returning -errno instead of throwing (for code that must not
// throw, e.g. between clone and exec); the type mismatch is -ENOTDIR for a
// directory wanted, -EINVAL otherwise.
int open_beneath_errno(int dirfd, const char* relative, int flags, FileKind kind, mode_t mode = 0) noexcept;

// An O_PATH descriptor of the directory `relative` beneath `dirfd`.
UniqueFd open_dir_beneath(int dirfd, const std::string& relative, const std::string& label = "");

// Makes the directory `name` (one component) in the directory `dirfd` with
// `mode` if it does not exist, then opens it as open_dir_beneath does (so a
// symlink or file planted under that name is refused, not followed).
UniqueFd ensure_dir_beneath(int dirfd, const std::string& name, mode_t mode, const std::string& label = "");

// fstat of a descriptor; throws UnsafePathError.
struct stat stat_fd(int fd, const std::string& label);

// A detached copy of the one mount object `opath_fd` refers to (not its
// submounts), ready for move_mount: open_tree(fd, "", AT_EMPTY_PATH |
// OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC). Returns -errno on failure.
int clone_tree_errno(int opath_fd) noexcept;
UniqueFd clone_tree(int opath_fd, const std::string& label);

// A short text of a descriptor's type, for error messages.
const char* kind_name(mode_t mode);

}  // namespace aerie::base
