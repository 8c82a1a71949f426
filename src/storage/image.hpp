// Volume images: sparse files holding an ext4 file system each, as Qubes'
// `file` pool keeps its volumes (`<volume>.img`). The size of the file is
// the volume's size; a qube cannot store more bytes or files than its file
// system holds, and the host's disk only pays for blocks written.
//
// Nothing here looks inside an image's file system: images are copied,
// grown and measured as files of the pool, which no qube can reach.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "storage/error.hpp"

namespace aerie::storage {

// Bytes of the file system per inode: the file count a volume can hold is
// its size divided by this (private: 2 GiB -> 524,288 files).
inline constexpr uint64_t kPrivateBytesPerInode = 4096;
inline constexpr uint64_t kDefaultBytesPerInode = 16384;

// Makes an empty ext4 image of `size` bytes at `path` (which must not
// exist): a sparse file made by mkfs.ext4 (lazy inode tables and journal:
// a few MiB written whatever the size). Throws StorageError.
// `journal` false: for scratch volumes (volatile), thrown away after every
// run anyway.
void make_ext4_image(const std::filesystem::path& path, uint64_t size, uint64_t bytes_per_inode,
                     bool journal = true);

// Copies the image `src` to `dst` (which must not exist), made with mode
// 0600: shared extents where the file system can (FICLONE), else the data
// ranges only (SEEK_DATA/SEEK_HOLE + copy_file_range), holes staying holes.
// A failed copy leaves no `dst`.
void copy_image(const std::filesystem::path& src, const std::filesystem::path& dst);

// The image's size (the volume's) and the bytes of host disk it takes.
uint64_t image_size(const std::filesystem::path& path);
uint64_t image_allocated(const std::filesystem::path& path);

// Grows the image file to `size` bytes (the file system in it is grown by
// grow_filesystem, mounts.hpp, once the loop device sees the new size).
void extend_image(const std::filesystem::path& path, uint64_t size);

// Runs a program of e2fsprogs (mkfs.ext4, resize2fs) with `args`, its output
// kept for the error message. Throws StorageError naming the program and
// what it said.
// Exit codes up to `max_ok` count as success (e2fsck: 1, errors corrected).
void run_e2fsprogs(const std::string& program, const std::vector<std::string>& args, int max_ok = 0);

// Grows the file system in the (unmounted) image to the image's size:
// e2fsck -f -p, then resize2fs.
void grow_image_filesystem(const std::filesystem::path& image);

}  // namespace aerie::storage
