#include "admin/model.hpp"

#include <cstdio>
#include <set>

#include "admin/api_error.hpp"
#include "admin/py_text.hpp"

namespace aerie::admin {

namespace {

Qube make_admin_vm() {
    Qube dom0;
    dom0.klass = "AdminVM";
    dom0.name = "dom0";
    dom0.uuid = std::string(kAdminVmUuid);
    dom0.qid = 0;
    dom0.power_state = "Running";
    return dom0;
}

bool is_ascii(std::string_view text) {
    for (unsigned char c : text)
        if (c >= 0x80) return false;
    return true;
}

}  // namespace

Model::Model() { add(make_admin_vm()); }

void Model::load(const StoredState& state) {
    by_name_.clear();
    by_uuid_.clear();
    globals_ = state.global_properties;
    labels_ = LabelSet();
    for (const auto& label : state.custom_labels) labels_.restore(label);
    bool have_admin = false;
    for (const auto& stored : state.qubes) {
        Qube qube;
        qube.klass = stored.klass;
        qube.name = stored.name;
        qube.uuid = stored.uuid;
        qube.qid = stored.qid;
        qube.properties = stored.properties;
        qube.features = stored.features;
        qube.tags = stored.tags;
        qube.notes = stored.notes;
        if (qube.is_admin()) {
            have_admin = true;
            qube.power_state = "Running";
        }
        if (qube.is_remote()) qube.power_state = "Running";
        add(std::move(qube));
    }
    if (!have_admin) add(make_admin_vm());
}

const Qube* Model::find(std::string_view key) const { return const_cast<Model*>(this)->find(key); }

Qube* Model::find(std::string_view key) {
    if (key.substr(0, 5) == "uuid:") {
        auto it = by_uuid_.find(key.substr(5));
        return it == by_uuid_.end() ? nullptr : it->second;
    }
    auto it = by_name_.find(key);
    return it == by_name_.end() ? nullptr : it->second.get();
}

std::vector<const Qube*> Model::qubes_by_name() const {
    std::vector<const Qube*> out;
    out.reserve(by_name_.size());
    for (const auto& [name, qube] : by_name_) out.push_back(qube.get());
    return out;
}

int Model::next_free_qid() const {
    std::set<int> used;
    for (const auto& [name, qube] : by_name_) used.insert(qube->qid);
    for (int qid = 1; qid <= kMaxQid; ++qid)
        if (!used.count(qid)) return qid;
    return 0;
}

void Model::add(Qube qube) {
    auto owned = std::make_unique<Qube>(std::move(qube));
    by_uuid_[owned->uuid] = owned.get();
    std::string name = owned->name;
    by_name_[name] = std::move(owned);
}

void Model::remove(std::string_view name) {
    auto it = by_name_.find(name);
    if (it == by_name_.end()) return;
    by_uuid_.erase(it->second->uuid);
    by_name_.erase(it);
}

std::vector<std::pair<const Qube*, std::string>> Model::explicit_references(std::string_view name) const {
    std::vector<std::pair<const Qube*, std::string>> refs;
    for (const auto& [qname, qube] : by_name_) {
        for (const auto& def : properties_of(*qube)) {
            if (def.type != PropType::Vm) continue;
            auto it = qube->properties.find(def.name);
            if (it != qube->properties.end() && it->second == name) refs.emplace_back(qube.get(), def.name);
        }
    }
    for (const auto& def : global_properties()) {
        auto it = globals_.find(def.name);
        if (def.type == PropType::Vm && it != globals_.end() && it->second == name) refs.emplace_back(nullptr, def.name);
    }
    return refs;
}

void Model::rename(std::string_view old_name, const std::string& new_name) {
    auto refs = explicit_references(old_name);
    auto it = by_name_.find(old_name);
    if (it == by_name_.end()) return;
    auto owned = std::move(it->second);
    by_name_.erase(it);
    owned->name = new_name;
    by_name_[new_name] = std::move(owned);
    for (const auto& [holder, property] : refs) {
        if (holder)
            const_cast<Qube*>(holder)->properties[property] = new_name;
        else
            globals_[property] = new_name;
    }
}

const std::vector<PropertyDef>& Model::properties_of(const Qube& qube) const {
    static const std::vector<PropertyDef> empty;
    const auto* list = class_properties(qube.klass);
    return list ? *list : empty;
}

PropertyValue Model::get(const Qube* qube, const PropertyDef& def) const {
    if (qube) {
        if (def.name == "name") return {true, false, qube->name};
        if (def.name == "qid") return {true, false, std::to_string(qube->qid)};
        if (def.name == "uuid") return {true, false, qube->uuid};
        auto it = qube->properties.find(def.name);
        if (it != qube->properties.end()) return {true, false, it->second};
    } else {
        auto it = globals_.find(def.name);
        if (it != globals_.end()) return {true, false, it->second};
    }
    auto value = default_of(qube, def);
    if (!value) return {false, true, ""};
    return {true, true, *value};
}

namespace {

std::optional<std::string> apply_rule(const Model& model, const Qube* qube, const PropertyDef& def,
                                      const DefaultRule& rule, int depth) {
    switch (rule.kind) {
        case DefaultRule::Kind::None: return std::nullopt;
        case DefaultRule::Kind::Const: return rule.value;
        case DefaultRule::Kind::Computed: return rule.compute(model, qube);
        case DefaultRule::Kind::Global: {
            const PropertyDef* global = find_property(global_properties(), rule.value);
            if (!global) return std::nullopt;
            auto value = model.get(nullptr, *global);
            return value.has_value ? std::optional(value.text) : std::nullopt;
        }
        case DefaultRule::Kind::TemplateOr: {
            // Template chains are short; the depth bound only guards a corrupt store.
            const Qube* tpl = qube && qube->has_template() && depth < 8 ? model.find(model.value_text(qube, "template"))
                                                                        : nullptr;
            if (tpl && tpl != qube) {
                const PropertyDef* tdef = find_property(model.properties_of(*tpl), def.name);
                if (tdef) {
                    auto value = model.get(tpl, *tdef);
                    if (value.has_value) return value.text;
                }
            }
            return apply_rule(model, qube, def, *rule.fallback, depth + 1);
        }
    }
    return std::nullopt;
}

}  // namespace

std::optional<std::string> Model::default_of(const Qube* qube, const PropertyDef& def) const {
    return apply_rule(*this, qube, def, def.default_rule, 0);
}

std::string Model::value_text(const Qube* qube, std::string_view property) const {
    const auto& list = qube ? properties_of(*qube) : global_properties();
    const PropertyDef* def = find_property(list, property);
    return def ? get(qube, *def).text : std::string();
}

// qubes.property.sanitize and the setters of R4.3, with their exceptions:
// QubesValueError / QubesPropertyValueError are answered, the rest closes.
std::string Model::sanitize(const Qube* qube, const PropertyDef& def, std::string_view raw) const {
    // Qubes' stateless properties (property.forbidden as their setter).
    if (qube && def.name == "start_time")
        throw property_value_error("property 'start_time' on " + qube->klass + " instance cannot be set");
    if (!def.writable) throw protocol_error("property " + def.name + " is read-only");
    if (qube && qube->is_admin() && def.name == "name")
        throw property_value_error("property 'name' on AdminVM instance cannot be set");
    if (!is_ascii(raw)) throw value_error(def.type == PropType::Vm ? "" : "Non-ASCII bytes in property value");
    std::string value(raw);
    switch (def.type) {
        case PropType::Bool: {
            auto b = parse_bool(value);
            if (!b) throw value_error("Invalid literal for boolean property: " + py_repr(value));
            value = *b ? "True" : "False";
            break;
        }
        case PropType::Int: {
            auto n = parse_int(value);
            if (!n) throw value_error("Failed to parse property value as int");
            value = std::to_string(*n);
            break;
        }
        case PropType::Label: {
            for (unsigned char c : value)
                if ((c < 0x20 || c > 0x7e) && !(c >= '\t' && c <= '\r'))
                    throw value_error("Invalid characters in property value");
            const Label* label = labels_.find(value);
            if (!label) throw qubes_error("QubesLabelNotFoundError", "Label does not exist: " + value);
            value = label->name;
            break;
        }
        case PropType::Vm: {
            // Only the empty string is None (qubes.vm.VMProperty): "None"
            // is a valid qube name. Anything else must be a qube name.
            if (value.empty()) {
                if (!def.allow_none)
                    throw property_value_error("Invalid value None for property " + py_repr(def.name) + " of " +
                                               (qube ? qube->name : std::string("Qubes")));
                break;
            }
            if (value.substr(0, 5) != "uuid:") {
                if (auto bad = qube_name_error(value); !bad.type.empty()) throw qubes_error(bad.type, bad.message);
            }
            const Qube* target = find(value);
            if (!target) throw property_value_error("Can't set " + def.name + " to non-existing qube " + value);
            value = target->name;
            // Aerie's own rule (Qubes refuses most of these through the checks).
            if (target == qube && def.name != "default_dispvm" && def.name != "template" && def.name != "netvm")
                throw property_value_error(def.name + " cannot point to the qube itself");
            break;
        }
        case PropType::Str:
            // qubes.property.sanitize: string.printable only.
            for (unsigned char c : value) {
                if ((c < 0x20 || c > 0x7e) && c != '\t' && c != '\n' && c != '\r' && c != '\v' && c != '\f')
                    throw value_error("Invalid characters in property value");
            }
            if (def.name == "name") {
                if (auto bad = qube_name_error(value, "name"); !bad.type.empty()) throw qubes_error(bad.type, bad.message);
            }
            break;
    }
    if (def.check) {
        if (auto refusal = def.check(*this, qube, value)) {
            if (refusal->type.empty()) throw protocol_error(refusal->message);
            throw qubes_error(refusal->type, refusal->message);
        }
    }
    return value;
}

void Model::set(Qube* qube, const std::string& property, const std::string& value) {
    if (qube)
        qube->properties[property] = value;
    else
        globals_[property] = value;
}

void Model::reset(Qube* qube, const std::string& property) {
    if (qube)
        qube->properties.erase(property);
    else
        globals_.erase(property);
}

std::vector<std::string> Model::dependants(const Qube& target) const {
    std::vector<std::string> out;
    for (const auto& [name, qube] : by_name_) {
        if (qube.get() == &target) continue;  // a qube may reference itself
        for (const auto& def : properties_of(*qube)) {
            if (def.type == PropType::Vm && get(qube.get(), def).text == target.name)
                out.push_back(qube->name + "." + def.name);
        }
    }
    for (const auto& def : global_properties()) {
        if (def.type == PropType::Vm && get(nullptr, def).text == target.name) out.push_back("global." + def.name);
    }
    return out;
}

std::optional<std::string> Model::feature_check_with(const Qube& qube, std::string_view feature,
                                                     bool template_chain, bool netvm_chain, bool with_admin_vm) const {
    auto own = [&](const Qube* q) -> std::optional<std::string> {
        auto it = q->features.find(std::string(feature));
        return it == q->features.end() ? std::nullopt : std::optional(it->second);
    };
    if (auto v = own(&qube)) return v;
    const char* link = template_chain ? "template" : netvm_chain ? "netvm" : nullptr;
    if (link) {
        const Qube* hop = &qube;
        for (int depth = 0; depth < 64; ++depth) {
            if (std::string_view(link) == "template" && !hop->has_template()) break;
            hop = find(value_text(hop, link));
            if (!hop) break;
            if (auto v = own(hop)) return v;
        }
    }
    if (with_admin_vm) return own(&admin_vm());
    return std::nullopt;
}

std::vector<std::string> Model::template_chain(const Qube& qube) const {
    std::vector<std::string> chain;
    const Qube* hop = &qube;
    while (hop->has_template() && chain.size() < 4) {
        hop = find(value_text(hop, "template"));
        if (!hop) break;
        chain.push_back(hop->uuid);
    }
    return chain;
}

bool Model::label_in_use(int index) const {
    auto it = labels_.all().find(index);
    if (it == labels_.all().end()) return false;
    for (const auto& [name, qube] : by_name_)
        if (value_text(qube.get(), "label") == it->second.name) return true;
    return false;
}

std::string Model::icon(const Qube& qube) const {
    std::string label = value_text(&qube, "label");
    if (qube.is_admin()) return "adminvm-" + label;
    if (qube.klass == "TemplateVM") return "templatevm-" + label;
    if (qube.klass == "StandaloneVM") return "standalonevm-" + label;
    if (qube.klass == "DispVM") return "dispvm-" + label;
    if (qube.klass == "RemoteVM") return "remotevm-" + label;
    // qubes.vm.qubesvm.QubesVM.icon: the "servicevm" feature (non-empty) marks a service qube.
    if (auto it = qube.features.find("servicevm"); it != qube.features.end() && !it->second.empty())
        return "servicevm-" + label;
    return "appvm-" + label;
}

namespace {

// JSON string literal (qube names, tags and labels are plain ASCII by their
// rules, but features and other text are escaped all the same).
void append_json_string(std::string& out, std::string_view text) {
    out += '"';
    for (char c : text) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\t': out += "\\t"; break;
            case '\r': out += "\\r"; break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) {
                    char buf[8];
                    std::snprintf(buf, sizeof buf, "\\u%04x", c);
                    out += buf;
                } else {
                    out += c;
                }
        }
    }
    out += '"';
}

