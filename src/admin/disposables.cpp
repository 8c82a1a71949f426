#include "admin/disposables.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>

#include "admin/dispvm_rules.hpp"
#include "admin/lifecycle.hpp"
#include "admin/qube_command.hpp"
#include "storage/pool.hpp"

namespace aerie::admin {

using namespace std::chrono_literals;

namespace {

constexpr std::string_view kWaitService = "qubes.WaitForRunningSystem";

long long int_of(const Model& model, const Qube& qube, const char* property, long long fallback) {
    auto n = parse_int(model.value_text(&qube, property));
    return n ? *n : fallback;
}

bool starts_with(std::string_view text, std::string_view prefix) { return text.substr(0, prefix.size()) == prefix; }

}  // namespace

struct Disposables::Waiter {
    explicit Waiter(asio::io_context& io) : timer(io) {}
    std::string creator;
    Done done;
    asio::steady_timer timer;
};

Disposables::Disposables(asio::io_context& io, Registry& registry, EventHub& events, Lifecycle& lifecycle,
                         DisposablesConfig config)
    : io_(io), registry_(registry), model_(registry.model()), events_(events), lifecycle_(lifecycle),
      config_(std::move(config)), random_(std::random_device{}()) {
    events_.observe([this, alive = alive_](std::string_view subject, std::string_view event,
                                           const EventHub::Kwargs& kwargs) {
        if (!*alive) return;  // the hub outlives us
        bool wanted = event == "domain-shutdown" || event == "domain-unpaused" ||
                      starts_with(event, "domain-feature-set:preload-dispvm") ||
                      starts_with(event, "domain-feature-delete:preload-dispvm") ||
                      event == "domain-feature-set:preload-dispvm-max" ||
                      event == "domain-feature-delete:preload-dispvm-max" || starts_with(event, "property-set:") ||
                      starts_with(event, "property-reset:");
        if (!wanted) return;
        // Acted on after the publishing change is complete, never inside it.
        asio::post(io_, [this, alive, s = std::string(subject), e = std::string(event), kwargs] {
            if (*alive) on_event(s, e, kwargs);
        });
    });
}

Disposables::~Disposables() { *alive_ = false; }

// --- reacting to events --------------------------------------------------------

void Disposables::on_event(const std::string& subject, const std::string& event, const EventHub::Kwargs& kwargs) {
    // Whether a qube is a preload (its is_preload property) changes with the
    // queue and with its -in-progress mark: announced as Qubes does.
    std::string feature = event.substr(event.find(':') + 1);
    if (starts_with(event, "domain-feature-") && (feature == kPreloadQueue || feature == kPreloadInProgress)) {
        std::vector<std::string> changed;
        if (feature == kPreloadInProgress) {
            changed.push_back(subject);
        } else {
            auto arg = [&](const char* key) {
                Qube holder;
                for (const auto& [k, v] : kwargs)
                    if (k == key) holder.features[std::string(kPreloadQueue)] = v;
                auto names = preload_queue(holder);
                return std::set<std::string>(names.begin(), names.end());
            };
            auto now = arg("value"), before = arg("oldvalue");
            std::set_symmetric_difference(now.begin(), now.end(), before.begin(), before.end(),
                                          std::back_inserter(changed));
        }
        for (const auto& name : changed)
            if (model_.find(name)) events_.publish(name, "property-reset:is_preload", {{"name", "is_preload"}});
        return;
    }
    if (event == "domain-shutdown") {
        Qube* qube = model_.find(subject);
        if (!qube) return;
        if (qube->klass == "DispVM") {
            if (model_.value_text(qube, "auto_cleanup") != "True") return;
            if (Qube* tpl = model_.find(model_.value_text(qube, "template"))) {
                std::vector<FeatureChange> changes;
                remove_from_queue(*tpl, {subject}, changes);
                registry_.change_features(changes);
            }
            if (waiters_.count(subject)) return preload_failed(subject, "it halted while starting");
            return remove_if_halted(subject);
        }
        // The volumes its preloads were made from may have changed.
        if (is_disposable_template(model_, *qube)) refresh_outdated(subject, "the template shut down");
        if (qube->klass == "TemplateVM")
            for (const Qube* q : model_.qubes_by_name())
                if (is_disposable_template(model_, *q) && model_.value_text(q, "template") == subject)
                    refresh_outdated(q->name, "its template shut down");
        return;
    }
    if (event == "domain-unpaused") {
        // A preload unpaused by anyone but a request counts as used.
        Qube* qube = model_.find(subject);
        if (qube && qube->klass == "DispVM" && is_preload(model_, *qube) && !waiters_.count(subject) &&
            feature_true(*qube, kPreloadCompleted))
            use_preload(*qube, false);
        return;
    }
    if (starts_with(event, "domain-feature-")) {
        if (feature != kPreloadMax) return;
        Qube* qube = model_.find(subject);
        if (!qube) return;
        std::string tpl = qube->is_admin() ? model_.value_text(nullptr, "default_dispvm") : subject;
        if (!tpl.empty()) start_preloading(tpl, "preload-dispvm-max changed");
        return;
    }
    std::string property = event.substr(event.find(':') + 1);
    if (subject.empty()) {
        // Which template dom0's preload-dispvm-max applies to.
        if (property != "default_dispvm") return;
        for (const Qube* q : model_.qubes_by_name())
            if (is_disposable_template(model_, *q)) start_preloading(q->name, "default_dispvm changed", false);
        return;
    }
    Qube* qube = model_.find(subject);
    if (!qube || qube->klass != "AppVM") return;
    if (property == "template_for_dispvms") {
        if (is_disposable_template(model_, *qube))
            start_preloading(subject, "template_for_dispvms was set to True");
        else
            trim(*qube, 0, "template_for_dispvms was set to False");
        return;
    }
    if (is_disposable_template(model_, *qube) && !ignored_for_outdated(property))
        after(500ms, "refresh:" + subject, [this, subject, property] {
            refresh_outdated(subject, "property " + property + " changed");
        });
}

// --- filling the queue ---------------------------------------------------------

void Disposables::start_preloading(const std::string& tpl, const std::string& reason, bool explicit_request) {
    Qube* qube = model_.find(tpl);
    if (!qube || !is_disposable_template(model_, *qube)) return;
    events_.publish(tpl, "domain-preload-dispvm-start", {{"reason", reason}});
    fill(tpl, explicit_request);
}

void Disposables::fill(const std::string& tpl_name, bool explicit_request) {
    Qube* tpl = model_.find(tpl_name);
    if (!tpl || !is_disposable_template(model_, *tpl)) return;
    if (explicit_request) {
        failed_.erase(tpl_name);
    } else if (failed_.count(tpl_name)) {
        log("not preloading disposables of " + tpl_name +
            ": the last attempt failed (set preload-dispvm-max again to retry)");
        return;
    }
    long long max = preload_max(model_, *tpl);
    trim(*tpl, max, "preload-dispvm-max is " + std::to_string(max));
    size_t queued = preload_queue(*tpl).size();
    long long want = max - static_cast<long long>(queued);
    if (want <= 0) return;
    auto available = mem_available_mib(config_.meminfo);
    long long threshold = preload_threshold_mib(model_);
    long long memory = int_of(model_, *tpl, "memory", 400);
    long long count = preload_fill_count(max, queued, available, threshold, memory);
    if (count < want)
        log(fmt::format("not preloading {} disposable(s) of {}: not enough free memory ({} MiB available, "
                        "preload-dispvm-threshold {} MiB, {} MiB each)",
                        want - count, tpl_name, available.value_or(0), threshold, memory));
    for (long long i = 0; i < count; ++i) {
        tpl = model_.find(tpl_name);  // a failed start may have changed the model
        if (!tpl || failed_.count(tpl_name)) return;
        preload_one(*tpl);
    }
}

Qube Disposables::make_disposable(const Qube& tpl, bool preload) {
    auto dispid = new_dispid(model_, random_);
    if (!dispid) throw qubes_error("QubesException", "No free disposable id");
    Qube disp;
    disp.klass = "DispVM";
    disp.name = "disp" + std::to_string(*dispid);
    disp.uuid = new_uuid();
    disp.qid = model_.next_free_qid();
    if (disp.qid == 0) throw qubes_error("QubesException", "No free QID to allocate");
    disp.properties["template"] = tpl.name;
    inherit_from_template(disp, tpl);
    disp.properties["auto_cleanup"] = "True";
    disp.properties["dispid"] = std::to_string(*dispid);
    if (preload) {
        disp.features["internal"] = "1";
        disp.features[std::string(kPreloadInProgress)] = "1";
    }
    return disp;
}

void Disposables::preload_one(Qube& tpl) {
    std::string name, tpl_name = tpl.name;
    try {
        Qube disp = make_disposable(tpl, true);
        name = disp.name;
        auto queue = preload_queue(tpl);
        queue.push_back(name);
        // The qube and its place in the queue: one transaction.
        registry_.add_qube(std::move(disp), {{&tpl, std::string(kPreloadQueue), format_queue(queue)}});
    } catch (const std::exception& e) {
        log("preloading a disposable of " + tpl_name + " failed: " + e.what());
        failed_.insert(tpl_name);
        return;
    }
    log("preloading " + name + " for " + tpl_name);
    lifecycle_.start(*model_.find(name), [this, alive = alive_, name](std::optional<ApiError> error) {
        if (*alive) on_preload_started(name, std::move(error));
    });
}

void Disposables::on_preload_started(const std::string& name, std::optional<ApiError> error) {
    if (error) return preload_failed(name, error->what());
    Qube* disp = model_.find(name);
    if (!disp) return;
    auto supported = model_.feature_check_with(*disp, "supported-rpc." + std::string(kWaitService), true, false, false);
    if (supported && !supported->empty() && !waiters_.count(name))
        wait_running_system(name);
    else
        preload_ready(name);
}

// As Qubes: a preload is paused only once its services run, which the
// qube's qubes.WaitForRunningSystem tells (where its template has it).
void Disposables::wait_running_system(const std::string& name) {
    Qube* qube = model_.find(name);
    long long timeout = std::max<long long>(1, int_of(model_, *qube, "qrexec_timeout", 60));
    QubeCommand command{config_.bin_dir, config_.qrexec_socket_dir, name,
                        "DEFAULT:QUBESRPC " + std::string(kWaitService) + " dom0", std::chrono::seconds(timeout)};
    run_in_qube(io_, std::move(command), [this, alive = alive_, name, timeout](QubeCommandResult r) {
        if (!*alive) return;
        Qube* disp = model_.find(name);
        // Taken meanwhile: handed over without waiting (see create()).
        if (!disp || !is_preload(model_, *disp) || feature_true(*disp, kPreloadCompleted)) return;
        if (!r.error.empty()) return preload_failed(name, r.error);
        if (r.timed_out)
            return preload_failed(name, fmt::format("Timed out call to '{}' after '{}' seconds during preload startup",
                                                    kWaitService, timeout));
        if (r.exit_code != 0)
            return preload_failed(name, fmt::format("Error on call to '{}' during preload startup", kWaitService));
        preload_ready(name);
    });
}

void Disposables::preload_ready(const std::string& name) {
    Qube* disp = model_.find(name);
    if (!disp || !is_preload(model_, *disp) || feature_true(*disp, kPreloadCompleted)) return;
    if (auto it = waiters_.find(name); it != waiters_.end()) {
        // Requested while it started: no pause, straight to its caller.
        auto waiter = std::move(it->second);
        waiters_.erase(it);
        waiter->timer.cancel();
        return hand_over(*disp, waiter->creator, std::move(waiter->done));
    }
    try {
        lifecycle_.pause(*disp);
        registry_.change_features({{disp, std::string(kPreloadCompleted), "1"},
                                   {disp, std::string(kPreloadInProgress), ""}});
    } catch (const std::exception& e) {
        return preload_failed(name, std::string("cannot pause it: ") + e.what());
    }
    log("preloaded " + name + " for " + model_.value_text(disp, "template"));
}

void Disposables::preload_failed(const std::string& name, const std::string& why) {
    Qube* disp = model_.find(name);
    std::string tpl_name = disp ? model_.value_text(disp, "template") : std::string();
    Qube* tpl = tpl_name.empty() ? nullptr : model_.find(tpl_name);
    // A preload discarded on purpose (trimmed, outdated, given up on) left
    // the queue first: its end is no failure of the template.
    auto queued = tpl ? preload_queue(*tpl) : std::vector<std::string>();
    bool wanted = waiters_.count(name) || std::find(queued.begin(), queued.end(), name) != queued.end();
    if (!wanted) {
        cleanup(name);
        return;
    }
    log("preloading " + name + (tpl_name.empty() ? "" : " for " + tpl_name) + " failed: " + why);
    if (!tpl_name.empty()) failed_.insert(tpl_name);
    if (tpl) {
        std::vector<FeatureChange> changes;
        remove_from_queue(*tpl, {name}, changes);
        try {
            registry_.change_features(changes);
        } catch (const std::exception& e) {
            log(std::string("store: ") + e.what());
        }
    }
    if (auto it = waiters_.find(name); it != waiters_.end()) {
        auto waiter = std::move(it->second);
        waiters_.erase(it);
        waiter->timer.cancel();
        log("falling back to a new disposable instead of " + name);
        if (tpl)
            fresh(*tpl, waiter->creator, std::move(waiter->done));
        else
            waiter->done(qubes_error("QubesException", "Preloading " + name + " failed: " + why), "");
    }
    cleanup(name);
}

// --- handing out ---------------------------------------------------------------

void Disposables::create(const std::string& tpl_name, const std::string& creator, Done done) {
    Qube* tpl = model_.find(tpl_name);
    if (!tpl) return done(qubes_error("QubesVMNotFoundError", "No such domain: '" + tpl_name + "'"), "");
    if (!is_disposable_template(model_, *tpl))
        return done(qubes_error("QubesException", std::string(kNotADisposableTemplate)),
                    "");
    auto queue = preload_queue(*tpl);
    std::vector<std::string> dropped, outdated;
    Qube* chosen = nullptr;
    for (const auto& name : queue) {
        Qube* disp = model_.find(name);
        if (!disp || disp->klass != "DispVM") {
            dropped.push_back(name);
            continue;
        }
        if (auto why = outdated_reason(*disp, *tpl); !why.empty()) {
            log("discarding preloaded " + name + ": it has outdated " + why);
            outdated.push_back(name);
            continue;
        }
        chosen = disp;
        break;
    }
    std::vector<FeatureChange> changes;
    std::vector<std::string> leaving = dropped;
    leaving.insert(leaving.end(), outdated.begin(), outdated.end());
    if (chosen) leaving.push_back(chosen->name);
    remove_from_queue(*tpl, leaving, changes);
    try {
        if (!chosen) {
            registry_.change_features(changes);
            if (!queue.empty()) log("found only outdated preloaded qube(s) of " + tpl_name + ", making a new disposable");
            fresh(*tpl, creator, std::move(done));
        } else if (chosen->power_state == "Paused" || chosen->power_state == "Running") {
            // Complete, or started and still waiting for its services: ours
            // now (its leaving the queue stored with its use, at once).
            hand_over(*chosen, creator, std::move(done), std::move(changes));
        } else {
            // Still starting: wait for it, but not for ever.
            changes.push_back({chosen, std::string(kPreloadInProgress), "1"});
            registry_.change_features(changes);
            std::string name = chosen->name;
            auto waiter = std::make_unique<Waiter>(io_);
            waiter->creator = creator;
            waiter->done = std::move(done);
            double seconds = static_cast<double>(std::max<long long>(1, int_of(model_, *chosen, "qrexec_timeout", 60))) * 1.2;
            waiter->timer.expires_after(std::chrono::milliseconds(static_cast<long long>(seconds * 1000)));
            waiter->timer.async_wait([this, alive = alive_, name, seconds](const asio::error_code& ec) {
                if (ec || !*alive) return;
                auto it = waiters_.find(name);
                if (it == waiters_.end()) return;
                auto w = std::move(it->second);
                waiters_.erase(it);
                log(fmt::format("requested preloaded {} but it did not finish preloading in {} seconds, "
                                "making a new disposable",
                                name, seconds));
                Qube* disp = model_.find(name);
                Qube* t = disp ? model_.find(model_.value_text(disp, "template")) : nullptr;
                if (t) failed_.insert(t->name);  // not tried again until asked for
                cleanup(name);
                if (t)
                    fresh(*t, w->creator, std::move(w->done));
                else
                    w->done(qubes_error("QubesException", "the template of " + name + " is gone"), "");
            });
            waiters_[name] = std::move(waiter);
        }
    } catch (const StoreError& e) {
        // Thrown only before `done` was handed on.
        log(std::string("store: ") + e.what());
        done(qubes_error("QubesException", std::string("Cannot save: ") + e.what()), "");
    }
    for (const auto& name : outdated) cleanup(name);
    schedule_refill(tpl_name);
}

void Disposables::hand_over(Qube& disp, const std::string& creator, Done done, std::vector<FeatureChange> changes) {
    std::string name = disp.name;
    try {
        if (disp.power_state == "Paused") lifecycle_.unpause(disp);
        if (!feature_true(disp, kPreloadCompleted)) changes.push_back({&disp, std::string(kPreloadCompleted), "1"});
        use_preload(disp, true, std::move(changes), creator);
    } catch (const std::exception& e) {
        log("cannot use preloaded " + name + ": " + e.what());
        Qube* tpl = model_.find(model_.value_text(&disp, "template"));
        cleanup(name);
        if (tpl) return fresh(*tpl, creator, std::move(done));
        return done(qubes_error("QubesException", e.what()), "");
    }
    done(std::nullopt, name);
}

void Disposables::use_preload(Qube& disp, bool requested, std::vector<FeatureChange> changes,
                              const std::string& creator) {
    Qube* tpl = model_.find(model_.value_text(&disp, "template"));
    if (!tpl || !feature_true(*tpl, "internal")) changes.push_back({&disp, "internal", std::nullopt});
    if (requested) {
        changes.push_back({&disp, std::string(kPreloadInProgress), std::nullopt});
    } else {
        log("preloaded " + disp.name + " was unpaused without a request: it counts as used");
        if (tpl) remove_from_queue(*tpl, {disp.name}, changes);
        changes.push_back({&disp, std::string(kPreloadInProgress), ""});
    }
    std::vector<std::string> tags;
    if (!creator.empty()) tags = {"created-by-" + creator, "disp-created-by-" + creator};
    registry_.change_features(changes, &disp, tags);
    // Network changes made while it was a preload would be applied here;
    // Aerie's qubes have no network yet, so there is nothing to defer.
    if (!tpl) return;
    events_.publish(tpl->name, "domain-preload-dispvm-used", {{"dispvm", disp.name}});
    schedule_refill(tpl->name);
}

void Disposables::fresh(Qube& tpl, const std::string& creator, Done done) {
    std::string name;
    try {
        Qube disp = make_disposable(tpl, false);
        disp.tags.insert("created-by-" + creator);
        disp.tags.insert("disp-created-by-" + creator);
        name = disp.name;
        registry_.add_qube(std::move(disp));
    } catch (const ApiError& e) {
        return done(e, "");
    } catch (const std::exception& e) {
        return done(qubes_error("QubesException", e.what()), "");
    }
    done(std::nullopt, name);
}

// --- keeping the queue right ---------------------------------------------------

void Disposables::remove_from_queue(Qube& tpl, const std::vector<std::string>& names,
                                    std::vector<FeatureChange>& changes) {
    // Start from a change already staged for this queue, if any.
    std::vector<std::string> queue = preload_queue(tpl);
    for (auto it = changes.rbegin(); it != changes.rend(); ++it) {
        if (it->qube == &tpl && it->key == kPreloadQueue) {
            Qube staged;
            if (it->value) staged.features[std::string(kPreloadQueue)] = *it->value;
            queue = preload_queue(staged);
            break;
        }
    }
    std::vector<std::string> kept;
    for (const auto& name : queue)
        if (std::find(names.begin(), names.end(), name) == names.end()) kept.push_back(name);
    if (kept.size() != queue.size()) changes.push_back({&tpl, std::string(kPreloadQueue), format_queue(kept)});
}

void Disposables::trim(Qube& tpl, long long keep, const std::string& reason) {
    auto queue = preload_queue(tpl);
    if (static_cast<long long>(queue.size()) <= std::max<long long>(0, keep)) return;
    std::vector<std::string> excess(queue.begin() + std::max<long long>(0, keep), queue.end());
    std::vector<FeatureChange> changes;
    remove_from_queue(tpl, excess, changes);
    registry_.change_features(changes);
    log("removing preloaded " + format_queue(excess) + " of " + tpl.name + ": " + reason);
    for (const auto& name : excess) cleanup(name);
}

std::string Disposables::outdated_reason(const Qube& disp, const Qube& tpl) const {
    storage::FilePool* pool = registry_.pool();
    if (pool && !disp.is_halted() && pool->snapshots_outdated(disp.uuid)) return "volume(s)";
    // The private volume's size: nominal and the same for every qube here
    // (directories), so it cannot differ.
    auto props = outdated_properties(model_, disp, tpl);
    if (!props.empty()) return "property(ies): " + format_queue(props);
    return {};
}

void Disposables::refresh_outdated(const std::string& tpl_name, const std::string& reason) {
    Qube* tpl = model_.find(tpl_name);
    if (!tpl || !is_disposable_template(model_, *tpl)) return;
    std::vector<std::string> outdated;
    for (const auto& name : preload_queue(*tpl)) {
        Qube* disp = model_.find(name);
        if (disp && !outdated_reason(*disp, *tpl).empty()) outdated.push_back(name);
    }
    if (outdated.empty()) return;
    std::vector<FeatureChange> changes;
    remove_from_queue(*tpl, outdated, changes);
    registry_.change_features(changes);
    log("discarding outdated preloaded " + format_queue(outdated) + " of " + tpl_name + " (" + reason + ")");
    for (const auto& name : outdated) cleanup(name);
    start_preloading(tpl_name, "of outdated volume(s) or property(ies)", false);
}

void Disposables::schedule_refill(const std::string& tpl_name) {
    Qube* tpl = model_.find(tpl_name);
    if (!tpl || !is_disposable_template(model_, *tpl)) return;
    if (static_cast<long long>(preload_queue(*tpl).size()) >= preload_max(model_, *tpl)) return;
    double delay = preload_delay(model_, *tpl);
    if (delay < 0) {
        if (preload_queue(*tpl).empty()) start_preloading(tpl_name, "there is a gap", false);
        return;
    }
    after(std::chrono::milliseconds(static_cast<long long>(delay * 1000)), "refill:" + tpl_name,
          [this, tpl_name] { start_preloading(tpl_name, "there is a gap", false); });
}

// Runs `work` after `delay`, once per key: while one is pending, a later
// request for the same key joins it.
void Disposables::after(std::chrono::milliseconds delay, const std::string& key, std::function<void()> work) {
    auto& timer = timers_[key];
    if (timer && timer->expiry() > std::chrono::steady_clock::now()) return;
    timer = std::make_unique<asio::steady_timer>(io_, delay);
    timer->async_wait([alive = alive_, work = std::move(work)](const asio::error_code& ec) {
        if (!ec && *alive) work();
    });
}

void Disposables::cleanup(const std::string& name) {
    Qube* disp = model_.find(name);
    if (!disp) return;
    if (disp->is_halted()) return remove_if_halted(name);
    lifecycle_.kill(*disp, [this, alive = alive_, name](std::optional<ApiError>) {
        if (*alive) asio::post(io_, [this, alive, name] {
            if (*alive) remove_if_halted(name);
        });
    });
}

void Disposables::remove_if_halted(const std::string& name) {
    Qube* disp = model_.find(name);
    if (!disp || !disp->is_halted()) return;
    try {
        registry_.remove_qube(name);
    } catch (const std::exception& e) {
        log("removing " + name + ": " + e.what());
    }
}

// --- after a crash -------------------------------------------------------------

void Disposables::recover() {
    for (const Qube* q : model_.qubes_by_name()) {
        Qube* tpl = model_.find(q->name);
        if (tpl->klass != "AppVM") continue;
        std::vector<std::string> gone, stale;
        for (const auto& name : preload_queue(*tpl))
            if (!model_.find(name)) gone.push_back(name);
        // Interrupted: still being preloaded or handed out when the daemon
        // stopped, or complete but no longer paused (halted meanwhile, or
        // unpaused for a request whose answer the crash lost).
        for (Qube* disp : dispvms_of(model_, *tpl)) {
            bool completed = feature_true(*disp, kPreloadCompleted);
            bool queued = is_preload(model_, *disp);
            if ((queued && completed && disp->power_state != "Paused") || feature_true(*disp, kPreloadInProgress))
                stale.push_back(disp->name);
        }
        if (gone.empty() && stale.empty()) continue;
        std::vector<std::string> leaving = gone;
        leaving.insert(leaving.end(), stale.begin(), stale.end());
        std::vector<FeatureChange> changes;
        remove_from_queue(*tpl, leaving, changes);
        registry_.change_features(changes);
        if (!gone.empty()) log("dropping absent preloaded qube(s) of " + tpl->name + ": " + format_queue(gone));
        if (!stale.empty())
            log("removing preloaded qube(s) of " + tpl->name + " whose progress was interrupted: " +
                format_queue(stale));
        for (const auto& name : stale) cleanup(name);
    }
    // A disposable that halted while the daemon was down is removed now.
    for (const Qube* q : model_.qubes_by_name())
        if (q->klass == "DispVM" && q->is_halted() && model_.value_text(q, "auto_cleanup") == "True")
            asio::post(io_, [this, alive = alive_, name = q->name] {
                if (*alive) remove_if_halted(name);
            });
    for (const Qube* q : model_.qubes_by_name())
        if (is_disposable_template(model_, *q) && preload_max(model_, *q) > 0)
            asio::post(io_, [this, alive = alive_, name = q->name] {
                if (*alive) start_preloading(name, "the admin daemon started");
            });
}

}  // namespace aerie::admin
