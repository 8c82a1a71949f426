// admin.vmclass.List, admin.vm.List, admin.vm.Create.*, admin.vm.Remove.
#include <fmt/format.h>


#include "admin/api_call.hpp"
#include "admin/dispvm_rules.hpp"

namespace aerie::admin {

namespace {

bool label_name_chars_ok(std::string_view name) {
    if (name.empty()) return false;
    bool digits = true;
    for (char c : name) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                  c == '_' || c == '.';
        if (!ok) return false;
        digits = digits && c >= '0' && c <= '9';
    }
    return !digits;
}

}  // namespace

std::string AdminApi::vmclass_list(Call& call) {
    Call::enforce(call.dest_is_dom0(), "admin.vmclass.List targets dom0");
    std::string out;
    for (std::string_view klass : kQubeClasses) out += std::string(klass) + "\n";
    return out;
}

std::string AdminApi::vm_list(Call& call) {
    auto line = [](const Qube& q) {
        return q.name + " class=" + q.klass + " state=" + q.power_state + " uuid=" + q.uuid + "\n";
    };
    // A management qube lists what the policy lets it (qubes.ext.admin).
    auto listed = [&](const Qube& q) {
        return !admin_policy_ || call.src->is_admin() ||
               admin_policy_->allows(model_, "admin.vm.List", "+", call.src->name, q.name);
    };
    if (!call.dest_is_dom0()) return listed(*call.dest) ? line(*call.dest) : std::string();
    std::string out;
    for (const Qube* q : model_.qubes_by_name())
        if (listed(*q)) out += line(*q);
    return out;
}

