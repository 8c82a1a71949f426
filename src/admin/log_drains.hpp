// aeried's side of the log service (base/log_service.hpp): one aerie-logd
// drains the pipes of every qube's console and qrexec daemon, so a start
// spends no process on its logs. Started at the first pipe, and again if it
// ended.
#pragma once

#include <asio.hpp>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <string>

#include "base/bounded_log.hpp"
#include "base/unique_fd.hpp"

namespace aerie::admin {

class LogDrains {
public:
    // `program`: aerie-logd; `log_dir`: the host's log folder it writes in.
    LogDrains(asio::io_context& io, std::filesystem::path program, std::filesystem::path log_dir);
    ~LogDrains();
    LogDrains(const LogDrains&) = delete;
    LogDrains& operator=(const LogDrains&) = delete;

    struct Pipe {
        base::UniqueFd input;  // the write end (close-on-exec): give it to the writer
        uint64_t id = 0;       // for when_drained
    };

    // A pipe copied into `file_name` (in the log folder) within `cap`. Throws
    // std::runtime_error when the service cannot be reached or started.
    Pipe open(const std::string& file_name, const base::LogCap& cap);

    // `done` (once, from the loop) when all written to pipe `id` is in its
    // file, or after `limit`.
    void when_drained(uint64_t id, std::chrono::milliseconds limit, std::function<void()> done);

private:
    void start();
    bool send(uint64_t id, const std::string& file_name, const base::LogCap& cap, int fd);
    void read_replies();
    void ended();
    void drained(uint64_t id);

    asio::io_context& io_;
    std::filesystem::path program_, log_dir_;
    asio::posix::stream_descriptor control_;
    uint64_t next_id_ = 1;
    std::set<uint64_t> open_;  // given to the running service, not yet reported drained
    std::map<uint64_t, std::function<void()>> waiters_;
    std::set<uint64_t> drained_;  // reported before anyone asked (bounded)
};

}  // namespace aerie::admin
