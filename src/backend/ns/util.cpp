#include "backend/ns/util.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <cerrno>
#include <cstring>

#include "backend/backend.hpp"

namespace aerie::backend::ns {

std::string errno_text(const std::string& what, int err) {
    return what + ": " + std::strerror(err);
}

void throw_errno(const std::string& what, int err) {
    throw BackendError(errno_text(what, err));
}

std::optional<std::string> try_read_file(const std::filesystem::path& path) {
    Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) return std::nullopt;
    std::string out;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(fd.get(), buf, sizeof buf);
        if (n < 0) {
            if (errno == EINTR) continue;
            return std::nullopt;
        }
        if (n == 0) break;
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

std::string read_file(const std::filesystem::path& path) {
    auto text = try_read_file(path);
    if (!text) throw_errno("reading " + path.string(), errno);
    return *text;
}

int write_file_errno(const std::filesystem::path& path, const std::string& text) {
    Fd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) return errno;
    ssize_t n;
    do n = ::write(fd.get(), text.data(), text.size());
    while (n < 0 && errno == EINTR);
    if (n < 0) return errno;
    if (static_cast<size_t>(n) != text.size()) return EIO;
    return 0;
}

void write_file(const std::filesystem::path& path, const std::string& text) {
    if (int err = write_file_errno(path, text)) throw_errno("writing " + path.string(), err);
}

void write_file_atomic(const std::filesystem::path& path, const std::string& text, mode_t mode, bool sync) {
    std::filesystem::path tmp = path;
    tmp += ".tmp";
    Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode));
    if (!fd) throw_errno("creating " + tmp.string(), errno);
    size_t done = 0;
    while (done < text.size()) {
        ssize_t n = ::write(fd.get(), text.data() + done, text.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            throw_errno("writing " + tmp.string(), errno);
        }
        done += static_cast<size_t>(n);
    }
    if (sync && ::fsync(fd.get()) < 0) throw_errno("fsync " + tmp.string(), errno);
    fd.reset();
    if (::rename(tmp.c_str(), path.c_str()) < 0) throw_errno("renaming " + tmp.string(), errno);
}

std::optional<ProcStat> parse_proc_stat(const std::string& text) {
    // "pid (comm) S ppid ..."; comm may hold spaces and parentheses.
    size_t close = text.rfind(')');
    if (close == std::string::npos || close + 2 >= text.size()) return std::nullopt;
    ProcStat st;
    st.state = text[close + 2];
    // Field 3 is the state, 4 the parent; the start time is field 22.
    size_t pos = close + 2;
    for (int field = 3; field < 22; ++field) {
        pos = text.find(' ', pos);
        if (pos == std::string::npos) return std::nullopt;
        ++pos;
        if (field == 3) st.ppid = static_cast<pid_t>(std::strtol(text.c_str() + pos, nullptr, 10));
    }
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(text.c_str() + pos, &end, 10);
    if (errno || end == text.c_str() + pos) return std::nullopt;
    st.start_time = v;
    return st;
}

std::optional<ProcStat> read_proc_stat(pid_t pid) {
    if (pid <= 0) return std::nullopt;
    auto text = try_read_file("/proc/" + std::to_string(pid) + "/stat");
    if (!text) return std::nullopt;
    return parse_proc_stat(*text);
}

int sys_pidfd_open(pid_t pid) {
    return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
}

int sys_pidfd_send_signal(int pidfd, int sig) {
    return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

bool valid_qube_name(const std::string& name) {
    if (name.empty() || name.size() > 31) return false;
    auto alpha = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
    if (!alpha(name[0])) return false;
    for (char c : name)
        if (!alpha(c) && !(c >= '0' && c <= '9') && c != '_' && c != '.' && c != '-') return false;
    return true;
}

}  // namespace aerie::backend::ns
