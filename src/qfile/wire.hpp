// The qfile wire format of Qubes' qubes.Filecopy (qfile-agent → qfile-unpacker),
// byte for byte. All integers are little-endian (Qubes runs on x86 only).
//
// Sender → receiver, per entry: a 32-byte file header, the name (namelen
// bytes, NUL-terminated by the sender), then the body: filelen bytes of data
// for a regular file, the link target (filelen bytes, no NUL) for a symlink,
// nothing for a directory (sent twice: before its contents, then again so its
// mode and times are set last). The stream ends with a header of all zeroes
// (namelen 0).
//
// Receiver → sender, once: a 16-byte result header (error code, 4 bytes of
// padding, the CRC-32 of every byte it read) and, in all but two cases, the
// extension: a 4-byte length and the last name processed (no NUL).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace aerie::qfile {

inline constexpr std::size_t kFileHeaderSize = 32;
inline constexpr std::size_t kResultHeaderSize = 16;
inline constexpr std::size_t kResultExtSize = 4;
// A name or link target is at most this long, its NUL included.
inline constexpr std::uint32_t kMaxPathLength = 16384;
// The error code of a stream that ended inside an entry.
inline constexpr std::uint32_t kLegalEof = 31415926;

struct FileHeader {
    std::uint32_t namelen = 0;  // the name's bytes, its NUL included; 0 ends the stream
    std::uint32_t mode = 0;     // st_mode: type and permission bits
    std::uint64_t filelen = 0;  // data bytes (file), target bytes (symlink), 0 (directory)
    std::uint32_t atime = 0;
    std::uint32_t atime_nsec = 0;
    std::uint32_t mtime = 0;
    std::uint32_t mtime_nsec = 0;

    bool operator==(const FileHeader&) const = default;
};

std::array<std::uint8_t, kFileHeaderSize> encode_file_header(const FileHeader& h);
FileHeader decode_file_header(std::span<const std::uint8_t, kFileHeaderSize> bytes);

struct ResultHeader {
    std::uint32_t error_code = 0;  // an errno value, or kLegalEof
    std::uint64_t crc32 = 0;       // of the bytes the receiver read
};

std::array<std::uint8_t, kResultHeaderSize> encode_result_header(const ResultHeader& r);
ResultHeader decode_result_header(std::span<const std::uint8_t, kResultHeaderSize> bytes);

// The whole answer of a receiver: the header, then the extension with
// `last_name` unless it is nullopt (a name that was never read).
std::string encode_result(std::uint32_t error_code, std::uint32_t crc32,
                          const std::optional<std::string>& last_name);

void put_le32(std::uint8_t* p, std::uint32_t v);
void put_le64(std::uint8_t* p, std::uint64_t v);
std::uint32_t get_le32(const std::uint8_t* p);
std::uint64_t get_le64(const std::uint8_t* p);

}  // namespace aerie::qfile
