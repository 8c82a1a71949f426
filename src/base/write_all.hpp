// Writes all of a buffer to a descriptor (a pipe, file or socket that may
// take it in parts), going on after EINTR.
#pragma once

#include <errno.h>
#include <unistd.h>

#include <cstddef>

namespace aerie::base {

// False on an error or a descriptor that takes nothing (errno tells which).
inline bool write_all(int fd, const char* data, size_t size) {
    while (size > 0) {
        ssize_t n = ::write(fd, data, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        data += n;
        size -= static_cast<size_t>(n);
    }
    return true;
}

}  // namespace aerie::base
