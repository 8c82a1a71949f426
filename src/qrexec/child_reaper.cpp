#include "qrexec/child_reaper.hpp"

#include <sys/wait.h>

#include <utility>
#include <vector>

namespace aerie::qrexec {

ChildReaper::ChildReaper(asio::io_context& io) : signals_(io, SIGCHLD) { arm(); }

void ChildReaper::watch(pid_t pid, std::function<void(int)> on_exit) {
    children_[pid] = std::move(on_exit);
    // It may have ended already (its SIGCHLD came before it was watched). The
    // walk is posted: a callback never runs inside watch(), whose caller may
    // not have finished the state the callback reads.
    asio::post(signals_.get_executor(), [this] { reap(); });
}

void ChildReaper::arm() {
    signals_.async_wait([this](const asio::error_code& ec, int) {
        if (ec) return;
        reap();
        arm();
    });
}

void ChildReaper::reap() {
    // Callbacks run after the walk: one may watch a new child (and so reap
    // again), which must not meet this walk's iterator.
    std::vector<std::pair<std::function<void(int)>, int>> ended;
    for (auto it = children_.begin(); it != children_.end();) {
        int status = 0;
        pid_t r = ::waitpid(it->first, &status, WNOHANG);
        if (r == it->first) {
            int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            ended.emplace_back(std::move(it->second), code);
            it = children_.erase(it);
        } else {
            ++it;
        }
    }
    for (auto& [callback, code] : ended) callback(code);
}

}  // namespace aerie::qrexec
