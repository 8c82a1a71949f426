// Small system helpers of the ns driver: owned descriptors, whole-file reads
// and writes that throw BackendError naming the file and the errno.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <utility>

#include "base/unique_fd.hpp"

namespace aerie::backend::ns {

// The base layer's owned descriptor.
using Fd = base::UniqueFd;

// "<what>: <strerror(err)>"
std::string errno_text(const std::string& what, int err);
[[noreturn]] void throw_errno(const std::string& what, int err);

// Reads a whole (small) file; nullopt if it cannot be opened or read.
std::optional<std::string> try_read_file(const std::filesystem::path& path);
std::string read_file(const std::filesystem::path& path);
// Writes `text` with one write(2) (what kernel interfaces like /proc and
// cgroupfs expect); throws BackendError on failure. The *_errno form returns
// 0 or the errno.
void write_file(const std::filesystem::path& path, const std::string& text);
int write_file_errno(const std::filesystem::path& path, const std::string& text);
// Writes a file atomically (temporary file, rename; fsync first if `sync`).
void write_file_atomic(const std::filesystem::path& path, const std::string& text, mode_t mode, bool sync);

// Field 22 of /proc/<pid>/stat (start time in clock ticks since boot), and
// whether the process is a zombie; nullopt if there is no such process.
struct ProcStat {
    uint64_t start_time = 0;
    char state = '?';
    pid_t ppid = 0;
};
std::optional<ProcStat> read_proc_stat(pid_t pid);
std::optional<ProcStat> parse_proc_stat(const std::string& text);

// pidfd_open(2) and pidfd_send_signal(2) (glibc 2.36's <sys/pidfd.h> lacks
// C linkage for C++).
int sys_pidfd_open(pid_t pid);
int sys_pidfd_send_signal(int pidfd, int sig);

// Qube names as Qubes allows them: a letter, then letters, digits, "_.-",
// at most 31 characters (they become file and cgroup names).
bool valid_qube_name(const std::string& name);

}  // namespace aerie::backend::ns
