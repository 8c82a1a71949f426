// One process drains every log pipe of an aeried (the aerie-logd program):
// aeried hands it the read end of each pipe it gives a writer (a qube's
// console, a qrexec daemon's output) over a socket, with the capped file to
// copy it into. Starting a qube so costs no process of its own for its logs,
// and the logs go on while aeried restarts: the service ends once aeried is
// gone and the last of its pipes reached its end.
//
// The control socket is a SOCK_SEQPACKET pair. aeried sends a LogRequest with
// the pipe's read end (SCM_RIGHTS); the service answers with the request's id
// (a uint64_t) once everything written to that pipe is in its file.
#pragma once

#include <cstdint>

#include "base/bounded_log.hpp"

namespace aerie::base {

struct LogRequest {
    uint64_t id = 0;
    uint64_t max_bytes = 0;
    uint64_t bytes_per_second = 0;  // 0: no budget
    uint64_t burst_bytes = 0;
    char name[BoundedLogFile::kMaxName + 1] = {};  // a file name in the service's log folder
};

// Serves `control` (the service's end of the pair), writing into the folder
// `log_dir` (a descriptor), until `control` is closed and every pipe ended.
// Returns 0, or 1 on a failure of its own (reported on stderr).
int run_log_service(int control, int log_dir);

}  // namespace aerie::base
