// How the host's qrexec daemon reaches its qube's agent. The agent listens
// on vchan.<domid>.0.512.sock in the qube's vchan folder, which the qube's
// root owns and may fill with anything: a symlink to another qube's socket,
// to a host socket only root may use, a hard link, a file. So the daemon
// never connects to a name there. It opens the folder once (its own name
// lies in host-owned folders the qube cannot change), resolves the socket
// beneath that descriptor with the safe resolver (no symlinks, magic links
// or mount crossings; must be a socket owned by the folder's owner, i.e. a
// socket the qube itself made) and connects through /proc/self/fd/N of that
// O_PATH descriptor, which names exactly the inode that was checked.
#pragma once

#include <chrono>
#include <string>

#include "qrexec/unique_fd.hpp"

namespace aerie::qrexec {

// One non-blocking connect attempt to the socket `name` beneath the vchan
// folder `dirfd`. Returns a connected stream socket (close-on-exec,
// blocking), or an invalid fd with *why set ("absent", "refused", or what
// the resolver refused: "is or passes through a symbolic link (refused)").
UniqueFd connect_beneath(int dirfd, const std::string& name, std::string* why);

// Waits between attempts: `first`, then twice the last, at most `cap`.
class Backoff {
public:
    Backoff(std::chrono::milliseconds first, std::chrono::milliseconds cap) : first_(first), cap_(cap) {}
    std::chrono::milliseconds next() {
        auto d = next_.count() == 0 ? first_ : next_;
        next_ = std::min(d * 2, cap_);
        return std::min(d, cap_);
    }
    void reset() { next_ = std::chrono::milliseconds(0); }
    void set_cap(std::chrono::milliseconds cap) { cap_ = cap; }

private:
    std::chrono::milliseconds first_, cap_, next_{0};
};

}  // namespace aerie::qrexec
