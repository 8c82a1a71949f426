// vm-file-editor: qubes.OpenInVM in a qube (Qubes' wire format,
// open_request.hpp). Reads the name block and the file to EOF into a fresh
// folder /tmp/<caller>-XXXXXX, opens it with the qube's handler
// (open_handler.hpp), waits for the handler, and sends the file back when it
// changed (its modification time to the nanosecond, size or inode; Qubes
// compares whole seconds) unless it was sent view-only (then it is made
// read-only first). The file and its folder are removed at the end. Exit
// code 1 when the request is refused (the reason on stderr), else 0 (a
// handler's failure is reported on stderr, as Qubes reports it in a dialog).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "services/io_util.hpp"
#include "services/open_handler.hpp"
#include "services/open_request.hpp"

using namespace aerie::services;

namespace {

int refuse(const std::string& why) {
    std::fprintf(stderr, "qubes.OpenInVM: %s\n", why.c_str());
    return 1;
}

bool same_file(const struct stat& a, const struct stat& b) {
    return a.st_ino == b.st_ino && a.st_size == b.st_size && a.st_mtim.tv_sec == b.st_mtim.tv_sec &&
           a.st_mtim.tv_nsec == b.st_mtim.tv_nsec;
}

}  // namespace

int main() {
    // A caller gone while the file goes back must not stop the cleanup.
    std::signal(SIGPIPE, SIG_IGN);
    const char* source = std::getenv("QREXEC_REMOTE_DOMAIN");
    if (!source || !usable_source_name(source)) return refuse("no usable calling qube name");

    char block[kOpenNameBlockSize];
    ssize_t got = read_full(0, block, sizeof block);
    if (got != static_cast<ssize_t>(sizeof block))
        return refuse("the file name did not come (" + std::to_string(got < 0 ? 0 : got) + " of 256 bytes)");
    std::string error;
    auto request = parse_open_name_block(std::string_view(block, sizeof block), &error);
    if (!request) return refuse(error);

    std::string dir = std::string("/tmp/") + source + "-XXXXXX";
    if (!::mkdtemp(dir.data()))
        return refuse(std::string("cannot make a folder in /tmp: ") + std::strerror(errno));
    int dir_fd = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    std::string path = dir + "/" + request->name;
    int status = 0;
    int fd = dir_fd < 0 ? -1
                        : ::openat(dir_fd, request->name.c_str(),
                                   O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    struct stat before {
    }, after{};
    if (fd < 0) {
        status = refuse("cannot create " + path + ": " + std::strerror(errno));
    } else if (!copy_to_eof(0, fd)) {
        status = refuse(std::string("receiving the file: ") + std::strerror(errno));
    } else if ((request->view_only && ::fchmod(fd, 0400) != 0) || ::fstat(fd, &before) != 0) {
        status = refuse(std::string("preparing the file: ") + std::strerror(errno));
    }
    if (fd >= 0) ::close(fd);
    if (status == 0) {
        auto handler = find_open_handler();
        if (!handler) {
            std::fprintf(stderr,
                         "qubes.OpenInVM: no handler to open files with (make ~/.config/aerie/open-handler "
                         "executable, or install xdg-open)\n");
        } else if (int rc = run_open_handler(*handler, path, &error); rc != 0) {
            std::fprintf(
                stderr, "qubes.OpenInVM: %s\n",
                rc < 0 ? error.c_str() : ("the handler exited with status " + std::to_string(rc)).c_str());
        }
        // Sent back only as a regular file still in its place (the handler
        // may have replaced it, never by a link to elsewhere).
        if (!request->view_only &&
            ::fstatat(dir_fd, request->name.c_str(), &after, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISREG(after.st_mode) && !same_file(before, after)) {
            int back = ::openat(dir_fd, request->name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            if (back < 0 || !copy_to_eof(back, 1))
                std::fprintf(stderr, "qubes.OpenInVM: sending the file back: %s\n", std::strerror(errno));
            if (back >= 0) ::close(back);
        }
    }
    ::close(1);
    if (dir_fd >= 0) {
        ::unlinkat(dir_fd, request->name.c_str(), 0);
        ::close(dir_fd);
    }
    if (::rmdir(dir.c_str()) != 0)
        std::fprintf(stderr, "qubes.OpenInVM: cannot remove %s: %s\n", dir.c_str(), std::strerror(errno));
    return status;
}
