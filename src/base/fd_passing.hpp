// Sending and receiving descriptors with the bytes of a Unix socket
// (SCM_RIGHTS).
#pragma once

#include <sys/types.h>

#include <span>
#include <vector>

#include "base/unique_fd.hpp"

namespace aerie::base {

// One recvmsg(): up to len bytes, and the descriptors that came with them
// (SCM_RIGHTS, close-on-exec) appended to *keep, or closed when keep is null.
ssize_t recv_with_fds(int fd, void* buf, size_t len, int flags, std::vector<UniqueFd>* keep);

// One sendmsg() of up to len bytes, with fd_to_pass attached (SCM_RIGHTS)
// when it is >= 0. flags are added to MSG_NOSIGNAL.
ssize_t send_with_fd(int fd, const void* data, size_t len, int fd_to_pass, int flags);
// The same with every descriptor of `fds` attached (at most 8).
ssize_t send_with_fds(int fd, const void* data, size_t len, std::span<const int> fds, int flags);

}  // namespace aerie::base
