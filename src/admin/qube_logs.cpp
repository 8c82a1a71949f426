#include "admin/qube_logs.hpp"

#include <memory>

namespace aerie::admin {

base::LogCap console_log_cap(uint64_t max_bytes) {
    base::LogCap cap;
    cap.max_bytes = max_bytes;
    cap.bytes_per_second = 1u << 20;
    cap.burst_bytes = 4u << 20;
    return cap;
}

void remove_qube_logs(const std::filesystem::path& log_dir, const std::string& name) {
    for (const char* kind : {"console", "qrexec-daemon", "air-serve"})
        base::remove_log(log_dir / (name + "." + kind + ".log"));
}

void when_drained(asio::io_context& io, base::UniqueFd drainer, std::chrono::milliseconds limit,
                  std::function<void()> done) {
    if (!drainer) return done();
    struct Wait {
        Wait(asio::io_context& io, int fd) : watch(io, fd), timer(io) {}
        asio::posix::stream_descriptor watch;
        asio::steady_timer timer;
        std::function<void()> done;
        void finish() {
            if (!done) return;
            auto d = std::move(done);
            done = nullptr;
            asio::error_code ec;
            timer.cancel();
            watch.cancel(ec);
            d();
        }
    };
    auto w = std::make_shared<Wait>(io, drainer.release());
    w->done = std::move(done);
    w->watch.async_wait(asio::posix::stream_descriptor::wait_read, [w](const asio::error_code&) { w->finish(); });
    w->timer.expires_after(limit);
    w->timer.async_wait([w](const asio::error_code& ec) {
        if (!ec) w->finish();
    });
}

}  // namespace aerie::admin
