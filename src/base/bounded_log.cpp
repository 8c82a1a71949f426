#include "base/bounded_log.hpp"

#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <stdexcept>
#include <string>

namespace aerie::base {

namespace {

constexpr int kLogFlags = O_WRONLY | O_APPEND | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY;

std::runtime_error failure(const std::string& what, int err) {
    return std::runtime_error(what + ": " + std::strerror(err));
}

uint64_t now_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// Closes every descriptor but the three given (a drainer keeps nothing of its parent's).
void close_all_but(int a, int b, int c) {
    int keep[3] = {a, b, c};
    std::sort(keep, keep + 3);
    unsigned lo = 0;
    for (int k : keep) {
        if (k < 0) continue;
        if (static_cast<unsigned>(k) > lo) ::syscall(SYS_close_range, lo, static_cast<unsigned>(k) - 1, 0u);
        lo = static_cast<unsigned>(k) + 1;
    }
    ::syscall(SYS_close_range, lo, ~0u, 0u);
}

[[noreturn]] void run_drainer(int in, BoundedLogFile& log, int dir_fd, const LogCap& cap) {
    // A forked copy of a daemon: its signal handlers and mask are not ours.
    sigset_t all;
    sigemptyset(&all);
    ::sigprocmask(SIG_SETMASK, &all, nullptr);
    struct sigaction dfl {};
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; ++s)
        if (s != SIGKILL && s != SIGSTOP) ::sigaction(s, &dfl, nullptr);
    ::prctl(PR_SET_NAME, "aerie-logdrain", 0, 0, 0);
    close_all_but(in, log.fd(), dir_fd);
    drain_into(in, log, cap);
    ::_exit(0);
}

}  // namespace

BoundedLogFile::BoundedLogFile(int dir_fd, std::string_view name, uint64_t max_bytes)
    : dir_fd_(dir_fd), max_bytes_(std::max<uint64_t>(max_bytes, 1)) {
    if (name.empty() || name.size() > kMaxName || name.find('/') != std::string_view::npos || name == "." ||
        name == "..")
        throw std::runtime_error("bad log file name: " + std::string(name));
    std::memcpy(name_, name.data(), name.size());
    std::memcpy(rotated_, name.data(), name.size());
    std::memcpy(rotated_ + name.size(), ".1", 2);
    fd_ = ::openat(dir_fd_, name_, kLogFlags | O_CREAT, 0640);
    if (fd_ < 0) throw failure("opening the log " + std::string(name), errno);
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd_);
        throw std::runtime_error("the log " + std::string(name) + " is not a regular file");
    }
    size_ = static_cast<uint64_t>(st.st_size);
}

BoundedLogFile::~BoundedLogFile() {
    if (fd_ >= 0) ::close(fd_);
}

bool BoundedLogFile::rotate() {
    // Only our own file: after the qube's logs were removed (and perhaps a new
    // qube of that name started its own), this log writes nothing more.
    struct stat ours {}, named {};
    if (::fstat(fd_, &ours) != 0 || ::fstatat(dir_fd_, name_, &named, AT_SYMLINK_NOFOLLOW) != 0 ||
        ours.st_dev != named.st_dev || ours.st_ino != named.st_ino ||
        ::renameat(dir_fd_, name_, dir_fd_, rotated_) != 0) {
        gone_ = true;
        return false;
    }
    int fresh = ::openat(dir_fd_, name_, kLogFlags | O_CREAT | O_TRUNC, 0640);
    if (fresh < 0) {
        gone_ = true;
        return false;
    }
    ::close(fd_);
    fd_ = fresh;
    size_ = 0;
    return true;
}

