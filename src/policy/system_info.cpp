#include "policy/system_info.hpp"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "policy/token.hpp"

namespace aerie::policy {

using nlohmann::json;

bool Domain::has_tag(std::string_view tag) const {
    return std::find(tags.begin(), tags.end(), tag) != tags.end();
}

SystemInfo::SystemInfo() {
    Domain dom0;
    dom0.name = "dom0";
    dom0.type = "AdminVM";
    dom0.uuid = std::string(kDom0Uuid);
    dom0.power_state = "Running";
    dom0.icon = "adminvm-black";
    dom0.label = "black";
    add(std::move(dom0));
}

void SystemInfo::add(Domain domain) {
    if (auto old = domains_.find(domain.name); old != domains_.end()) {
        by_uuid_.erase(old->second.uuid);
    }
    if (!domain.uuid.empty()) by_uuid_[domain.uuid] = domain.name;
    std::string name = domain.name;
    domains_.insert_or_assign(std::move(name), std::move(domain));
}

const Domain* SystemInfo::find(std::string_view name_or_uuid) const {
    std::string_view uuid;
    if (is_uuid_designator(name_or_uuid, &uuid)) {
        auto it = by_uuid_.find(std::string(uuid));
        if (it == by_uuid_.end()) return nullptr;
        return &domains_.find(it->second)->second;
    }
    auto it = domains_.find(name_or_uuid);
    return it == domains_.end() ? nullptr : &it->second;
}

const Domain& SystemInfo::dom0() const { return domains_.find("dom0")->second; }

namespace {

std::string field_path(const std::string& name, const char* key) {
    return "domains." + name + "." + key;
}

std::string get_string(const json& obj, const std::string& name, const char* key,
                       const std::string& fallback = {}) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return fallback;
    if (!it->is_string()) throw SystemInfoError(field_path(name, key) + ": expected a string");
    return it->get<std::string>();
}

std::optional<std::string> get_optional(const json& obj, const std::string& name,
                                        const char* key) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return std::nullopt;
    if (!it->is_string()) throw SystemInfoError(field_path(name, key) + ": expected a string");
    auto value = it->get<std::string>();
    if (value.empty()) return std::nullopt;
    return value;
}

bool get_bool(const json& obj, const std::string& name, const char* key) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) return false;
    if (!it->is_boolean()) throw SystemInfoError(field_path(name, key) + ": expected true or false");
    return it->get<bool>();
}

}  // namespace

SystemInfo SystemInfo::from_json(std::string_view json_text) {
    json doc = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
    if (doc.is_discarded()) throw SystemInfoError("system info is not valid JSON");
    if (!doc.is_object() || !doc.contains("domains") || !doc["domains"].is_object())
        throw SystemInfoError("system info has no \"domains\" object");

    SystemInfo info;
    for (const auto& [name, obj] : doc["domains"].items()) {
        if (name.empty()) throw SystemInfoError("domains: empty qube name");
        if (!obj.is_object()) throw SystemInfoError("domains." + name + ": expected an object");
        Domain d;
        d.name = name;
        d.type = get_string(obj, name, "type");
        if (d.type.empty()) throw SystemInfoError(field_path(name, "type") + ": missing");
        if (auto tags = obj.find("tags"); tags != obj.end() && !tags->is_null()) {
            if (!tags->is_array()) throw SystemInfoError(field_path(name, "tags") + ": expected a list");
            for (const auto& tag : *tags) {
                if (!tag.is_string())
                    throw SystemInfoError(field_path(name, "tags") + ": expected strings");
                d.tags.push_back(tag.get<std::string>());
            }
        }
        d.uuid = get_string(obj, name, "uuid");
        if (d.uuid.substr(0, 5) == "uuid:") d.uuid = d.uuid.substr(5);
        d.power_state = get_string(obj, name, "power_state", "Halted");
        d.default_dispvm = get_optional(obj, name, "default_dispvm");
        d.template_for_dispvms = get_bool(obj, name, "template_for_dispvms");
        d.internal = get_bool(obj, name, "internal");
        d.icon = get_string(obj, name, "icon");
        d.label = get_string(obj, name, "label");
        d.guivm = get_optional(obj, name, "guivm");
        d.relayvm = get_optional(obj, name, "relayvm");
        d.transport_rpc = get_optional(obj, name, "transport_rpc");
        if (d.type == "AdminVM" && name == "dom0" && d.uuid.empty()) d.uuid = std::string(kDom0Uuid);
        info.add(std::move(d));
    }
    return info;
}

std::string SystemInfo::to_json() const {
    json domains = json::object();
    for (const auto& [name, d] : domains_) {
        json obj;
        obj["type"] = d.type;
        obj["tags"] = d.tags;
        obj["uuid"] = d.uuid;
        obj["power_state"] = d.power_state;
        obj["default_dispvm"] = d.default_dispvm ? json(*d.default_dispvm) : json(nullptr);
        obj["template_for_dispvms"] = d.template_for_dispvms;
        obj["internal"] = d.internal;
        obj["icon"] = d.icon;
        obj["label"] = d.label;
        obj["guivm"] = d.guivm ? json(*d.guivm) : json(nullptr);
        obj["relayvm"] = d.relayvm ? json(*d.relayvm) : json(nullptr);
        obj["transport_rpc"] = d.transport_rpc ? json(*d.transport_rpc) : json(nullptr);
        domains[name] = std::move(obj);
    }
    return json{{"domains", domains}}.dump();
}

}  // namespace aerie::policy
