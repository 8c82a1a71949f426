// The host's log files of a qube: <log dir>/<name>.<kind>.log (console,
// qrexec-daemon, air-serve), each capped with one rotated copy (<file>.1) and
// copied from a pipe: by the log service (base/log_service.hpp, aerie-logd)
// for the console and the qrexec daemon, by a drainer of its own for the
// air-serve log (base/bounded_log.hpp). Neither a qube nor a daemon it talks
// to holds the file itself. They outlive a run (for the user to read after a
// crash) and go with the qube (admin.vm.Remove, a disposable's cleanup).
#pragma once

#include <asio.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "base/bounded_log.hpp"

namespace aerie::admin {

inline constexpr uint64_t kQubeLogMaxBytes = 1u << 20;

// The console's cap: the size, and a byte budget so that however fast a qube
// writes, its drainer does a bounded amount of work (the qube then waits on a
// full pipe, which costs only the qube).
base::LogCap console_log_cap(uint64_t max_bytes);

// Deletes every log of the qube `name` and their rotated copies.
void remove_qube_logs(const std::filesystem::path& log_dir, const std::string& name);


}  // namespace aerie::admin
