// Whole reads and writes on a descriptor (EINTR retried).
#pragma once

#include <sys/types.h>

#include <cstddef>

namespace aerie::qfile {

// Writes all `size` bytes; false on an error (errno set) or a zero write.
bool write_all(int fd, const void* data, std::size_t size);

// Reads up to `size` bytes; returns what read() returned (0 at EOF, -1 on an
// error with errno set).
ssize_t read_some(int fd, void* data, std::size_t size);

// Reads exactly `size` bytes; false at EOF (errno 0) or an error. `*got`
// (if given) says how many bytes did arrive.
bool read_exact(int fd, void* data, std::size_t size, std::size_t* got = nullptr);

}  // namespace aerie::qfile