std::string AdminApi::vm_create(Call& call) {
    Call::enforce(call.dest_is_dom0(), "admin.vm.Create targets dom0");
    const std::string& method = call.request.method;
    bool in_pool = method.rfind("admin.vm.CreateInPool.", 0) == 0;
    std::string klass = method.substr(method.rfind('.') + 1);
    Call::enforce(klass != "AdminVM", "cannot create an AdminVM");

    Qube qube;
    qube.klass = klass;
    if (!call.arg().empty()) {
        if (!qube.has_template()) throw value_error(klass + " cannot be based on template");
        const Qube* tpl = model_.find(call.arg());
        if (!tpl) throw qubes_error("QubesVMNotFoundError", "No such domain: '" + call.arg() + "'");
        qube.properties["template"] = tpl->name;
    }

    std::string name, label;
    bool pool_seen = false, per_volume_pool = false;
    std::set<std::string> seen;
    std::string_view payload = call.payload();
    Call::enforce(!payload.empty(), "Missing name or label");
    size_t pos = 0;
    while (pos <= payload.size()) {
        size_t end = payload.find(' ', pos);
        if (end == std::string_view::npos) end = payload.size();
        std::string_view param = payload.substr(pos, end - pos);
        pos = end + 1;
        size_t eq = param.find('=');
        Call::enforce(eq != std::string_view::npos, "parameter without '='");
        std::string key(param.substr(0, eq)), value(param.substr(eq + 1));
        Call::enforce(seen.insert(key).second, "duplicated parameters");
        if (key == "name") {
            if (auto bad = qube_name_error(value); !bad.type.empty()) throw qubes_error(bad.type, bad.message);
            name = value;
        } else if (key == "label") {
            Call::enforce(label_name_chars_ok(value), "invalid label name");
            const Label* found = model_.labels().find(value);
            // Qubes R4.3: get_label() raises QubesLabelNotFoundError, which is answered.
            if (!found) throw qubes_error("QubesLabelNotFoundError", "Label does not exist: " + value);
            label = found->name;
        } else if (in_pool && (key == "pool" || key.rfind("pool:", 0) == 0)) {
            static const std::set<std::string> volumes = {"root", "private", "volatile", "kernel"};
            if (key != "pool") Call::enforce(volumes.count(key.substr(5)) > 0, "unknown volume " + key.substr(5));
            // One file pool exists so far; it answers to both names. Any
            // other is unknown (qubes.app.Qubes.get_pool).
            if (value != "varlibqubes" && value != "default")
                throw qubes_error("QubesException", "Unknown storage pool " + value);
            (key == "pool" ? pool_seen : per_volume_pool) = true;
        } else {
            Call::enforce(false, "Invalid param name");
        }
    }
    Call::enforce(!name.empty() && !label.empty(), "Missing name or label");
    Call::enforce(!(pool_seen && per_volume_pool), "Only one of 'pool=' and 'pool:volume=' can be used");
    if (model_.find(name)) throw value_error("VM " + name + " already exists");

    qube.name = name;
    qube.properties["label"] = label;
    qube.qid = model_.next_free_qid();
    if (qube.qid == 0) throw qubes_error("QubesException", "No free QID to allocate");
    qube.uuid = new_uuid();
    if (qube.is_remote()) qube.power_state = "Running";
    if (qube.has_template()) {
        // Without an argument the template is the global default (the
        // default disposable template for a DispVM), set explicitly as
        // qubes.app.Qubes.add_new_vm does: a later change of the default
        // does not move the qube.
        if (!qube.properties.count("template")) {
            std::string tpl = model_.value_text(nullptr, qube.klass == "DispVM" ? "default_dispvm" : "default_template");
            if (tpl.empty()) throw value_error("Template for the qube not specified, nor default template set.");
            qube.properties["template"] = tpl;
        }
        const std::string& tpl = qube.properties["template"];
        if (qube.klass == "DispVM" && model_.value_text(model_.find(tpl), "template_for_dispvms") != "True")
            throw value_error("template for disposable (" + tpl +
                              ") needs to be an AppVM with template_for_dispvms=True");  // qubes.vm.dispvm
        const PropertyDef* def = find_property(*class_properties(klass), "template");
        model_.sanitize(&qube, *def, tpl);  // the class's rules
    }
    if (qube.klass == "DispVM") {
        inherit_from_template(qube, *model_.find(qube.properties["template"]));
    }
    const std::string tag = "created-by-" + call.src->name;
    qube.tags.insert(tag);

    Qube& added = registry_.add_qube(std::move(qube));
    // As qubesd: after domain-add, the tag its admin.vm.Create adds and the
    // hooks of create_on_disk.
    publish(&added, "domain-tag-add:" + tag, {{"tag", tag}});
    publish(&added, "domain-create-on-disk");
    return {};
}

std::string AdminApi::vm_remove(Call& call) {
    Qube& vm = *call.dest;
    if (vm.is_admin()) throw qubes_error("QubesVMInUseError", "'dom0' cannot be removed");
    if (!vm.is_halted() && !vm.is_remote())
        throw qubes_error("QubesVMNotHaltedError", "Domain is not powered off: '" + vm.name + "'");
    if (model_.value_text(&vm, "installed_by_rpm") == "True")
        throw qubes_error("QubesVMInUseError", "VM installed by package manager: " + vm.name);
    // qubesd's domain-pre-delete goes out before its handler finds the
    // qubes that still use this one.
    publish(nullptr, "domain-pre-delete", {{"vm", vm.name}});
    auto users = model_.dependants(vm);
    if (!users.empty()) {
        // Named, but not endlessly: a template of a thousand qubes would say it all.
        constexpr size_t kShown = 10;
        std::string list;
        for (size_t i = 0; i < users.size() && i < kShown; ++i) list += (list.empty() ? "" : ", ") + users[i];
        if (users.size() > kShown) list += " and " + std::to_string(users.size() - kShown) + " more";
        throw qubes_error("QubesVMInUseError", "Domain is in use: '" + vm.name + "'; used by: " + list);
    }
    registry_.remove_qube(vm.name);
    return {};
}

}  // namespace aerie::admin
