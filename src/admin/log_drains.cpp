#include "admin/log_drains.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "admin/reaper.hpp"
#include "base/detached_spawn.hpp"
#include "base/fd_passing.hpp"
#include "base/log_service.hpp"

extern char** environ;

namespace aerie::admin {

namespace {
constexpr size_t kMaxDrainedKept = 4096;
}

LogDrains::LogDrains(asio::io_context& io, std::filesystem::path program, std::filesystem::path log_dir)
    : io_(io), program_(std::move(program)), log_dir_(std::move(log_dir)), control_(io) {}

LogDrains::~LogDrains() {
    asio::error_code ignored;
    control_.close(ignored);  // the service drains what it has, then ends
}

void LogDrains::start() {
    int pair[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0)
        throw std::runtime_error(std::string("socketpair: ") + std::strerror(errno));
    base::UniqueFd ours(pair[0]), theirs(pair[1]);
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) env.emplace_back(*e);
    base::DetachedChild child =
        base::spawn_detached({program_.string(), log_dir_.string()}, env, -1, {theirs.get()});
    reap_when_ended(io_, std::move(child));
    control_.assign(ours.release());
    read_replies();
}

bool LogDrains::send(uint64_t id, const std::string& file_name, const base::LogCap& cap, int fd) {
    base::LogRequest req;
    req.id = id;
    req.max_bytes = cap.max_bytes;
    req.bytes_per_second = cap.bytes_per_second;
    req.burst_bytes = cap.burst_bytes;
    std::memcpy(req.name, file_name.data(), file_name.size());
    ssize_t n;
    while ((n = base::send_with_fd(control_.native_handle(), &req, sizeof req, fd, 0)) < 0 && errno == EINTR) {
    }
    return n == static_cast<ssize_t>(sizeof req);
}

LogDrains::Pipe LogDrains::open(const std::string& file_name, const base::LogCap& cap) {
    if (file_name.empty() || file_name.size() > base::BoundedLogFile::kMaxName)
        throw std::runtime_error("bad log file name: " + file_name);
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    base::UniqueFd read_end(p[0]);
    Pipe out;
    out.input.reset(p[1]);
    out.id = next_id_++;
    // A service that ended (killed, or a failure of its own) is started anew, once.
    for (int attempt = 0; attempt < 2; ++attempt) {
        if (!control_.is_open()) start();
        if (send(out.id, file_name, cap, read_end.get())) {
            open_.insert(out.id);
            return out;
        }
        ended();
    }
    throw std::runtime_error("the log service " + program_.string() + " does not answer");
}

void LogDrains::read_replies() {
    control_.async_wait(asio::posix::stream_descriptor::wait_read, [this](const asio::error_code& ec) {
        if (ec == asio::error::operation_aborted) return;
        for (;;) {
            uint64_t id = 0;
            ssize_t n = ::recv(control_.native_handle(), &id, sizeof id, MSG_DONTWAIT);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
            if (n <= 0 || ec) return ended();
            if (n == static_cast<ssize_t>(sizeof id)) drained(id);
        }
        read_replies();
    });
}

// The service is gone: what it held is as drained as it will be.
void LogDrains::ended() {
    asio::error_code ignored;
    control_.close(ignored);
    std::set<uint64_t> open = std::move(open_);
    open_.clear();
    for (uint64_t id : open) drained(id);
}

void LogDrains::drained(uint64_t id) {
    open_.erase(id);
    auto it = waiters_.find(id);
    if (it != waiters_.end()) {
        auto done = std::move(it->second);
        waiters_.erase(it);
        return done();
    }
    drained_.insert(id);
    while (drained_.size() > kMaxDrainedKept) drained_.erase(drained_.begin());
}

void LogDrains::when_drained(uint64_t id, std::chrono::milliseconds limit, std::function<void()> done) {
    if (drained_.erase(id) || !open_.count(id)) return asio::post(io_, std::move(done));
    auto once = std::make_shared<std::function<void()>>(std::move(done));
    auto timer = std::make_shared<asio::steady_timer>(io_, limit);
    waiters_[id] = [once, timer] {
        timer->cancel();
        if (auto f = std::exchange(*once, nullptr)) f();
    };
    timer->async_wait([this, id, once](const asio::error_code& ec) {
        if (ec) return;
        waiters_.erase(id);
        if (auto f = std::exchange(*once, nullptr)) f();
    });
}

}  // namespace aerie::admin
