#include "storage/image.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <spawn.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include "base/unique_fd.hpp"

extern char** environ;

namespace aerie::storage {

namespace fs = std::filesystem;
using base::UniqueFd;

namespace {

// e2fsprogs live in /sbin, which a daemon's PATH may lack.
std::string find_program(const std::string& name) {
    for (const char* dir : {"/usr/sbin/", "/sbin/", "/usr/bin/", "/bin/"}) {
        std::string p = std::string(dir) + name;
        if (::access(p.c_str(), X_OK) == 0) return p;
    }
    throw StorageError(name + " not found (install e2fsprogs)");
}

}  // namespace

void run_e2fsprogs(const std::string& program, const std::vector<std::string>& args, int max_ok) {
    std::string path = find_program(program);
    std::vector<std::string> argv{path};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<char*> cargs;
    for (auto& a : argv) cargs.push_back(a.data());
    cargs.push_back(nullptr);
    int out[2];
    if (::pipe2(out, O_CLOEXEC) < 0) throw_storage_errno("pipe", errno);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, out[1], 1);
    posix_spawn_file_actions_adddup2(&actions, out[1], 2);
    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, path.c_str(), &actions, nullptr, cargs.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(out[1]);
    std::string said;
    char buf[4096];
    ssize_t n;
    while (rc == 0 && (n = ::read(out[0], buf, sizeof buf)) != 0) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        if (said.size() < 4096) said.append(buf, static_cast<size_t>(n));
    }
    ::close(out[0]);
    if (rc != 0) throw_storage_errno("running " + path, rc);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (!WIFEXITED(status) || WEXITSTATUS(status) > max_ok) {
        while (!said.empty() && (said.back() == '\n' || said.back() == ' ')) said.pop_back();
        throw StorageError(program + " failed (" +
                           (WIFEXITED(status) ? "exit " + std::to_string(WEXITSTATUS(status))
                                              : "signal " + std::to_string(WTERMSIG(status))) +
                           ")" + (said.empty() ? "" : ": " + said));
    }
}

void make_ext4_image(const fs::path& path, uint64_t size, uint64_t bytes_per_inode, bool journal) {
    {
        UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
        if (!fd) throw_storage_errno("creating " + path.string(), errno);
        if (::ftruncate(fd.get(), static_cast<off_t>(size)) < 0) {
            int err = errno;
            ::unlink(path.c_str());
            throw_storage_errno("sizing " + path.string(), err);
        }
    }
    try {
        // -m 0: no blocks reserved for root (the qube's root is the qube);
        // lazy inode tables and journal: nothing zeroed, the file stays sparse
        // (the pool mounts with noinit_itable, so the kernel does not zero
        // them later either); nodiscard: nothing to discard in a new file.
        std::vector<std::string> args{"-q", "-F", "-m", "0", "-i", std::to_string(bytes_per_inode), "-E",
                                      "lazy_itable_init=1,lazy_journal_init=1,nodiscard"};
        if (!journal) args.insert(args.end(), {"-O", "^has_journal"});
        args.push_back(path.string());
        run_e2fsprogs("mkfs.ext4", args);
    } catch (...) {
        ::unlink(path.c_str());
        throw;
    }
}

void copy_image(const fs::path& src, const fs::path& dst) {
    UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!in) throw_storage_errno("opening " + src.string(), errno);
    struct stat st;
    if (::fstat(in.get(), &st) < 0) throw_storage_errno("reading " + src.string(), errno);
    if (!S_ISREG(st.st_mode)) throw StorageError(src.string() + " is not an image file");
    UniqueFd out(::open(dst.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
    if (!out) throw_storage_errno("creating " + dst.string(), errno);
    auto fail = [&](const std::string& what, int err) {
        ::unlink(dst.c_str());
        throw_storage_errno(what, err);
    };
    if (::ioctl(out.get(), FICLONE, in.get()) == 0) return;
    if (::ftruncate(out.get(), st.st_size) < 0) fail("sizing " + dst.string(), errno);
    off_t pos = 0;
    while (pos < st.st_size) {
        off_t data = ::lseek(in.get(), pos, SEEK_DATA);
        if (data < 0) {
            if (errno == ENXIO) break;  // only a hole is left
            fail("reading " + src.string(), errno);
        }
        off_t hole = ::lseek(in.get(), data, SEEK_HOLE);
        if (hole < 0) fail("reading " + src.string(), errno);
        loff_t from = data, to = data;
        while (from < hole) {
            ssize_t n = ::copy_file_range(in.get(), &from, out.get(), &to, static_cast<size_t>(hole - from), 0);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) fail("copying " + src.string() + " to " + dst.string(), errno);
            if (n == 0) break;  // the source shrank: what is left is a hole
        }
        pos = hole;
    }
    if (::fsync(out.get()) < 0) fail("writing " + dst.string(), errno);
}

uint64_t image_size(const fs::path& path) {
    struct stat st;
    if (::lstat(path.c_str(), &st) < 0) throw_storage_errno("reading " + path.string(), errno);
    return static_cast<uint64_t>(st.st_size);
}

uint64_t image_allocated(const fs::path& path) {
    struct stat st;
    if (::lstat(path.c_str(), &st) < 0) return 0;
    return static_cast<uint64_t>(st.st_blocks) * 512;
}

void grow_image_filesystem(const fs::path& image) {
    run_e2fsprogs("e2fsck", {"-f", "-p", image.string()}, 1);
    run_e2fsprogs("resize2fs", {image.string()});
}

void extend_image(const fs::path& path, uint64_t size) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
    if (!fd) throw_storage_errno("opening " + path.string(), errno);
    struct stat st;
    if (::fstat(fd.get(), &st) < 0) throw_storage_errno("reading " + path.string(), errno);
    if (static_cast<uint64_t>(st.st_size) >= size) return;
    if (::ftruncate(fd.get(), static_cast<off_t>(size)) < 0) throw_storage_errno("growing " + path.string(), errno);
}

}  // namespace aerie::storage
