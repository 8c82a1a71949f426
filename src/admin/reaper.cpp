#include "admin/reaper.hpp"

#include <sys/wait.h>

#include <memory>

namespace aerie::admin {

void reap_when_ended(asio::io_context& io, base::DetachedChild child) {
    const pid_t pid = child.pid;
    if (!child.pidfd) {  // no pidfd (an old kernel): reaped once it has ended, at the latest by init after us
        ::waitpid(pid, nullptr, WNOHANG);
        return;
    }
    auto watch = std::make_shared<asio::posix::stream_descriptor>(io, child.pidfd.release());
    watch->async_wait(asio::posix::stream_descriptor::wait_read, [watch, pid](const asio::error_code&) {
        ::waitpid(pid, nullptr, WNOHANG);
    });
}

}  // namespace aerie::admin
