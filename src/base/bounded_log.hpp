// Log files with a size cap: the file never grows past `max_bytes`; at the
// cap it becomes "<name>.1" (one rotated copy, the older one dropped) and a
// new file starts. So a log costs at most twice its cap, whoever writes it.
//
// Writers that are not ours (a qube's console, a daemon's stderr and its
// children's) get a pipe instead of the file: a small detached process drains
// the pipe into the capped file (spawn_log_drainer). The file is never
// reachable through the writer's descriptors, and the drainer outlives the
// process that started it (aeried may restart while its qubes run on).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string_view>

#include "base/unique_fd.hpp"

namespace aerie::base {

struct LogCap {
    uint64_t max_bytes = 1 << 20;  // per file; one rotated copy besides
    // A byte budget (0: none): past `burst_bytes`, at most `bytes_per_second`
    // are taken from the pipe; the writer then waits on a full pipe. Costs the
    // host a bounded amount of work however fast a qube writes.
    uint64_t bytes_per_second = 0;
    uint64_t burst_bytes = 0;
};

// The capped file itself. Every method uses system calls only (no allocation):
// the drainer runs it in a child forked from a threaded daemon.
class BoundedLogFile {
public:
    // Opens (creating, appending) `name` in the directory `dir_fd` (kept, not owned).
    // `name` must fit in kMaxName bytes. Throws std::runtime_error on failure.
    BoundedLogFile(int dir_fd, std::string_view name, uint64_t max_bytes);
    ~BoundedLogFile();
    BoundedLogFile(const BoundedLogFile&) = delete;
    BoundedLogFile& operator=(const BoundedLogFile&) = delete;

    // Appends, rotating at the cap. False once the log was removed from under
    // it (the qube's logs deleted): then it writes nothing more.
    bool write(const char* data, size_t size);

    int fd() const { return fd_; }
    static constexpr size_t kMaxName = 240;

private:
    bool rotate();
    int dir_fd_;
    int fd_ = -1;
    uint64_t max_bytes_;
    uint64_t size_ = 0;
    bool gone_ = false;
    char name_[kMaxName + 1] = {};
    char rotated_[kMaxName + 3] = {};
};

// Copies everything read from `in` into `log` until EOF, within `cap`'s byte
// budget. System calls only.
void drain_into(int in, BoundedLogFile& log, const LogCap& cap);

struct LogPipe {
    UniqueFd input;    // the pipe's write end (close-on-exec): give it to the writer
    UniqueFd drainer;  // a pidfd of the drainer: readable once it has copied everything and ended
};

// Starts a detached drainer writing to `path` (its directory must be the
// host's own, not a qube's). The drainer ends when every copy of the write
// end is closed. Throws std::runtime_error on failure.
LogPipe spawn_log_drainer(const std::filesystem::path& path, const LogCap& cap);

// Sends this process's stdout and stderr to a drainer of `path`.
void redirect_output_to_log(const std::filesystem::path& path, const LogCap& cap);

// Deletes `path` and its rotated copy (missing ones are fine).
void remove_log(const std::filesystem::path& path);

}  // namespace aerie::base
