#include "admin/storage_worker.hpp"

namespace aerie::admin {

StorageWorker::StorageWorker(asio::io_context& io, int threads) : io_(io) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { loop(); });
}

StorageWorker::~StorageWorker() {
    {
        std::lock_guard lock(mutex_);
        stopping_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
}

void StorageWorker::run(const std::string& key, std::function<void()> work,
                        std::function<void(std::exception_ptr)> then) {
    {
        std::lock_guard lock(mutex_);
        queues_[key].push_back(Job{std::move(work), std::move(then)});
    }
    cv_.notify_one();
}

void StorageWorker::loop() {
    std::unique_lock lock(mutex_);
    for (;;) {
        // A key with work that no other thread is on.
        auto ready = queues_.end();
        for (auto it = queues_.begin(); it != queues_.end(); ++it)
            if (!busy_.count(it->first)) {
                ready = it;
                break;
            }
        if (ready == queues_.end()) {
            if (stopping_ && queues_.empty()) return;
            cv_.wait(lock);
            continue;
        }
        const std::string key = ready->first;
        Job job = std::move(ready->second.front());
        ready->second.pop_front();
        if (ready->second.empty()) queues_.erase(ready);
        busy_.insert(key);
        lock.unlock();
        std::exception_ptr error;
        try {
            job.work();
        } catch (...) {
            error = std::current_exception();
        }
        asio::post(io_, [then = std::move(job.then), error] { then(error); });
        lock.lock();
        busy_.erase(key);
        cv_.notify_all();
    }
}

}  // namespace aerie::admin
