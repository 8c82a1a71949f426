#include "qfile/packer.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <vector>

#include "base/unique_fd.hpp"
#include "qfile/io.hpp"
#include "qfile/wire.hpp"

namespace aerie::qfile {

namespace {

using base::UniqueFd;

std::string displayable(const std::string& name) {
    std::string out = name;
    for (char& c : out) {
        unsigned char u = static_cast<unsigned char>(c);
        if (u < ' ' || u > '~' || c == '"') c = '_';
    }
    return out;
}

std::string sys_error(const std::string& what) {
    return what + ": " + std::strerror(errno);
}

}  // namespace

std::string describe_result(std::uint32_t code, const std::string& last_name, bool has_name) {
    std::string name = displayable(last_name);
    std::string prefix = has_name ? "; Last file: " : "";
    switch (code) {
        case EEXIST:
            return "A file named \"" + name + "\" already exists in QubesIncoming dir";
        case EINVAL:
            return "File copy: Corrupted data from packer" + prefix + "\"" + name + "\"";
        case EILSEQ:
            return "Forbidden character in file or link target. Name might look somewhat like \"" + name +
                   "\"";
        case ENOLINK:
            return "Cannot verify that link at \"" + name + "\" would not be broken by copy";
        default:
            return "File copy: \"" + std::string(std::strerror(static_cast<int>(code))) + prefix + name +
                   "\"";
    }
}

Packer::Packer(int out_fd, int in_fd) : out_(out_fd), in_(in_fd) {}

void Packer::write_counted(const void* data, std::size_t size) {
    crc_.update(data, size);
    if (!write_all(out_, data, size)) broken_pipe();
}

// The receiver stopped reading: its answer says why.
void Packer::broken_pipe() {
    check_answer(true);
    throw PackError("File copy: the receiver stopped reading");
}

// Reads the receiver's answer if there is one (or waits for it): an error
// code throws its message, a success with another checksum too.
void Packer::check_answer(bool wait) {
    if (!wait) {
        pollfd p{in_, POLLIN, 0};
        int r;
        do r = ::poll(&p, 1, 0);
        while (r < 0 && errno == EINTR);
        if (r <= 0) return;
    }
    std::uint8_t head[kResultHeaderSize];
    if (!read_exact(in_, head, sizeof head)) throw PackError("File copy: no answer from the receiver");
    ResultHeader r = decode_result_header(std::span<const std::uint8_t, kResultHeaderSize>(head));
    std::uint8_t ext[kResultExtSize];
    std::string name;
    bool has_name = false;
    if (read_exact(in_, ext, sizeof ext)) {
        std::uint32_t len = get_le32(ext);
        if (len > kMaxPathLength) len = kMaxPathLength;
        name.resize(len);
        if (len && !read_exact(in_, name.data(), len))
            name.clear();
        else
            has_name = len > 0;
    }
    if (r.error_code != 0) throw PackError(describe_result(r.error_code, name, has_name));
    if (r.crc32 != crc_.value()) throw PackError("File transfer failed: checksum mismatch");
    if (!wait) throw PackError("File copy: the receiver answered before the end");
}

void Packer::send(const std::string& path, bool ignore_symlinks) {
    if (path.empty()) throw PackError("Invalid empty argument");
    // The entry goes under its last component; its parent is opened as given.
    std::string trimmed = path;
    while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
    auto slash = trimmed.rfind('/');
    std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : trimmed.substr(0, slash));
    std::string base = slash == std::string::npos ? trimmed : trimmed.substr(slash + 1);
    UniqueFd dirfd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!dirfd) throw PackError(sys_error("chdir to " + dir));
    walk(dirfd.get(), base, base, ignore_symlinks);
}

void Packer::walk(int dirfd, const std::string& local, const std::string& wire_name, bool ignore_symlinks) {
    struct stat st {};
    if (::fstatat(dirfd, local.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
        throw PackError(sys_error("stat " + wire_name));
    if (S_ISLNK(st.st_mode) && ignore_symlinks) return;
    entry(dirfd, local, wire_name, st);
    if (!S_ISDIR(st.st_mode)) return;
    int fd = ::openat(dirfd, local.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) throw PackError(sys_error("opendir " + wire_name));
    DIR* d = ::fdopendir(fd);
    if (!d) {
        ::close(fd);
        throw PackError(sys_error("opendir " + wire_name));
    }
    std::unique_ptr<DIR, int (*)(DIR*)> guard(d, ::closedir);
    while (dirent* e = ::readdir(d)) {
        if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
        walk(::dirfd(d), e->d_name, wire_name + "/" + e->d_name, ignore_symlinks);
    }
    // A directory is sent again after its contents, so the receiver sets its
    // mode and times last.
    entry(dirfd, local, wire_name, st);
}

void Packer::entry(int dirfd, const std::string& local, const std::string& wire_name, const struct stat& st) {
    FileHeader h;
    h.namelen = static_cast<std::uint32_t>(wire_name.size() + 1);
    h.mode = st.st_mode;
    h.atime = static_cast<std::uint32_t>(st.st_atim.tv_sec);
    h.atime_nsec = static_cast<std::uint32_t>(st.st_atim.tv_nsec);
    h.mtime = static_cast<std::uint32_t>(st.st_mtim.tv_sec);
    h.mtime_nsec = static_cast<std::uint32_t>(st.st_mtim.tv_nsec);
    auto send_header = [&] {
        auto bytes = encode_file_header(h);
        write_counted(bytes.data(), bytes.size());
        write_counted(wire_name.c_str(), wire_name.size() + 1);
    };
    if (S_ISREG(st.st_mode)) {
        UniqueFd fd(::openat(dirfd, local.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
        if (!fd) throw PackError(sys_error("open " + wire_name));
        h.filelen = static_cast<std::uint64_t>(st.st_size);
        send_header();
        std::vector<char> buf(64 * 1024);
        std::uint64_t left = h.filelen;
        while (left > 0) {
            std::size_t want = left < buf.size() ? static_cast<std::size_t>(left) : buf.size();
            ssize_t n = read_some(fd.get(), buf.data(), want);
            if (n < 0) throw PackError("Copying file " + wire_name + ": Error reading");
            if (n == 0)
                throw PackError("Copying file " + wire_name + ": Unexpected end of data while reading");
            write_counted(buf.data(), static_cast<std::size_t>(n));
            left -= static_cast<std::uint64_t>(n);
            if (progress_) progress_(static_cast<std::uint64_t>(n));
        }
    } else if (S_ISDIR(st.st_mode)) {
        h.filelen = 0;
        send_header();
    } else if (S_ISLNK(st.st_mode)) {
        std::vector<char> target(static_cast<std::size_t>(st.st_size) + 1);
        ssize_t n = ::readlinkat(dirfd, local.c_str(), target.data(), target.size());
        if (n != st.st_size) throw PackError(sys_error("readlink " + wire_name));
        h.filelen = static_cast<std::uint64_t>(n);
        send_header();
        write_counted(target.data(), static_cast<std::size_t>(n));
    }
    // Other types (devices, fifos, sockets) are passed over, as Qubes' sender does.
    check_answer(false);
}

void Packer::finish() {
    auto end = encode_file_header(FileHeader{});
    write_counted(end.data(), end.size());
    check_answer(true);
}

}  // namespace aerie::qfile
