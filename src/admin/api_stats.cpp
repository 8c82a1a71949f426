// admin.vm.Stats: a stream of "vm-stats" events, as qubesd sends them: after
// connection-established, every stats_interval seconds one event per
// running qube (all of them for dom0 as the destination, else that qube's)
// with memory_kb, cpu_time (ms), cpu_usage_raw (% of one CPU since the last
// round) and cpu_usage (that over its vcpus). One timer serves every stream
// and stops when the last one is gone.
#include <fmt/format.h>

#include <cmath>

#include "admin/api_call.hpp"
#include "admin/lifecycle.hpp"

namespace aerie::admin {

void AdminApi::set_event_loop(asio::io_context& io) {
    io_ = &io;
    methods_["admin.vm.Stats"] = {&AdminApi::vm_stats, Payload::None, Arg::None};
}

std::string AdminApi::vm_stats(Call& call) {
    call.stream = true;
    call.hub = &stats_hub_;
    if (!stats_running_) {
        stats_running_ = true;
        // The first round right after the stream is set up.
        auto timer = std::make_shared<asio::steady_timer>(*io_);
        asio::post(*io_, [this, timer] { stats_round(timer); });
    }
    return encode_event("", "connection-established", {});
}

void AdminApi::stats_round(std::shared_ptr<asio::steady_timer> timer) {
    if (stats_hub_.subscribers() == 0 || !lifecycle_) {
        stats_running_ = false;
        stats_previous_.clear();
        return;
    }
    const auto now = std::chrono::steady_clock::now();
    std::map<std::string, StatsSample> current;
    for (const Qube* qube : model_.qubes_by_name()) {
        if (qube->is_remote() || (qube->power_state != "Running" && qube->power_state != "Paused")) continue;
        backend::QubeStats stats;
        try {
            stats = lifecycle_->stats(*qube);
        } catch (const std::exception&) {
            continue;  // gone meanwhile
        }
        StatsSample sample{now, stats.cpu_usec * 1000};
        long long usage_raw = 0;
        if (auto prev = stats_previous_.find(qube->uuid); prev != stats_previous_.end()) {
            double seconds = std::chrono::duration<double>(now - prev->second.when).count();
            if (seconds > 0 && sample.cpu_ns >= prev->second.cpu_ns)
                usage_raw = std::llround(double(sample.cpu_ns - prev->second.cpu_ns) / 1e9 * 100 / seconds);
        }
        long long vcpus = 1;
        if (auto n = parse_int(model_.value_text(qube, "vcpus")); n && *n > 1) vcpus = *n;
        current[qube->uuid] = sample;
        stats_hub_.publish(qube->name, "vm-stats",
                           {{"memory_kb", std::to_string(stats.memory_bytes / 1024)},
                            {"cpu_time", std::to_string(sample.cpu_ns / 1000000)},
                            {"cpu_usage", std::to_string(std::llround(double(usage_raw) / double(vcpus)))},
                            {"cpu_usage_raw", std::to_string(usage_raw)}});
    }
    stats_previous_ = std::move(current);
    long long interval = 3;
    if (auto n = parse_int(model_.value_text(nullptr, "stats_interval")); n && *n > 0)
        interval = std::min(*n, 3600LL);
    timer->expires_after(std::chrono::seconds(interval));
    timer->async_wait([this, timer](const std::error_code& ec) {
        if (!ec) stats_round(timer);
    });
}

}  // namespace aerie::admin
