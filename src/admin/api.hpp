// The Admin API: turns a parsed request into a change of the model (stored
// first, durable before the reply), an answer, events, or a refusal, with
// qubesd's method names, argument and payload rules and exception names.
#pragma once

#include <asio.hpp>
#include <chrono>
#include <functional>
#include <memory>
#include <map>
#include <string>
#include <vector>

#include "admin/admin_policy.hpp"
#include "admin/model.hpp"
#include "admin/registry.hpp"
#include "admin/server.hpp"
#include "admin/store.hpp"
#include "admin/wire.hpp"
#include "base/log_text.hpp"

namespace aerie::admin {

class Lifecycle;
class Disposables;
}  // namespace aerie::admin
namespace aerie::storage {
class FilePool;
}
namespace aerie::admin {

class AdminApi {
public:
    AdminApi(Model& model, Store& store, EventHub& events);
    // Enables admin.vm.{Start,Shutdown,Kill,Pause,Unpause,CurrentState}.
    void set_lifecycle(Lifecycle* lifecycle);
    // Gives qubes volumes (made with them, removed with them) and enables
    // admin.vm.volume.{List,Info,ListSnapshots,Revert,Set.revisions_to_keep}.
    void set_storage(storage::FilePool* pool);
    // Enables admin.vm.Stats (its timer runs on `io`); after set_lifecycle.
    void set_event_loop(asio::io_context& io);
    // Filters admin.vm.List and admin.Events for callers other than dom0 by
    // the qrexec policy (admin_policy.hpp); without it they see everything.
    void set_admin_policy(std::shared_ptr<AdminPolicy> policy) { admin_policy_ = std::move(policy); }
    // Enables admin.vm.CreateDisposable.
    void set_disposables(Disposables* disposables);
    // The durable changes, shared with the parts of the daemon that make their own.
    Registry& registry() { return registry_; }

    // The main socket (qubesd.sock) and, through qrexec, the qubes.
    ApiResponse handle(const ApiRequest& request);
    // The internal socket (qubesd.internal.sock): internal.* methods.
    ApiResponse handle_internal(const ApiRequest& request);

    // The methods `handle` knows (admin.vm.Create.<class> listed per class).
    std::vector<std::string> method_names() const;

    // Where errors that close a connection without a reply are reported.
    std::function<void(const std::string&)> log = [](const std::string&) {};

    struct Call;
    using Handler = std::string (AdminApi::*)(Call&);
    enum class Payload { None, Optional, Required };
    enum class Arg { None, Optional, Required };
    struct Method {
        Handler handler;
        Payload payload;
        Arg arg;
    };

private:
    ApiResponse dispatch(const ApiRequest& request, const std::map<std::string, Method, std::less<>>& table);
    void publish(const Qube* subject, const std::string& event,
                 std::vector<std::pair<std::string, std::string>> kwargs = {});

