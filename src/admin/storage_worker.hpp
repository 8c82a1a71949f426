// Storage work (a qube's volumes mounted, unmounted, copied) off aeried's
// event loop: a few threads run it, and what follows it is posted back to
// the loop, the only place the model is touched. Work for one qube runs in
// the order it was queued, one job at a time; different qubes' work runs at
// once (a qube whose start waits for its last revision does not hold up
// another's).
#pragma once

#include <asio.hpp>
#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace aerie::admin {

class StorageWorker {
public:
    StorageWorker(asio::io_context& io, int threads = 2);
    // Waits for the queued work to finish (its continuations are posted to
    // a loop that may no longer run them).
    ~StorageWorker();
    StorageWorker(const StorageWorker&) = delete;
    StorageWorker& operator=(const StorageWorker&) = delete;

    // Runs `work` for `key` (a qube's uuid) on a worker thread, after the
    // work queued before for that key; then `then` on the loop with the
    // exception `work` threw (null if none).
    void run(const std::string& key, std::function<void()> work, std::function<void(std::exception_ptr)> then);

private:
    struct Job {
        std::function<void()> work;
        std::function<void(std::exception_ptr)> then;
    };
    void loop();

    asio::io_context& io_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::map<std::string, std::deque<Job>> queues_;
    std::set<std::string> busy_;  // keys a thread is on
    bool stopping_ = false;
    std::vector<std::thread> threads_;
};

}  // namespace aerie::admin
