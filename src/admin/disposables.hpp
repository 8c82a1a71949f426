// Disposables: qubes made for one job and removed with everything they wrote
// when they halt (auto_cleanup), and the preloading of them (Qubes R4.3): for
// each disposable template with preload-dispvm-max, a queue of disposables
// started ahead and paused, handed out at once on request and refilled after
// the preload-dispvm-delay. The rules are in dispvm_rules.hpp; this part
// acts: it makes and removes qubes (through the Registry), starts, pauses and
// kills them (through the Lifecycle), and reacts to events as qubesd's
// handlers do. Everything runs on the admin daemon's event loop.
//
// Crash safety: a preload's state is in the store (the template's
// preload-dispvm queue, the preload's -in-progress and -completed features),
// each change one transaction; recover() at daemon start drops what a crash
// interrupted and refills.
#pragma once

#include <asio.hpp>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>

#include "admin/api_error.hpp"
#include "admin/registry.hpp"

namespace aerie::admin {

class Lifecycle;

struct DisposablesConfig {
    std::filesystem::path meminfo = "/proc/meminfo";  // MemAvailable: what preloading may use
    std::filesystem::path bin_dir;                    // qrexec-client, for qubes.WaitForRunningSystem
    std::filesystem::path qrexec_socket_dir;          // the qrexec daemons' sockets
};

class Disposables {
public:
    // The disposable's name, or why there is none.
    using Done = std::function<void(std::optional<ApiError>, const std::string& name)>;

    Disposables(asio::io_context& io, Registry& registry, EventHub& events, Lifecycle& lifecycle,
                DisposablesConfig config);
    ~Disposables();

    // admin.vm.CreateDisposable: a preload of `tpl` (unpaused, running) when
    // one is queued and up to date, else a new disposable (not started). It
    // gets the tags created-by-CREATOR and disp-created-by-CREATOR.
    void create(const std::string& tpl, const std::string& creator, Done done);
    // admin.vm.CreateDisposable+preload and other reasons to fill the queue
    // (domain-preload-dispvm-start). An explicit request also clears a
    // previous failure of this template.
    void start_preloading(const std::string& tpl, const std::string& reason, bool explicit_request = true);
    // At daemon start, after the running qubes were adopted.
    void recover();

private:
    struct Waiter;
    void on_event(const std::string& subject, const std::string& event, const EventHub::Kwargs& kwargs);
    void fill(const std::string& tpl, bool explicit_request);
    void preload_one(Qube& tpl);
    void on_preload_started(const std::string& name, std::optional<ApiError> error);
    void wait_running_system(const std::string& name);
    void preload_ready(const std::string& name);
    void preload_failed(const std::string& name, const std::string& why);
    void hand_over(Qube& disp, const std::string& creator, Done done, std::vector<FeatureChange> changes = {});
    void use_preload(Qube& disp, bool requested, std::vector<FeatureChange> changes = {},
                     const std::string& creator = {});
    void fresh(Qube& tpl, const std::string& creator, Done done);
    Qube make_disposable(const Qube& tpl, bool preload);
    void trim(Qube& tpl, long long keep, const std::string& reason);
    void refresh_outdated(const std::string& tpl, const std::string& reason);
    std::string outdated_reason(const Qube& disp, const Qube& tpl) const;
    void remove_from_queue(Qube& tpl, const std::vector<std::string>& names, std::vector<FeatureChange>& changes);
    void schedule_refill(const std::string& tpl);
    void after(std::chrono::milliseconds delay, const std::string& key, std::function<void()> work);
    void cleanup(const std::string& name);
    void remove_if_halted(const std::string& name);
    void log(const std::string& line) { registry_.log(line); }

    asio::io_context& io_;
    Registry& registry_;
    Model& model_;
    EventHub& events_;
    Lifecycle& lifecycle_;
    DisposablesConfig config_;
    std::mt19937 random_;
    std::map<std::string, std::unique_ptr<Waiter>> waiters_;  // taken preloads still starting
    std::set<std::string> failed_;                            // templates whose last preload failed
    std::map<std::string, std::unique_ptr<asio::steady_timer>> timers_;  // refills, debounced refreshes
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace aerie::admin
