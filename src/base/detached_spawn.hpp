// Starting a long-lived helper program (a qrexec daemon, the log service)
// from a threaded daemon: posix_spawn (no copy of the daemon's memory, so
// cheap where fork is not), in a session of its own, so that a restart of the
// daemon that started it does not take it down.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "base/unique_fd.hpp"

namespace aerie::base {

struct DetachedChild {
    pid_t pid = -1;
    UniqueFd pidfd;  // readable once it ended; the starter still reaps it (waitpid)
};

// Runs argv[0] with `env` (complete, "K=V"): stdin from /dev/null, stdout and
// stderr to `output` (ours when -1), the descriptors `pass` as 3, 4, ...; no
// other descriptor, default signal actions, nothing blocked. Throws
// std::runtime_error naming the program when it cannot be started.
DetachedChild spawn_detached(const std::vector<std::string>& argv, const std::vector<std::string>& env, int output,
                             const std::vector<int>& pass = {});

}  // namespace aerie::base
