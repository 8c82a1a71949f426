// Reaps the child processes an event loop started, and tells each owner how
// its child ended (exit status, or 128 + signal). Only registered children
// are waited for, so other code may wait for its own.
#pragma once

#include <sys/types.h>

#include <asio.hpp>

#include <functional>
#include <map>

namespace aerie::qrexec {

class ChildReaper {
public:
    explicit ChildReaper(asio::io_context& io);
    void watch(pid_t pid, std::function<void(int exit_code)> on_exit);
    size_t watching() const { return children_.size(); }

private:
    void arm();
    void reap();

    asio::signal_set signals_;
    std::map<pid_t, std::function<void(int)>> children_;
};

}  // namespace aerie::qrexec
