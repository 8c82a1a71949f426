// The serve daemon's event loop: one thread, epoll (level-triggered), timers,
// and tasks posted from the loop itself or from helper threads. Descriptors
// epoll cannot watch (regular files, /dev/null) count as always ready.
#pragma once

#include <sys/epoll.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "qrexec/unique_fd.hpp"

namespace aerie::air {

class EventLoop {
public:
    using Handler = std::function<void(uint32_t events)>;
    using Token = uint64_t;  // never reused, so a stale token is harmless
    using Clock = std::chrono::steady_clock;

    EventLoop();
    EventLoop(const EventLoop&) = delete;
    EventLoop& operator=(const EventLoop&) = delete;

    // Watches `fd` for `events` (EPOLLIN / EPOLLOUT; 0 watches nothing yet).
    // The handler may add, modify and remove anything, itself included.
    Token add(int fd, uint32_t events, Handler handler);
    void modify(Token token, uint32_t events);
    void remove(Token token);  // before the descriptor is closed

    // Runs `task` on the loop after the current handler.
    void post(std::function<void()> task);
    // The same, from any thread.
    void post_from_thread(std::function<void()> task);

    Token after(std::chrono::milliseconds delay, std::function<void()> task);
    void cancel(Token timer);

    void run();  // until stop()
    void stop() { stopped_ = true; }

private:
    struct Watch {
        int fd;
        uint32_t events;
        bool always_ready;  // not pollable
        Handler handler;
        bool dead = false;  // removed; erased once no handler runs
    };
    void bury_dead();
    void run_posted();
    int next_timeout_ms();
    void run_due_timers();

    qrexec::UniqueFd epoll_, wake_;
    Token next_token_ = 1;
    std::unordered_map<Token, Watch> watches_;
    std::vector<Token> always_ready_;
    std::vector<Token> dead_;
    std::vector<std::function<void()>> posted_;
    std::mutex foreign_mutex_;
    std::vector<std::function<void()>> foreign_;
    std::multimap<Clock::time_point, Token> timer_order_;
    std::unordered_map<Token, std::function<void()>> timers_;
    bool stopped_ = false;
};

}  // namespace aerie::air
