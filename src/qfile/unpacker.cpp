#include "qfile/unpacker.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <string_view>
#include <vector>

#include "base/safe_dir.hpp"
#include "base/unique_fd.hpp"
#include "qfile/crc32.hpp"
#include "qfile/io.hpp"
#include "qfile/wire.hpp"

namespace aerie::qfile {

namespace {

using base::UniqueFd;

// Ends the stream with an error code and the name the answer reports.
struct Stop {
    std::uint32_t code;
    std::optional<std::string> name;
};

// Setuid and setgid bits are not given to received files.
constexpr mode_t kKeptModeBits = 01777;

class Session {
public:
    Session(int dirfd, const UnpackOptions& options, int in_fd)
        : dirfd_(dirfd), options_(options), in_(in_fd) {
        // O_TMPFILE keeps a file invisible until it is complete; linking it
        // needs its /proc/self/fd entry. Without /proc, files are made
        // under their name at once.
        procfd_.reset(::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    }

    UnpackResult run() {
        bool end_seen = false;
        try {
            std::uint8_t raw[kFileHeaderSize];
            while (read_counted(raw, sizeof raw)) {
                FileHeader h = decode_file_header(std::span<const std::uint8_t, kFileHeaderSize>(raw));
                if (h.namelen == 0) {
                    end_seen = true;
                    break;
                }
                ++files_;
                if (options_.max_files && files_ > options_.max_files) throw Stop{EDQUOT, last_name_};
                entry(h);
            }
        } catch (const Stop& stop) {
            return {stop.code, crc_.value(), stop.name};
        }
        // Both a clean end and a stream cut between entries are answered
        // after the data reached the disk.
        int fd = base::open_beneath_errno(dirfd_, ".", O_RDONLY | O_DIRECTORY, base::FileKind::Directory);
        if (fd >= 0) {
            ::syncfs(fd);
            ::close(fd);
        }
        return {end_seen ? 0u : static_cast<std::uint32_t>(EREMOTEIO), crc_.value(), last_name_};
    }

private:
    // A whole field, counted in the checksum only once it is complete.
    bool read_counted(void* data, std::size_t size) {
        if (!read_exact(in_, data, size)) return false;
        crc_.update(data, size);
        return true;
    }

    // A name or link target: `len` bytes, cut at the first NUL.
    std::optional<std::string> read_text(std::uint64_t len) {
        std::vector<char> buf(len);
        if (len && !read_counted(buf.data(), len)) return std::nullopt;
        std::string text(buf.data(), len);
        auto nul = text.find('\0');
        if (nul != std::string::npos) text.resize(nul);
        return text;
    }

    void entry(const FileHeader& h) {
        if (h.namelen > kMaxPathLength - 1) throw Stop{ENAMETOOLONG, std::nullopt};
        auto name = read_text(h.namelen);
        if (!name) throw Stop{kLegalEof, std::nullopt};
        last_name_ = *name;
        if (S_ISREG(h.mode))
            regular(h, *name);
        else if (S_ISLNK(h.mode) && options_.allow_symlinks)
            symlink(h, *name);
        else if (S_ISDIR(h.mode) && options_.allow_directories)
            directory(h, *name);
        else
            throw Stop{EINVAL, *name};
    }

    std::uint32_t name_flags() const {
        // Names always come canonical from a sender's file system walk.
        return options_.name_flags &
               (kAllowUnsafeCharacters | kAllowNonCanonicalSymlinks | kAllowUnsafeSymlinks);
    }

    // The directory that will hold `name` and its last component. The
    // parent is walked one component at a time, each resolved beneath the
    // previous one's descriptor with no symlink or mount crossing, so a
    // failure names the component as Qubes' receiver does (a symlink or a
    // file on the way is ENOTDIR). `name` has been validated: no "..", ".",
    // or empty component.
    std::pair<UniqueFd, std::string> parent_of(const std::string& name) {
        UniqueFd current;
        int at = dirfd_;
        std::size_t start = 0;
        for (;;) {
            std::size_t slash = name.find('/', start);
            if (slash == std::string::npos) {
                if (!current) {
                    int fd = base::open_beneath_errno(dirfd_, ".", O_PATH | O_DIRECTORY,
                                                      base::FileKind::Directory);
                    if (fd < 0) throw Stop{static_cast<std::uint32_t>(-fd), name};
                    current.reset(fd);
                }
                return {std::move(current), name.substr(start)};
            }
            std::string component = name.substr(start, slash - start);
            int fd = open_directory(at, component, O_PATH);
            if (fd < 0) throw Stop{static_cast<std::uint32_t>(-fd), component};
            current.reset(fd);
            at = current.get();
            start = slash + 1;
        }
    }

    // One component beneath `at` as a directory; -errno on failure, a
    // symlink refused as ENOTDIR (what O_DIRECTORY | O_NOFOLLOW says).
    static int open_directory(int at, const std::string& component, int flags) {
        int fd =
            base::open_beneath_errno(at, component.c_str(), flags | O_DIRECTORY, base::FileKind::Directory);
        return fd == -ELOOP ? -ENOTDIR : fd;
    }

    static timespec checked_time(std::uint32_t sec, std::uint32_t nsec, const std::string& name) {
        if (nsec > 999999999u) throw Stop{EINVAL, name};
        timespec t{};
        t.tv_sec = sec;
        t.tv_nsec = nsec;
        return t;
    }

    void set_mode_and_times(int fd, const FileHeader& h, const std::string& name) {
        const timespec times[2] = {checked_time(h.atime, h.atime_nsec, name),
                                   checked_time(h.mtime, h.mtime_nsec, name)};
        if (::fchmod(fd, static_cast<mode_t>(h.mode) & kKeptModeBits) != 0)
            throw Stop{static_cast<std::uint32_t>(errno), name};
        if (::futimens(fd, times) != 0) throw Stop{static_cast<std::uint32_t>(errno), name};
    }

    void regular(const FileHeader& h, const std::string& name) {
        if (validate_file_name(name, name_flags()) != 0) throw Stop{EILSEQ, name};
        auto [parent, last] = parent_of(name);
        UniqueFd out;
        bool linked_later = false;
        if (procfd_) {
            out.reset(::openat(parent.get(), ".", O_WRONLY | O_TMPFILE | O_CLOEXEC | O_NOCTTY, 0700));
            if (out)
                linked_later = true;
            else if (errno != EOPNOTSUPP && errno != EISDIR && errno != ENOENT)
                throw Stop{static_cast<std::uint32_t>(errno), name};
        }
        if (!out) {
            // `last` is one component: O_NOFOLLOW and O_EXCL refuse any
            // existing name, a symlink included.
            out.reset(::openat(parent.get(), last.c_str(),
                               O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0000));
            if (!out) throw Stop{static_cast<std::uint32_t>(errno), name};
        }
        if (h.filelen > static_cast<std::uint64_t>(LLONG_MAX) ||
            (options_.max_bytes && h.filelen > options_.max_bytes))
            throw Stop{EDQUOT, name};
        if (options_.max_bytes && bytes_ > options_.max_bytes - h.filelen) throw Stop{EDQUOT, name};
        bytes_ += h.filelen;
        copy_data(out.get(), h.filelen, name);
        if (linked_later) {
            std::string self = std::to_string(out.get());
            if (::linkat(procfd_.get(), self.c_str(), parent.get(), last.c_str(), AT_SYMLINK_FOLLOW) != 0)
                throw Stop{static_cast<std::uint32_t>(errno), name};
        }
        set_mode_and_times(out.get(), h, name);
    }

    void copy_data(int out, std::uint64_t size, const std::string& name) {
        static thread_local std::vector<char> buf(64 * 1024);
        while (size > 0) {
            std::size_t want = size < buf.size() ? static_cast<std::size_t>(size) : buf.size();
            ssize_t n = read_some(in_, buf.data(), want);
            if (n <= 0) throw Stop{kLegalEof, name};
            crc_.update(buf.data(), static_cast<std::size_t>(n));
            if (!write_all(out, buf.data(), static_cast<std::size_t>(n)))
                throw Stop{static_cast<std::uint32_t>(errno), name};
            size -= static_cast<std::uint64_t>(n);
        }
    }

    void directory(const FileHeader& h, const std::string& name) {
        if (validate_file_name(name, name_flags()) != 0) throw Stop{EILSEQ, name};
        auto [parent, last] = parent_of(name);
        // Made writable at first; its own mode and times are set when it is
        // sent again after its contents.
        if (::mkdirat(parent.get(), last.c_str(), 0700) == 0) return;
        if (errno != EEXIST) throw Stop{static_cast<std::uint32_t>(errno), name};
        int fd = open_directory(parent.get(), last, O_RDONLY);
        if (fd < 0) throw Stop{static_cast<std::uint32_t>(-fd), name};
        UniqueFd dir(fd);
        struct stat st {};
        if (::fstat(dir.get(), &st) != 0) throw Stop{static_cast<std::uint32_t>(errno), name};
        bytes_ += static_cast<std::uint64_t>(st.st_size);
        set_mode_and_times(dir.get(), h, name);
    }

    void symlink(const FileHeader& h, const std::string& name) {
        if (h.filelen > kMaxPathLength - 1) throw Stop{ENAMETOOLONG, name};
        bytes_ += h.filelen;
        if (options_.max_bytes && bytes_ > options_.max_bytes) throw Stop{EDQUOT, name};
        auto target = read_text(h.filelen);
        if (!target) throw Stop{kLegalEof, name};
        // A bad link reports its target, as Qubes' receiver does.
        if (int err = validate_symlink(name, *target, name_flags()); err != 0)
            throw Stop{static_cast<std::uint32_t>(err), *target};
        auto [parent, last] = parent_of(name);
        if (::symlinkat(target->c_str(), parent.get(), last.c_str()) != 0)
            throw Stop{static_cast<std::uint32_t>(errno), name};
    }

    int dirfd_;
    const UnpackOptions& options_;
    int in_;
    UniqueFd procfd_;
    Crc32 crc_;
    std::uint64_t files_ = 0;
    std::uint64_t bytes_ = 0;
    std::string last_name_;
};

}  // namespace

Unpacker::Unpacker(int incoming_dirfd, UnpackOptions options) : dirfd_(incoming_dirfd), options_(options) {}

UnpackResult Unpacker::run(int in_fd, int out_fd) {
    Session session(dirfd_, options_, in_fd);
    UnpackResult result = session.run();
    if (out_fd >= 0) {
        std::string answer = encode_result(result.error_code, result.crc32, result.last_name);
        write_all(out_fd, answer.data(), answer.size());
    }
    return result;
}

}  // namespace aerie::qfile
