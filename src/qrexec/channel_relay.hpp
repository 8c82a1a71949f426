// Joins two stream sockets byte for byte, each direction on its own: the
// agent uses it when its daemon handed a data channel over as a descriptor
// but the local caller is a Qubes qrexec-client-vm, which serves the channel
// in the socket directory instead. An EOF is passed on as shutdown(SHUT_WR);
// both sockets close once both directions ended.
#pragma once

#include <asio.hpp>

#include "qrexec/unique_fd.hpp"

namespace aerie::qrexec {

void start_channel_relay(asio::io_context& io, UniqueFd a, UniqueFd b);

}  // namespace aerie::qrexec
