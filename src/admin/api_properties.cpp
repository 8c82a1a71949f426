// admin.vm.property.* and admin.property.* (the global holder).
#include "admin/api_call.hpp"

namespace aerie::admin {

namespace {

bool is_global(const AdminApi::Call& call) { return call.request.method.rfind("admin.property.", 0) == 0; }

// The holder of the properties: nullptr for the globals.
Qube* holder(AdminApi::Call& call) {
    if (!is_global(call)) return call.dest;
    AdminApi::Call::enforce(call.dest_is_dom0(), "global properties live on dom0");
    return nullptr;
}

const std::vector<PropertyDef>& list_of(const Model& model, const Qube* qube) {
    return qube ? model.properties_of(*qube) : global_properties();
}

const PropertyDef& lookup(const Model& model, const Qube* qube, const std::string& name) {
    const PropertyDef* def = find_property(list_of(model, qube), name);
    if (!def)
        throw qubes_error("QubesNoSuchPropertyError",
                          "Invalid property '" + name + "' of " + (qube ? qube->name : std::string("Qubes")));
    return *def;
}

std::string serialize(const Model& model, const Qube* qube, const PropertyDef& def) {
    PropertyValue value = model.get(qube, def);
    std::string type(type_name(def.type));
    if (!value.has_value) return "default=True type=" + type + " ";
    return std::string("default=") + (value.is_default ? "True" : "False") + " type=" + type + " " + value.text;
}

// The "oldvalue" of a property-set/-reset event, if it has one: a qube
// property that may be None and has no value reads as None in qubesd.
std::optional<std::string> old_value(const PropertyDef& def, const PropertyValue& old) {
    if (old.has_value) return event_value(def, old.text);
    if (def.type == PropType::Vm && def.allow_none) return std::string("None");
    return std::nullopt;
}

std::string escape_line(const std::string& text) {
    std::string out;
    for (char c : text) {
        if (c == '\\')
            out += "\\\\";
        else if (c == '\n')
            out += "\\n";
        else
            out += c;
    }
    return out;
}

}  // namespace

std::string AdminApi::property_list(Call& call) {
    std::string out;
    for (const auto& def : list_of(model_, holder(call))) out += def.name + "\n";
    return out;
}

std::string AdminApi::property_get(Call& call) {
    Qube* qube = holder(call);
    return serialize(model_, qube, lookup(model_, qube, call.arg()));
}

std::string AdminApi::property_get_all(Call& call) {
    Qube* qube = holder(call);
    std::string out;
    for (const auto& def : list_of(model_, qube)) out += def.name + " " + escape_line(serialize(model_, qube, def)) + "\n";
    return out;
}

std::string AdminApi::property_get_default(Call& call) {
    Qube* qube = holder(call);
    const PropertyDef& def = lookup(model_, qube, call.arg());
    auto value = model_.default_of(qube, def);
    // A qube property that may be None has None as its default in qubesd.
    if (!value && def.type == PropType::Vm && def.allow_none) value = std::string();
    if (!value) return {};
    return "type=" + std::string(type_name(def.type)) + " " + *value;
}

std::string AdminApi::property_help(Call& call) {
    Qube* qube = holder(call);
    return lookup(model_, qube, call.arg()).help;
}

std::string AdminApi::property_set(Call& call) {
    Qube* qube = holder(call);
    const PropertyDef& def = lookup(model_, qube, call.arg());
    std::string value = model_.sanitize(qube, def, call.payload());
    if (qube && def.name == "name") return rename(call, value);
    if (qube && def.name == "template" && !qube->is_halted())
        throw qubes_error("QubesVMNotHaltedError", "Cannot change template while qube is running");

    PropertyValue old = model_.get(qube, def);
    std::vector<std::pair<std::string, std::string>> kwargs = {{"name", def.name},
                                                               {"newvalue", event_value(def, value)}};
    if (auto oldvalue = old_value(def, old)) kwargs.emplace_back("oldvalue", *oldvalue);
    publish(qube, "property-pre-set:" + def.name, kwargs);
    Store::Transaction txn(store_);
    if (qube)
        txn.set_property(qube->uuid, def.name, value);
    else
        txn.set_global(def.name, value);
    txn.commit();
    model_.set(qube, def.name, value);
    // qubes.vm.qubesvm's handlers of property-set:label and
    // :template_for_dispvms (run before the event reaches the streams): the
    // icon follows them.
    if (qube && (def.name == "label" || def.name == "template_for_dispvms") &&
        find_property(list_of(model_, qube), "icon"))
        publish(qube, "property-reset:icon", {{"name", "icon"}});
    publish(qube, "property-set:" + def.name, std::move(kwargs));
    return {};
}

std::string AdminApi::property_reset(Call& call) {
    Qube* qube = holder(call);
    const PropertyDef& def = lookup(model_, qube, call.arg());
    Call::enforce(def.writable && def.name != "name" && def.name != "label", "property " + def.name + " cannot be reset");
    // As qubesd: property-pre-reset (whose handlers may refuse), the
    // deprecated property-pre-del, the change, property-reset, property-del.
    PropertyValue old = model_.get(qube, def);
    std::vector<std::pair<std::string, std::string>> kwargs = {{"name", def.name}};
    if (auto oldvalue = old_value(def, old)) kwargs.emplace_back("oldvalue", *oldvalue);
    publish(qube, "property-pre-reset:" + def.name, kwargs);
    // qubes.vm.appvm / qubes.vm.dispvm: property-pre-reset:template.
    if (qube && def.name == "template") {
        std::string fallback = model_.value_text(nullptr, "default_template");
        if (qube->klass == "AppVM" && !fallback.empty())
            throw value_error("Cannot unset template. You can set it to the current default (" + fallback + ") instead");
        throw value_error("Cannot unset template");
    }
    publish(qube, "property-pre-del:" + def.name, kwargs);
    Store::Transaction txn(store_);
    if (qube)
        txn.reset_property(qube->uuid, def.name);
    else
        txn.reset_global(def.name);
    txn.commit();
    model_.reset(qube, def.name);
    publish(qube, "property-reset:" + def.name, kwargs);
    publish(qube, "property-del:" + def.name, std::move(kwargs));
    return {};
}

// Renaming rewrites every property that names the qube, in the same
// transaction as the name itself.
std::string AdminApi::rename(Call& call, const std::string& new_name) {
    Qube& qube = *call.dest;
    if (!qube.is_halted() && !qube.is_remote())
        throw qubes_error("QubesVMNotHaltedError", "Domain is not powered off: '" + qube.name + "'");
    if (new_name == qube.name) return {};
    if (model_.find(new_name))
        throw property_value_error("VM named " + new_name + " already exists");
    std::string old_name = qube.name;
    publish(&qube, "property-pre-set:name",
            {{"name", "name"}, {"newvalue", new_name}, {"oldvalue", old_name}});
    Store::Transaction txn(store_);
    txn.rename_qube(qube.uuid, new_name);
    for (const auto& [holder_qube, property] : model_.explicit_references(old_name)) {
        if (holder_qube)
            txn.set_property(holder_qube->uuid, property, new_name);
        else
            txn.set_global(property, new_name);
    }
    txn.commit();
    model_.rename(old_name, new_name);
    publish(&qube, "property-set:name", {{"name", "name"}, {"newvalue", new_name}, {"oldvalue", old_name}});
    return {};
}

}  // namespace aerie::admin
