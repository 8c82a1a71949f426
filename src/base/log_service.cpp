#include "base/log_service.hpp"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <exception>
#include <vector>

#include "base/fd_passing.hpp"

namespace aerie::base {

namespace {

constexpr size_t kChunk = 16384;

uint64_t now_ns() {
    timespec ts{};
    ::clock_gettime(CLOCK_MONOTONIC, &ts);
    return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

// One pipe being copied into its file, within its byte budget.
struct Stream {
    uint64_t id = 0;
    UniqueFd pipe;
    std::unique_ptr<BoundedLogFile> log;
    uint64_t bytes_per_second = 0;
    uint64_t burst = 0;
    uint64_t tokens = 0;
    uint64_t refilled_ns = 0;
    uint64_t paused_until_ns = 0;  // 0: watched

    void refill(uint64_t now) {
        uint64_t earned = (now - refilled_ns) * bytes_per_second / 1000000000ull;
        if (earned > 0) {
            tokens = std::min(burst, tokens + earned);
            refilled_ns = now;
        }
    }
};

class Service {
public:
    Service(int control, int log_dir) : control_(control), log_dir_(log_dir) {}

    int run() {
        epoll_.reset(::epoll_create1(EPOLL_CLOEXEC));
        if (!epoll_ || !watch(control_)) return fail("epoll", errno);
        while (control_open_ || !streams_.empty()) {
            epoll_event events[64];
            int n = ::epoll_wait(epoll_.get(), events, 64, timeout_ms());
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) return fail("epoll_wait", errno);
            for (int i = 0; i < n; ++i) {
                int fd = events[i].data.fd;
                if (fd == control_)
                    take_request();
                else
                    drain(fd);
            }
            resume_due();
        }
        return 0;
    }

private:
    static int fail(const char* what, int err) {
        std::fprintf(stderr, "aerie-logd: %s: %s\n", what, std::strerror(err));
        return 1;
    }

    bool watch(int fd) {
        epoll_event ev{};
        ev.events = EPOLLIN;
        ev.data.fd = fd;
        return ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) == 0;
    }

    void unwatch(int fd) { ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, fd, nullptr); }

    void reply(uint64_t id) {
        if (control_open_) (void)!::send(control_, &id, sizeof id, MSG_NOSIGNAL | MSG_DONTWAIT);
    }

    void take_request() {
        LogRequest req;
        std::vector<UniqueFd> fds;
        ssize_t n = recv_with_fds(control_, &req, sizeof req, 0, &fds);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
        if (n <= 0) {  // aeried is gone: the pipes it gave are drained to their end
            unwatch(control_);
            control_open_ = false;
            return;
        }
        if (n != static_cast<ssize_t>(sizeof req) || fds.size() != 1) {
            std::fprintf(stderr, "aerie-logd: a malformed request (%zd bytes, %zu descriptors) refused\n", n,
                         fds.size());
            fds.clear();  // closed before the answer: its writer sees EPIPE from then on
            if (n >= static_cast<ssize_t>(sizeof req.id)) reply(req.id);
            return;
        }
        UniqueFd pipe = std::move(fds.front());
        req.name[sizeof req.name - 1] = '\0';
        auto s = std::make_unique<Stream>();
        s->id = req.id;
        try {
            s->log = std::make_unique<BoundedLogFile>(log_dir_, req.name, req.max_bytes);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "aerie-logd: %s\n", e.what());
            pipe.reset();  // the writer gets EPIPE: nothing is kept of it
            reply(req.id);
            return;
        }
        s->bytes_per_second = req.bytes_per_second;
        s->burst = std::max<uint64_t>(req.burst_bytes, kChunk);
        s->tokens = s->burst;
        s->refilled_ns = now_ns();
        s->pipe = std::move(pipe);
        ::fcntl(s->pipe.get(), F_SETFL, ::fcntl(s->pipe.get(), F_GETFL) | O_NONBLOCK);
        int fd = s->pipe.get();
        if (!watch(fd)) {
            s->pipe.reset();
            reply(req.id);
            return;
        }
        streams_[fd] = std::move(s);
    }

    void drain(int fd) {
        auto it = streams_.find(fd);
        if (it == streams_.end()) return;
        Stream& s = *it->second;
        size_t want = kChunk;
        if (s.bytes_per_second > 0) {
            uint64_t now = now_ns();
            s.refill(now);
            if (s.tokens < kChunk) {
                // Past its budget: not read until a whole chunk is earned; the
                // writer meanwhile fills its pipe and waits.
                s.paused_until_ns = now + (kChunk - s.tokens) * 1000000000ull / s.bytes_per_second + 1;
                unwatch(fd);
                return;
            }
        }
        char buf[kChunk];
        ssize_t n = ::read(fd, buf, want);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) return;
        if (n <= 0) {  // every writer closed it: all it carried is in the file
            uint64_t id = s.id;
            unwatch(fd);
            streams_.erase(it);
            reply(id);
            return;
        }
        if (s.bytes_per_second > 0) s.tokens -= std::min<uint64_t>(s.tokens, static_cast<uint64_t>(n));
        s.log->write(buf, static_cast<size_t>(n));  // once the log is gone: read on to the end, write nothing
    }

    int timeout_ms() const {
        uint64_t next = 0;
        for (const auto& [fd, s] : streams_)
            if (s->paused_until_ns && (!next || s->paused_until_ns < next)) next = s->paused_until_ns;
        if (!next) return -1;
        uint64_t now = now_ns();
        return next <= now ? 0 : static_cast<int>(std::min<uint64_t>((next - now) / 1000000 + 1, 1000));
    }

    void resume_due() {
        uint64_t now = now_ns();
        for (auto& [fd, s] : streams_)
            if (s->paused_until_ns && s->paused_until_ns <= now) {
                s->paused_until_ns = 0;
                watch(fd);
            }
    }

    int control_;
    int log_dir_;
    bool control_open_ = true;
    UniqueFd epoll_;
    std::map<int, std::unique_ptr<Stream>> streams_;
};

}  // namespace

int run_log_service(int control, int log_dir) { return Service(control, log_dir).run(); }

}  // namespace aerie::base
