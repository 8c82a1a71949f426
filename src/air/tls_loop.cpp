#include "air/tls_loop.hpp"

#include <sys/eventfd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "air/fd_message.hpp"

namespace aerie::air {

EventLoop::EventLoop()
    : epoll_(::epoll_create1(EPOLL_CLOEXEC)), wake_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (!epoll_ || !wake_) throw AirError(std::string("epoll: ") + std::strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = 0;  // token 0: the wake-up descriptor
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, wake_.get(), &ev);
}

EventLoop::Token EventLoop::add(int fd, uint32_t events, Handler handler) {
    Token token = next_token_++;
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = token;
    bool always = false;
    if (::epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, fd, &ev) != 0) {
        if (errno != EPERM) throw AirError(std::string("epoll_ctl: ") + std::strerror(errno));
        always = true;  // a regular file or the like: never blocks
        always_ready_.push_back(token);
    }
    watches_.emplace(token, Watch{fd, events, always, std::move(handler)});
    return token;
}

void EventLoop::modify(Token token, uint32_t events) {
    auto it = watches_.find(token);
    if (it == watches_.end() || it->second.dead || it->second.events == events) return;
    it->second.events = events;
    if (it->second.always_ready) return;
    epoll_event ev{};
    ev.events = events;
    ev.data.u64 = token;
    ::epoll_ctl(epoll_.get(), EPOLL_CTL_MOD, it->second.fd, &ev);
}

void EventLoop::remove(Token token) {
    auto it = watches_.find(token);
    if (it == watches_.end() || it->second.dead) return;
    if (it->second.always_ready)
        std::erase(always_ready_, token);
    else
        ::epoll_ctl(epoll_.get(), EPOLL_CTL_DEL, it->second.fd, nullptr);
    // The handler may be the one running: it is destroyed once it returned.
    it->second.dead = true;
    it->second.events = 0;
    dead_.push_back(token);
}

void EventLoop::bury_dead() {
    for (Token t : dead_) watches_.erase(t);
    dead_.clear();
}

void EventLoop::post(std::function<void()> task) { posted_.push_back(std::move(task)); }

void EventLoop::post_from_thread(std::function<void()> task) {
    {
        std::lock_guard lock(foreign_mutex_);
        foreign_.push_back(std::move(task));
    }
    uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_.get(), &one, sizeof one);
}

EventLoop::Token EventLoop::after(std::chrono::milliseconds delay, std::function<void()> task) {
    Token token = next_token_++;
    timer_order_.emplace(Clock::now() + delay, token);
    timers_.emplace(token, std::move(task));
    return token;
}

void EventLoop::cancel(Token timer) { timers_.erase(timer); }

void EventLoop::run_posted() {
    while (!posted_.empty()) {
        auto tasks = std::move(posted_);
        posted_.clear();
        for (auto& task : tasks) task();
    }
}

int EventLoop::next_timeout_ms() {
    if (!posted_.empty()) return 0;
    for (Token t : always_ready_)
        if (watches_.at(t).events & (EPOLLIN | EPOLLOUT)) return 0;
    while (!timer_order_.empty() && !timers_.count(timer_order_.begin()->second))
        timer_order_.erase(timer_order_.begin());
    if (timer_order_.empty()) return -1;
    auto wait = std::chrono::ceil<std::chrono::milliseconds>(timer_order_.begin()->first - Clock::now());
    return static_cast<int>(std::clamp<int64_t>(wait.count(), 0, 60000));
}

void EventLoop::run_due_timers() {
    auto now = Clock::now();
    while (!timer_order_.empty() && timer_order_.begin()->first <= now) {
        Token token = timer_order_.begin()->second;
        timer_order_.erase(timer_order_.begin());
        auto it = timers_.find(token);
        if (it == timers_.end()) continue;
        auto task = std::move(it->second);
        timers_.erase(it);
        task();
        run_posted();
    }
}

void EventLoop::run() {
    constexpr int kMaxEvents = 64;
    epoll_event events[kMaxEvents];
    while (!stopped_) {
        int n = ::epoll_wait(epoll_.get(), events, kMaxEvents, next_timeout_ms());
        if (n < 0 && errno != EINTR) throw AirError(std::string("epoll_wait: ") + std::strerror(errno));
        for (int i = 0; i < n; ++i) {
            Token token = events[i].data.u64;
            if (token == 0) {
                uint64_t count;
                [[maybe_unused]] ssize_t r = ::read(wake_.get(), &count, sizeof count);
                std::vector<std::function<void()>> tasks;
                {
                    std::lock_guard lock(foreign_mutex_);
                    tasks.swap(foreign_);
                }
                for (auto& task : tasks) post(std::move(task));
                continue;
            }
            auto it = watches_.find(token);  // gone if an earlier handler removed it
            if (it == watches_.end() || it->second.dead) continue;
            it->second.handler(events[i].events);
            run_posted();
            bury_dead();
        }
        for (size_t i = 0; i < always_ready_.size(); ++i) {
            auto it = watches_.find(always_ready_[i]);
            if (it == watches_.end() || it->second.dead) continue;
            uint32_t ready = it->second.events & (EPOLLIN | EPOLLOUT);
            if (ready) it->second.handler(ready);
            run_posted();
            bury_dead();
        }
        run_posted();
        run_due_timers();
        bury_dead();
    }
}

}  // namespace aerie::air
