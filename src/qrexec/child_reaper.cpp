#include "qrexec/child_reaper.hpp"

#include <sys/wait.h>

namespace aerie::qrexec {

ChildReaper::ChildReaper(asio::io_context& io) : signals_(io, SIGCHLD) { arm(); }

void ChildReaper::watch(pid_t pid, std::function<void(int)> on_exit) {
    children_[pid] = std::move(on_exit);
    reap();  // it may have ended already
}

void ChildReaper::arm() {
    signals_.async_wait([this](const asio::error_code& ec, int) {
        if (ec) return;
        reap();
        arm();
    });
}

void ChildReaper::reap() {
    for (auto it = children_.begin(); it != children_.end();) {
        int status = 0;
        pid_t r = ::waitpid(it->first, &status, WNOHANG);
        if (r == it->first) {
            int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
            auto callback = std::move(it->second);
            it = children_.erase(it);
            callback(code);
        } else {
            ++it;
        }
    }
}

}  // namespace aerie::qrexec
