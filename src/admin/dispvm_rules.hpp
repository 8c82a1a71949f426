// The rules of disposables and their preloading, as Qubes R4.3 has them
// (qubes.vm.dispvm, qubes.vm.mix.dvmtemplate): pure answers from the model,
// no processes, no timers. disposables.hpp acts on them.
#pragma once

#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "admin/model.hpp"

namespace aerie::admin {

inline constexpr std::string_view kPreloadQueue = "preload-dispvm";            // on the template, managed
inline constexpr std::string_view kPreloadMax = "preload-dispvm-max";          // template and/or dom0
inline constexpr std::string_view kPreloadThreshold = "preload-dispvm-threshold";  // dom0, MiB
inline constexpr std::string_view kPreloadDelay = "preload-dispvm-delay";      // template, else dom0, s
inline constexpr std::string_view kPreloadInProgress = "preload-dispvm-in-progress";  // the preload, managed
inline constexpr std::string_view kPreloadCompleted = "preload-dispvm-completed";     // the preload, managed

// The three features only the daemon sets (refused through the Admin API).
bool is_managed_preload_feature(std::string_view key);
// Why admin.vm.feature.Set KEY=VALUE is refused (a QubesValueError), or "".
std::string api_feature_refusal(std::string_view key, std::string_view value);
// A feature as Qubes' bool() reads it: set and not empty.
bool feature_true(const Qube& qube, std::string_view key);

// What a request for a disposable of anything else is answered (QubesException).
inline constexpr std::string_view kNotADisposableTemplate =
    "Refusing to create disposable out of this AppVM, because template_for_dispvms=False";
// An AppVM with template_for_dispvms=True.
bool is_disposable_template(const Model& model, const Qube& qube);
// The DispVMs whose template is `tpl`.
std::vector<Qube*> dispvms_of(Model& model, const Qube& tpl);
// A new disposable takes its template's features (not the preload ones),
// tags and explicitly set properties (those a disposable has, but not the
// ones that name or place the qube).
void inherit_from_template(Qube& disp, const Qube& tpl);
// disp<N>: N at random in 0..9999, unused (nullopt when all are taken).
std::optional<int> new_dispid(const Model& model, std::mt19937& random);

// --- the preload queue and its settings
std::vector<std::string> preload_queue(const Qube& tpl);
std::string format_queue(const std::vector<std::string>& names);
// Whether the disposable is (still) a preload: queued, or taken and not yet used.
bool is_preload(const Model& model, const Qube& disp);
// preload-dispvm-max for `tpl`: dom0's value when `tpl` is the global
// default_dispvm and dom0 has the feature at all (even empty or 0), else its own.
long long preload_max(const Model& model, const Qube& tpl);
long long preload_threshold_mib(const Model& model);
// Seconds; negative: refill only when the queue is empty.
double preload_delay(const Model& model, const Qube& tpl);
// How many to start now: what is missing, within the free memory above the
// threshold (nullopt: free memory unknown, no limit).
long long preload_fill_count(long long max, size_t queued, std::optional<long long> available_mib,
                             long long threshold_mib, long long memory_mib);
// MemAvailable of a /proc/meminfo style file, in MiB.
std::optional<long long> mem_available_mib(const std::filesystem::path& meminfo);

// The properties whose value differs between a preload and its template
// (Qubes' ignore list aside): a preload made before the change is outdated.
// Whether a change of this property of a template leaves its preloads as they are.
bool ignored_for_outdated(std::string_view property);
std::vector<std::string> outdated_properties(const Model& model, const Qube& disp, const Qube& tpl);

}  // namespace aerie::admin
