// The checksum both ends of a qfile stream keep over every byte of it: CRC-32
// as gzip and zlib compute it (Qubes' Crc32_ComputeBuf is the same function).
#pragma once

#include <zlib.h>

#include <cstddef>
#include <cstdint>

namespace aerie::qfile {

class Crc32 {
public:
    void update(const void* data, std::size_t size) {
        const auto* p = static_cast<const Bytef*>(data);
        while (size > 0) {
            uInt chunk = size > 0x40000000 ? 0x40000000 : static_cast<uInt>(size);
            value_ = ::crc32(value_, p, chunk);
            p += chunk;
            size -= chunk;
        }
    }
    std::uint32_t value() const { return static_cast<std::uint32_t>(value_); }

private:
    uLong value_ = 0;
};

}  // namespace aerie::qfile
