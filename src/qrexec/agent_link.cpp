#include "qrexec/agent_link.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <cstring>

#include "base/safe_dir.hpp"
#include "qrexec/vchan.hpp"

namespace aerie::qrexec {

UniqueFd connect_beneath(int dirfd, const std::string& name, std::string* why) {
    UniqueFd target;
    struct stat dir {}, st {};
    try {
        dir = base::stat_fd(dirfd, "the vchan folder");
        target = base::open_beneath(dirfd, name, O_PATH, base::FileKind::Socket, "the vchan folder");
        st = base::stat_fd(target.get(), name);
    } catch (const base::UnsafePathError& e) {
        *why = e.error() == ENOENT ? std::string("absent") : std::string(e.what());
        return {};
    }
    // A hard link to a socket someone else made (another qube's, the host's)
    // passes the resolver: only a socket of the folder's owner is the agent's.
    if (st.st_uid != dir.st_uid) {
        *why = "the vchan folder: " + name + ": not owned by the folder's owner (refused)";
        return {};
    }
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::string path = "/proc/self/fd/" + std::to_string(target.get());
    std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
    UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (!fd) {
        *why = std::string("socket: ") + std::strerror(errno);
        return {};
    }
    set_bulk_buffers(fd.get());
    if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        int err = errno;
        *why = err == ECONNREFUSED ? std::string("refused")
               : err == EAGAIN     ? std::string("busy")
                                   : std::string("connect: ") + std::strerror(err);
        return {};
    }
    int flags = ::fcntl(fd.get(), F_GETFL);
    if (flags >= 0) ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
    return fd;
}

}  // namespace aerie::qrexec
