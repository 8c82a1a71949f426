// The vchan-over-Unix-socket transport (Qubes' libvchan-socket): a channel
// between server domain S and client domain C on port P is the stream socket
// $VCHAN_SOCKET_DIR/vchan.S.C.P.sock. Aerie adds one thing: a channel may
// instead be handed over as a ready file descriptor (SCM_RIGHTS) by the admin
// side, so two qubes never share a directory where one could tamper with the
// other's sockets.
#pragma once

#include <sys/socket.h>

#include <chrono>
#include <span>
#include <string>
#include <vector>

#include "qrexec/unique_fd.hpp"

namespace aerie::qrexec {

inline constexpr const char* kDefaultVchanDir = "/var/run/vchan";

// $VCHAN_SOCKET_DIR, or /var/run/vchan.
std::string vchan_socket_dir();
// $VCHAN_DOMAIN, or 0.
uint32_t vchan_local_domain();

std::string vchan_socket_path(const std::string& dir, uint32_t server_domain,
                              uint32_t client_domain, uint32_t port);

// Server side: unlinks a stale socket, binds and listens. Throws std::system_error.
UniqueFd vchan_listen(const std::string& path);

// Client side: connects, retrying every 100 ms while the socket is missing or
// refuses, until the deadline. Returns an invalid fd on timeout.
UniqueFd vchan_connect(const std::string& path, std::chrono::milliseconds timeout);

// A connected pair of stream sockets (close-on-exec): one end for each peer of
// a data channel the admin side hands over.
std::pair<UniqueFd, UniqueFd> channel_pair();

// One recvmsg(): up to len bytes, and the descriptors that came with them
// (SCM_RIGHTS, close-on-exec) appended to *keep, or closed when keep is null.
ssize_t recv_with_fds(int fd, void* buf, size_t len, int flags, std::vector<UniqueFd>* keep);

// One sendmsg() of up to len bytes, with fd_to_pass attached (SCM_RIGHTS)
// when it is >= 0. flags are added to MSG_NOSIGNAL.
ssize_t send_with_fd(int fd, const void* data, size_t len, int fd_to_pass, int flags);
// The same with every descriptor of `fds` attached (at most 8).
ssize_t send_with_fds(int fd, const void* data, size_t len, std::span<const int> fds, int flags);

// A descriptor that only says "Aerie": the read end of a fresh pipe
// (close-on-exec). Attached to a message, it tells an Aerie peer that data
// channels may be handed over as descriptors; a Qubes peer reading with
// read(2) never sees it (docs/qrexec-wire.md).
UniqueFd descriptor_marker();

// Raises a stream socket's kernel buffers for bulk transfer.
void set_bulk_buffers(int fd);

// Blocking helpers for simple tools (clients), all EINTR-safe.
bool write_all(int fd, const void* data, size_t len);
// Writes data with one file descriptor attached (SCM_RIGHTS); fd_to_pass < 0: none.
bool write_all_with_fd(int fd, const std::string& data, int fd_to_pass);
bool read_all(int fd, void* data, size_t len);
// Reads exactly len bytes; any file descriptors that arrive are appended to *fds.
bool read_all_fds(int fd, void* data, size_t len, std::vector<UniqueFd>* fds);

}  // namespace aerie::qrexec
