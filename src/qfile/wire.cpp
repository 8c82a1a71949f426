#include "qfile/wire.hpp"

namespace aerie::qfile {

void put_le32(std::uint8_t* p, std::uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}

void put_le64(std::uint8_t* p, std::uint64_t v) {
    for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}

std::uint32_t get_le32(const std::uint8_t* p) {
    std::uint32_t v = 0;
    for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

std::uint64_t get_le64(const std::uint8_t* p) {
    std::uint64_t v = 0;
    for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
    return v;
}

std::array<std::uint8_t, kFileHeaderSize> encode_file_header(const FileHeader& h) {
    std::array<std::uint8_t, kFileHeaderSize> b{};
    put_le32(&b[0], h.namelen);
    put_le32(&b[4], h.mode);
    put_le64(&b[8], h.filelen);
    put_le32(&b[16], h.atime);
    put_le32(&b[20], h.atime_nsec);
    put_le32(&b[24], h.mtime);
    put_le32(&b[28], h.mtime_nsec);
    return b;
}

FileHeader decode_file_header(std::span<const std::uint8_t, kFileHeaderSize> b) {
    FileHeader h;
    h.namelen = get_le32(&b[0]);
    h.mode = get_le32(&b[4]);
    h.filelen = get_le64(&b[8]);
    h.atime = get_le32(&b[16]);
    h.atime_nsec = get_le32(&b[20]);
    h.mtime = get_le32(&b[24]);
    h.mtime_nsec = get_le32(&b[28]);
    return h;
}

std::array<std::uint8_t, kResultHeaderSize> encode_result_header(const ResultHeader& r) {
    std::array<std::uint8_t, kResultHeaderSize> b{};
    put_le32(&b[0], r.error_code);
    put_le32(&b[4], 0);
    put_le64(&b[8], r.crc32);
    return b;
}

ResultHeader decode_result_header(std::span<const std::uint8_t, kResultHeaderSize> b) {
    return ResultHeader{get_le32(&b[0]), get_le64(&b[8])};
}

std::string encode_result(std::uint32_t error_code, std::uint32_t crc32,
                          const std::optional<std::string>& last_name) {
    auto head = encode_result_header({error_code, crc32});
    std::string out(head.begin(), head.end());
    if (last_name) {
        std::uint8_t len[kResultExtSize];
        put_le32(len, static_cast<std::uint32_t>(last_name->size()));
        out.append(reinterpret_cast<const char*>(len), sizeof len);
        out += *last_name;
    }
    return out;
}

}  // namespace aerie::qfile
