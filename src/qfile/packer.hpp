// The sending side of qubes.Filecopy (Qubes' qfile-agent): walks files and
// directories and writes them as a qfile stream (wire.hpp), then waits for the
// receiver's answer and checks its checksum. Between entries it looks, without
// waiting, whether the receiver already answered (an error), so a refused
// transfer stops early.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

#include "qfile/crc32.hpp"

namespace aerie::qfile {

// A failed transfer; what() is the message for the user (Qubes' texts).
class PackError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class Packer {
public:
    // `out_fd` carries the stream to the receiver, `in_fd` its answer. The
    // process ignores SIGPIPE (a receiver that stopped reading has answered
    // why).
    Packer(int out_fd, int in_fd);

    // Called with the number of data bytes just sent.
    void on_progress(std::function<void(std::uint64_t)> f) { progress_ = std::move(f); }

    // Sends `path` (a file, a directory with everything beneath it, or a
    // symlink) under its last component's name. Throws PackError.
    void send(const std::string& path, bool ignore_symlinks);

    // Sends the end marker and checks the answer. Throws PackError.
    void finish();

private:
    void walk(int dirfd, const std::string& local, const std::string& wire_name, bool ignore_symlinks);
    void entry(int dirfd, const std::string& local, const std::string& wire_name, const struct stat& st);
    void write_counted(const void* data, std::size_t size);
    void check_answer(bool wait);
    [[noreturn]] void broken_pipe();

    int out_;
    int in_;
    Crc32 crc_;
    std::function<void(std::uint64_t)> progress_;
};

// The message a sender shows for a receiver's error code and last name
// (Qubes' texts; the name with every byte outside ' '..'~' and '"' as '_').
std::string describe_result(std::uint32_t error_code, const std::string& last_name, bool has_name);

}  // namespace aerie::qfile
