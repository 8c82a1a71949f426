// Children aeried starts detached (qrexec daemons, the log service) are still
// its children while it runs: each is reaped once it ends, whoever watches it
// otherwise.
#pragma once

#include <asio.hpp>

#include "base/detached_spawn.hpp"

namespace aerie::admin {

// Takes the child's pidfd; waits on it in `io` and reaps the child.
void reap_when_ended(asio::io_context& io, base::DetachedChild child);

}  // namespace aerie::admin