    // global
    std::string vmclass_list(Call&);
    std::string vm_list(Call&);
    std::string vm_create(Call&);
    std::string vm_remove(Call&);
    std::string events(Call&);
    std::string system_info(Call&);
    // properties (of a qube, or the globals when the method is admin.property.*)
    std::string property_list(Call&);
    std::string property_get(Call&);
    std::string property_get_all(Call&);
    std::string property_get_default(Call&);
    std::string property_help(Call&);
    std::string property_set(Call&);
    std::string property_reset(Call&);
    // features, tags, notes
    std::string feature_list(Call&);
    std::string feature_get(Call&);
    std::string feature_check(Call&);
    std::string feature_set(Call&);
    std::string feature_remove(Call&);
    std::string tag_list(Call&);
    std::string tag_get(Call&);
    std::string tag_set(Call&);
    std::string tag_remove(Call&);
    std::string notes_get(Call&);
    std::string notes_set(Call&);
    // labels
    std::string label_list(Call&);
    std::string label_get(Call&);
    std::string label_index(Call&);
    std::string label_create(Call&);
    std::string label_remove(Call&);
    // lifecycle
    std::string vm_start(Call&);
    std::string vm_autostart(Call&);
    std::string vm_shutdown(Call&);
    std::string vm_kill(Call&);
    std::string vm_pause(Call&);
    std::string vm_unpause(Call&);
    std::string vm_current_state(Call&);
    std::string vm_suspend(Call&);
    std::string vm_stats(Call&);
    void stats_round(std::shared_ptr<asio::steady_timer> timer);
    std::string vm_resume(Call&);
    // devices and firewall (answered as Qubes does for a qube without devices
    // and with its default rule list)
    void add_device_methods();
    std::string deviceclass_list(Call&);
    std::string device_list(Call&);
    std::string device_denied_list(Call&);
    std::string firewall_get(Call&);
    std::string firewall_set(Call&);
    std::string firewall_reload(Call&);
    // disposables
    std::string vm_create_disposable(Call&);
    // volumes
    std::string volume_list(Call&);
    std::string volume_info(Call&);
    std::string volume_list_snapshots(Call&);
    std::string volume_revert(Call&);
    std::string volume_resize(Call&);
    std::string volume_set_revisions(Call&);
    std::string volume_set_rw(Call&);
    std::string volume_set_ephemeral(Call&);
    std::string volume_clear(Call&);
    std::string volume_clone_from(Call&);
    std::string volume_clone_to(Call&);
    std::string volume_import_begin(Call&);
    std::string volume_import_end(Call&);
    // Runs `work` (pool work that takes a while) on the storage threads, in
    // the queue of the qube `uuid`; its result, passed through `then` on the
    // loop (which may publish events or throw), is the answer.
    void on_storage(Call& call, const std::string& uuid, std::function<std::string()> work,
                    std::function<std::string(std::string)> then = nullptr);
    // pools
    void add_pool_methods();
    storage::FilePool& named_pool(Call&);
    std::string pool_list(Call&);
    std::string pool_list_drivers(Call&);
    std::string pool_info(Call&);
    std::string pool_usage_details(Call&);
    std::string pool_add(Call&);
    std::string pool_remove(Call&);
    std::string pool_volume_list(Call&);
    std::string pool_set_revisions(Call&);
    std::string pool_set_ephemeral(Call&);
    static long long validate_size(std::string_view text, bool allow_negative);

    std::string rename(Call&, const std::string& new_name);

    Model& model_;
    Store& store_;
    EventHub& events_;
    Registry registry_;
    Lifecycle* lifecycle_ = nullptr;
    Disposables* disposables_ = nullptr;
    storage::FilePool* pool_ = nullptr;
    // admin.vm.Stats: its own stream of events, the timer of its rounds (while
    // a stream is open) and each running qube's last CPU time.
    std::shared_ptr<AdminPolicy> admin_policy_;
    asio::io_context* io_ = nullptr;
    EventHub stats_hub_;
    // Whether rounds run. Their timer lives in its own handler: destroyed
    // with the loop's pending handlers (the loop may end before this object).
    bool stats_running_ = false;
    struct StatsSample {
        std::chrono::steady_clock::time_point when;
        uint64_t cpu_ns = 0;
    };
    std::map<std::string, StatsSample> stats_previous_;
    // admin.vm.volume.CloneFrom tokens waiting for their CloneTo.
    struct PendingClone {
        std::string uuid, volume;
        uint64_t serial;
    };
    std::map<std::string, PendingClone, std::less<>> pending_clones_;
    uint64_t clone_serial_ = 0;
    std::map<std::string, Method, std::less<>> methods_;
    std::map<std::string, Method, std::less<>> internal_methods_;
    // Refusals are the caller's doing: a few logged per source qube per second.
    base::LogRateLimiter refusals_logged_{5, 20};
};

}  // namespace aerie::admin