void append_name_or_null(std::string& out, const std::string& text) {
    if (text.empty())
        out += "null";
    else
        append_json_string(out, text);
}

}  // namespace

// Written directly rather than through a JSON tree: with 1,000 qubes this is
// asked for on every policy decision.
std::string Model::system_info_json() const {
    std::string out;
    out.reserve(by_name_.size() * 360 + 16);
    out += "{\"domains\":{";
    bool first = true;
    for (const auto& [name, qube] : by_name_) {
        const Qube* q = qube.get();
        if (!first) out += ',';
        first = false;
        append_json_string(out, name);
        out += ":{\"tags\":[";
        bool first_tag = true;
        for (const auto& tag : q->tags) {
            if (!first_tag) out += ',';
            first_tag = false;
            append_json_string(out, tag);
        }
        out += "],\"type\":";
        append_json_string(out, q->klass);
        out += ",\"template_for_dispvms\":";
        out += value_text(q, "template_for_dispvms") == "True" ? "true" : "false";
        out += ",\"default_dispvm\":";
        append_name_or_null(out, value_text(q, "default_dispvm"));
        out += ",\"power_state\":";
        append_json_string(out, q->power_state);
        out += ",\"uuid\":";
        append_json_string(out, q->uuid);
        out += ",\"icon\":";
        append_json_string(out, icon(*q));
        out += ",\"label\":";
        append_json_string(out, value_text(q, "label"));
        out += ",\"guivm\":";
        append_name_or_null(out, value_text(q, "guivm"));
        auto internal = q->features.find("internal");
        out += ",\"internal\":";
        out += internal != q->features.end() && !internal->second.empty() ? "true" : "false";
        out += ",\"relayvm\":";
        append_name_or_null(out, value_text(q, "relayvm"));
        out += ",\"transport_rpc\":";
        append_name_or_null(out, value_text(q, "transport_rpc"));
        out += '}';
    }
    out += "}}";
    return out;
}

}  // namespace aerie::admin