bool BoundedLogFile::write(const char* data, size_t size) {
    while (size > 0 && !gone_) {
        if (size_ >= max_bytes_ && !rotate()) break;
        size_t n = static_cast<size_t>(std::min<uint64_t>(size, max_bytes_ - size_));
        ssize_t w = ::write(fd_, data, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;  // e.g. a full disk: this piece is lost, not retried forever
        size_ += static_cast<uint64_t>(w);
        data += w;
        size -= static_cast<size_t>(w);
    }
    return !gone_;
}

void drain_into(int in, BoundedLogFile& log, const LogCap& cap) {
    char buf[16384];
    const bool budgeted = cap.bytes_per_second > 0;
    const uint64_t burst = std::max<uint64_t>(cap.burst_bytes, sizeof buf);
    uint64_t tokens = burst;
    uint64_t last = now_ns();
    for (;;) {
        size_t want = sizeof buf;
        if (budgeted) {
            uint64_t now = now_ns();
            uint64_t earned = (now - last) * cap.bytes_per_second / 1000000000ull;
            if (earned > 0) {
                tokens = std::min(burst, tokens + earned);
                last = now;
            }
            if (tokens < sizeof buf) {
                // Wait for a whole buffer's worth; the writer meanwhile fills its pipe and blocks.
                uint64_t wait_ns = (sizeof buf - tokens) * 1000000000ull / cap.bytes_per_second + 1;
                timespec ts{static_cast<time_t>(wait_ns / 1000000000ull), static_cast<long>(wait_ns % 1000000000ull)};
                ::nanosleep(&ts, nullptr);
                continue;
            }
        }
        ssize_t n = ::read(in, buf, want);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return;
        if (budgeted) tokens -= static_cast<uint64_t>(n);
        log.write(buf, static_cast<size_t>(n));  // once the log is gone: read on to EOF, write nothing
    }
}

LogPipe spawn_log_drainer(const std::filesystem::path& path, const LogCap& cap) {
    std::filesystem::path dir = path.parent_path();
    if (dir.empty()) dir = ".";
    UniqueFd dir_fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dir_fd) throw failure("opening the log folder " + dir.string(), errno);
    BoundedLogFile log(dir_fd.get(), path.filename().string(), cap.max_bytes);
    int p[2], q[2];
    if (::pipe2(p, O_CLOEXEC) != 0) throw failure("pipe", errno);
    UniqueFd read_end(p[0]), write_end(p[1]);
    if (::pipe2(q, O_CLOEXEC) != 0) throw failure("pipe", errno);
    UniqueFd pid_in(q[0]), pid_out(q[1]);
    // Detached twice over (its own session, not our child): it outlives us
    // (aeried may restart while its qubes run), and nobody has to reap it.
    pid_t middle = ::fork();
    if (middle < 0) throw failure("fork", errno);
    if (middle == 0) {
        ::setsid();
        pid_t drainer = ::fork();
        if (drainer != 0) {
            (void)!::write(pid_out.get(), &drainer, sizeof drainer);
            ::_exit(drainer < 0 ? 1 : 0);
        }
        run_drainer(read_end.get(), log, dir_fd.get(), cap);
    }
    pid_out.reset();
    pid_t drainer = -1;
    ssize_t got;
    while ((got = ::read(pid_in.get(), &drainer, sizeof drainer)) < 0 && errno == EINTR) {
    }
    while (::waitpid(middle, nullptr, 0) < 0 && errno == EINTR) {
    }
    if (got != sizeof drainer || drainer <= 0) throw std::runtime_error("cannot start the drainer of " + path.string());
    // It cannot have ended (and its pid been reused): it waits for our write end.
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, drainer, 0)));
    return LogPipe{std::move(write_end), std::move(pidfd)};
}

void redirect_output_to_log(const std::filesystem::path& path, const LogCap& cap) {
    LogPipe out = spawn_log_drainer(path, cap);
    if (::dup2(out.input.get(), STDOUT_FILENO) < 0 || ::dup2(out.input.get(), STDERR_FILENO) < 0)
        throw failure("redirecting output to " + path.string(), errno);
}

void remove_log(const std::filesystem::path& path) {
    ::unlink(path.c_str());
    ::unlink((path.string() + ".1").c_str());
}

}  // namespace aerie::base
