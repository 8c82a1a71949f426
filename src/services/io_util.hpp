// Small blocking I/O helpers of the services' programs.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstddef>

#include "base/write_all.hpp"

namespace aerie::services {

// Reads until `size` bytes or EOF; returns the count, -1 on error.
inline ssize_t read_full(int fd, char* buf, size_t size) {
    size_t got = 0;
    while (got < size) {
        ssize_t n = ::read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) break;
        got += static_cast<size_t>(n);
    }
    return static_cast<ssize_t>(got);
}


// Copies `from` to EOF into `to`.
inline bool copy_to_eof(int from, int to) {
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(from, buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return false;
        if (n == 0) return true;
        if (!base::write_all(to, buf, static_cast<size_t>(n))) return false;
    }
}

}  // namespace aerie::services
