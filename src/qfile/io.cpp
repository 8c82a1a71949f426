#include "qfile/io.hpp"

#include <unistd.h>

#include <cerrno>

namespace aerie::qfile {

bool write_all(int fd, const void* data, std::size_t size) {
    const char* p = static_cast<const char*>(data);
    while (size > 0) {
        ssize_t n = ::write(fd, p, size);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (n == 0) errno = EIO;
            return false;
        }
        p += n;
        size -= static_cast<std::size_t>(n);
    }
    return true;
}

ssize_t read_some(int fd, void* data, std::size_t size) {
    ssize_t n;
    do n = ::read(fd, data, size);
    while (n < 0 && errno == EINTR);
    return n;
}

bool read_exact(int fd, void* data, std::size_t size, std::size_t* got) {
    char* p = static_cast<char*>(data);
    std::size_t done = 0;
    bool ok = true;
    while (done < size) {
        ssize_t n = read_some(fd, p + done, size - done);
        if (n <= 0) {
            if (n == 0) errno = 0;
            ok = false;
            break;
        }
        done += static_cast<std::size_t>(n);
    }
    if (got) *got = done;
    return ok;
}

}  // namespace aerie::qfile
