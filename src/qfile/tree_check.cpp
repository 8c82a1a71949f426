#include "qfile/tree_check.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "base/unique_fd.hpp"
#include "qfile/names.hpp"

namespace aerie::qfile {

namespace {

using base::UniqueFd;

class Walker {
public:
    explicit Walker(bool ignore_symlinks) : ignore_symlinks_(ignore_symlinks) {}

    void entry(int dirfd, const std::string& local, const std::string& name) {
        struct stat st {};
        if (::fstatat(dirfd, local.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)
            fail("fstatat(" + quoted(name) + ")");
        if (S_ISLNK(st.st_mode) && ignore_symlinks_) return;
        if (!S_ISLNK(st.st_mode) && !S_ISDIR(st.st_mode) && !S_ISREG(st.st_mode)) return;  // not sent
        if (!safe_for_display(local)) result.all_names_safe = false;
        if (S_ISDIR(st.st_mode)) {
            int fd = ::openat(dirfd, local.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (fd < 0) fail("open(" + quoted(name) + ")");
            DIR* d = ::fdopendir(fd);
            if (!d) {
                ::close(fd);
                fail("fdopendir(" + quoted(name) + ")");
            }
            std::unique_ptr<DIR, int (*)(DIR*)> guard(d, ::closedir);
            while (dirent* e = ::readdir(d)) {
                if (!std::strcmp(e->d_name, ".") || !std::strcmp(e->d_name, "..")) continue;
                entry(::dirfd(d), e->d_name, name + "/" + e->d_name);
            }
            return;
        }
        if (__builtin_add_overflow(result.total_bytes, static_cast<std::uint64_t>(st.st_size),
                                   &result.total_bytes))
            throw TreeCheckError("Refusing to copy over 2**64 bytes");
        if (!S_ISLNK(st.st_mode)) return;
        std::string target(static_cast<std::size_t>(st.st_size) + 1, '\0');
        ssize_t n = ::readlinkat(dirfd, local.c_str(), target.data(), target.size());
        if (n < 0) fail("readlink(" + quoted(name) + ")");
        if (n != st.st_size) throw TreeCheckError("readlink(" + quoted(name) + ") returned wrong size");
        target.resize(static_cast<std::size_t>(n));
        if (!safe_for_display(target)) result.all_names_safe = false;
        if (validate_symlink(name, target, kAllowUnsafeCharacters | kAllowNonCanonicalSymlinks) != 0)
            throw TreeCheckError("Refusing to copy unsafe symbolic link " + quoted(name));
    }

    TreeCheck result;

private:
    [[noreturn]] static void fail(const std::string& what) {
        throw TreeCheckError(what + ": " + std::strerror(errno));
    }

    bool ignore_symlinks_;
};

}  // namespace

std::string quoted(const std::string& text) {
    std::string out = "\"";
    for (char c : text) {
        unsigned char u = static_cast<unsigned char>(c);
        if (c == '"' || c == '\\') {
            out += '\\';
            out += c;
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\t') {
            out += "\\t";
        } else if (u >= 0x20 && u <= 0x7E) {
            out += c;
        } else {
            out += '\\';
            out += static_cast<char>('0' + (u >> 6));
            out += static_cast<char>('0' + ((u >> 3) & 7));
            out += static_cast<char>('0' + (u & 7));
        }
    }
    return out + "\"";
}

TreeCheck check_trees(const std::vector<std::string>& paths, bool ignore_symlinks) {
    Walker walker(ignore_symlinks);
    for (std::size_t i = 0; i < paths.size(); ++i) {
        const std::string& p = paths[i];
        if (p.empty())
            throw TreeCheckError("Empty string (argument " + std::to_string(i + 1) + ") is not a valid path");
        if (p == "." || p == "..")
            throw TreeCheckError("Argument " + std::to_string(i + 1) + " is \"" + p +
                                 "\", which is not allowed.  Try operating from the parent directory.");
        std::string trimmed = p;
        while (trimmed.size() > 1 && trimmed.back() == '/') trimmed.pop_back();
        if (trimmed == "/") throw TreeCheckError("Refusing to copy root directory");
        auto slash = trimmed.rfind('/');
        std::string dir = slash == std::string::npos ? "." : (slash == 0 ? "/" : trimmed.substr(0, slash));
        std::string base = slash == std::string::npos ? trimmed : trimmed.substr(slash + 1);
        if (base == "." || base == "..")
            throw TreeCheckError("Refusing to copy path with basename empty, ., or ..");
        UniqueFd dirfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOCTTY));
        if (!dirfd) throw TreeCheckError("open(" + quoted(p) + "): " + std::strerror(errno));
        walker.entry(dirfd.get(), base, base);
    }
    return walker.result;
}

}  // namespace aerie::qfile
