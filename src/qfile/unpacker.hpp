// The receiving side of qubes.Filecopy: reads a qfile stream from a hostile
// sender and creates what it describes beneath one directory, then answers
// the result (wire.hpp). Every entry is checked before anything is created
// (names.hpp), and everything is created through descriptors: the parent of
// an entry is resolved beneath the incoming directory's descriptor with
// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | ...) (base/safe_dir.hpp),
// and the entry made in it by its one last component. No name is ever
// resolved from "/" or the working directory, and no symlink is followed,
// whether it was sent or planted there before.
//
// Error codes and the name they report are Qubes' (so a Qubes sender shows
// the same messages): EILSEQ for a bad name, ENOLINK for a link that would
// leave its top directory (reported with the link's target), EINVAL for an
// entry of another type (device, fifo, socket, bad mode bits) or a bad
// timestamp, ENAMETOOLONG for a name or target of 16384 bytes or more (the
// name not reported), EEXIST for an existing name, EDQUOT for a limit passed,
// kLegalEof for a stream that ends inside an entry, EREMOTEIO for one that
// ends without its end marker.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "qfile/names.hpp"

namespace aerie::qfile {

struct UnpackOptions {
    std::uint32_t name_flags = kAllowNonCanonicalSymlinks;  // Qubes' default
    bool allow_symlinks = true;
    bool allow_directories = true;
    std::uint64_t max_bytes = 0;  // of data and link targets in all; 0: no limit
    std::uint64_t max_files = 0;  // entries in all; 0: no limit
};

struct UnpackResult {
    std::uint32_t error_code = 0;
    std::uint32_t crc32 = 0;
    std::optional<std::string> last_name;  // nullopt: the answer has no name part
};

class Unpacker {
public:
    // `incoming_dirfd`: the directory everything is created beneath (any
    // descriptor of it, O_PATH will do); it must stay open during run().
    Unpacker(int incoming_dirfd, UnpackOptions options);

    // Reads the stream from `in_fd` until its end marker or the first error,
    // then writes the answer to `out_fd` (if it is not -1). Never throws for
    // anything the stream holds.
    UnpackResult run(int in_fd, int out_fd);

private:
    int dirfd_;
    UnpackOptions options_;
};

}  // namespace aerie::qfile
