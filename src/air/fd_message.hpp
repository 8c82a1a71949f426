// One-line messages with at most one file descriptor attached (SCM_RIGHTS),
// as the uplink between a relay and aeried speaks them (docs/air.md).
#pragma once

#include <stdexcept>
#include <string>
#include <span>
#include <string_view>

#include "qrexec/unique_fd.hpp"

namespace aerie::air {

struct AirError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

inline constexpr size_t kMaxMessage = 512;

// Sends `line` (must end in '\n', at most kMaxMessage bytes) in one sendmsg,
// with `fd` attached when >= 0. Throws AirError.
void send_message(int sock, std::string_view line, int fd = -1);
// The same with several descriptors attached (at most 4).
void send_message(int sock, std::string_view line, std::span<const int> fds);

struct Message {
    std::string line;        // without the '\n'
    qrexec::UniqueFd fd;     // invalid when none came
};

// Receives one message (blocking). Throws AirError on EOF, a message longer
// than kMaxMessage or not ending in '\n', or more than one descriptor
// (extra ones are closed).
Message receive_message(int sock);

}  // namespace aerie::air
