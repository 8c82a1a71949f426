#include "admin/dispvm_rules.hpp"

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <set>

namespace aerie::admin {

namespace {

// qubes.vm.dispvm.PRELOAD_OUTDATED_IGNORED_PROPERTIES, and Aerie's own:
// mac (per qube here), is_preload and auto_cleanup (the disposable's state).
const std::set<std::string, std::less<>>& ignored_properties() {
    static const std::set<std::string, std::less<>> names = {
        "autostart", "backup_timestamp", "default_dispvm", "dispid", "gateway", "gateway6",
        "icon", "include_in_backups", "installed_by_rpm", "ip", "ip6", "klass", "name", "qid",
        "start_time", "stubdom_uuid", "stubdom_xid", "template", "template_for_dispvms",
        "updateable", "uuid", "visible_gateway", "visible_gateway6", "visible_ip", "visible_ip6",
        "xid", "mac", "is_preload", "auto_cleanup"};
    return names;
}

bool all_digits(std::string_view text) {
    return std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// Python's float(): optional sign, digits with at most one point, an
// optional exponent, surrounding whitespace; also inf/nan.
bool python_float(std::string_view text) {
    std::string s(text);
    if (s.empty()) return false;
    char* end = nullptr;
    std::strtod(s.c_str(), &end);
    if (end == s.c_str()) return false;
    while (*end == ' ' || *end == '\t' || *end == '\n') ++end;
    return *end == '\0' && s.find_first_of("xX") == std::string::npos;  // strtod reads hex, Python does not
}

}  // namespace

bool is_managed_preload_feature(std::string_view key) {
    return key == kPreloadQueue || key == kPreloadInProgress || key == kPreloadCompleted;
}

std::string api_feature_refusal(std::string_view key, std::string_view value) {
    if (key == kPreloadMax) {
        std::string_view v = value.empty() ? "0" : value;
        if (!all_digits(v)) return "Invalid preload-dispvm-max value: not a digit";
    } else if (key == kPreloadThreshold) {
        if (!value.empty() && !all_digits(value)) return "Invalid preload-dispvm-threshold value: not a digit";
    } else if (key == kPreloadDelay) {
        if (!value.empty() && !python_float(value))
            return "Invalid preload-dispvm-delay value: not an integer or float";
    }
    return {};
}

bool feature_true(const Qube& qube, std::string_view key) {
    auto it = qube.features.find(std::string(key));
    return it != qube.features.end() && !it->second.empty();
}

bool is_disposable_template(const Model& model, const Qube& qube) {
    return qube.klass == "AppVM" && model.value_text(&qube, "template_for_dispvms") == "True";
}

std::vector<Qube*> dispvms_of(Model& model, const Qube& tpl) {
    std::vector<Qube*> out;
    for (const Qube* q : model.qubes_by_name())
        if (q->klass == "DispVM" && model.value_text(q, "template") == tpl.name)
            out.push_back(model.find(q->name));
    return out;
}

void inherit_from_template(Qube& disp, const Qube& tpl) {
    for (const auto& [key, value] : tpl.features)
        if (key.rfind("preload-dispvm", 0) != 0) disp.features[key] = value;
    disp.tags.insert(tpl.tags.begin(), tpl.tags.end());
    const auto* own = class_properties(disp.klass);
    for (const auto& [name, value] : tpl.properties) {
        if (ignored_properties().count(name) || disp.properties.count(name)) continue;
        const PropertyDef* def = own ? find_property(*own, name) : nullptr;
        if (def && def->writable) disp.properties[name] = value;
    }
}

std::optional<int> new_dispid(const Model& model, std::mt19937& random) {
    std::uniform_int_distribution<int> pick(0, 9999);
    for (int attempt = 0; attempt < 100; ++attempt) {
        int id = pick(random);
        if (!model.find("disp" + std::to_string(id))) return id;
    }
    for (int id = 0; id <= 9999; ++id)
        if (!model.find("disp" + std::to_string(id))) return id;
    return std::nullopt;
}

std::vector<std::string> preload_queue(const Qube& tpl) {
    std::vector<std::string> names;
    auto it = tpl.features.find(std::string(kPreloadQueue));
    if (it == tpl.features.end()) return names;
    const std::string& text = it->second;
    for (size_t pos = 0; pos < text.size();) {
        size_t end = text.find(' ', pos);
        if (end == std::string::npos) end = text.size();
        if (end > pos) names.push_back(text.substr(pos, end - pos));
        pos = end + 1;
    }
    return names;
}

std::string format_queue(const std::vector<std::string>& names) {
    std::string out;
    for (const auto& name : names) out += (out.empty() ? "" : " ") + name;
    return out;
}

bool is_preload(const Model& model, const Qube& disp) {
    if (disp.klass != "DispVM") return false;
    if (feature_true(disp, kPreloadInProgress)) return true;
    const Qube* tpl = model.find(model.value_text(&disp, "template"));
    if (!tpl) return false;
    auto queue = preload_queue(*tpl);
    return std::find(queue.begin(), queue.end(), disp.name) != queue.end();
}

long long preload_max(const Model& model, const Qube& tpl) {
    auto number = [](const std::string& text) -> long long {
        return !text.empty() && all_digits(text) && text.size() < 10 ? std::stoll(text) : 0;
    };
    const Qube& dom0 = model.admin_vm();
    auto global = dom0.features.find(std::string(kPreloadMax));
    if (global != dom0.features.end() && model.value_text(nullptr, "default_dispvm") == tpl.name)
        return number(global->second);
    auto own = tpl.features.find(std::string(kPreloadMax));
    return own == tpl.features.end() ? 0 : number(own->second);
}

long long preload_threshold_mib(const Model& model) {
    const Qube& dom0 = model.admin_vm();
    auto it = dom0.features.find(std::string(kPreloadThreshold));
    if (it == dom0.features.end() || it->second.empty() || !all_digits(it->second) || it->second.size() > 12)
        return 0;
    return std::stoll(it->second);
}

double preload_delay(const Model& model, const Qube& tpl) {
    auto value = model.feature_check_with(tpl, kPreloadDelay, false, false, true);
    if (!value) return 3.0;
    if (value->empty() || !python_float(*value)) return 0.0;
    return std::strtod(value->c_str(), nullptr);
}

long long preload_fill_count(long long max, size_t queued, std::optional<long long> available_mib,
                             long long threshold_mib, long long memory_mib) {
    long long want = max - static_cast<long long>(queued);
    if (want <= 0) return 0;
    if (!available_mib) return want;
    long long usable = std::max<long long>(0, *available_mib - threshold_mib);
    if (memory_mib <= 0) return want;
    return std::min(want, usable / memory_mib);
}

std::optional<long long> mem_available_mib(const std::filesystem::path& meminfo) {
    std::ifstream in(meminfo);
    std::string key;
    long long kib = 0;
    std::string unit;
    while (in >> key >> kib) {
        std::getline(in, unit);
        if (key == "MemAvailable:") return kib / 1024;
    }
    return std::nullopt;
}

bool ignored_for_outdated(std::string_view property) { return ignored_properties().count(property) > 0; }

std::vector<std::string> outdated_properties(const Model& model, const Qube& disp, const Qube& tpl) {
    std::vector<std::string> differ;
    const auto& tpl_props = model.properties_of(tpl);
    for (const auto& def : model.properties_of(disp)) {
        if (ignored_properties().count(def.name) || !find_property(tpl_props, def.name)) continue;
        if (model.value_text(&disp, def.name) != model.value_text(&tpl, def.name)) differ.push_back(def.name);
    }
    return differ;
}

}  // namespace aerie::admin
