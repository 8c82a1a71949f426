#include "admin/properties.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <map>
#include <set>

#include <fmt/format.h>

#include "admin/dispvm_rules.hpp"
#include "admin/model.hpp"
#include "admin/py_text.hpp"

namespace aerie::admin {

std::string_view type_name(PropType type) {
    switch (type) {
        case PropType::Bool: return "bool";
        case PropType::Int: return "int";
        case PropType::Label: return "label";
        case PropType::Vm: return "vm";
        case PropType::Str: break;
    }
    return "str";
}

std::optional<bool> parse_bool(std::string_view text) {
    std::string lc(text);
    std::transform(lc.begin(), lc.end(), lc.begin(), [](unsigned char c) { return std::tolower(c); });
    if (lc == "0" || lc == "no" || lc == "false" || lc == "off") return false;
    if (lc == "1" || lc == "yes" || lc == "true" || lc == "on") return true;
    return std::nullopt;
}

std::optional<long long> parse_int(std::string_view text) {
    auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
    auto digit = [](char c) { return c >= '0' && c <= '9'; };
    while (!text.empty() && space(text.front())) text.remove_prefix(1);
    while (!text.empty() && space(text.back())) text.remove_suffix(1);
    std::string digits;
    if (!text.empty() && (text.front() == '+' || text.front() == '-')) {
        if (text.front() == '-') digits.push_back('-');
        text.remove_prefix(1);
    }
    // Python's int(): digits, with single underscores between them.
    for (size_t i = 0; i < text.size(); ++i) {
        if (digit(text[i])) {
            digits.push_back(text[i]);
        } else if (text[i] != '_' || i == 0 || i + 1 == text.size() || !digit(text[i - 1]) || !digit(text[i + 1])) {
            return std::nullopt;
        }
    }
    if (digits.empty() || digits == "-") return std::nullopt;
    long long value = 0;
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value);
    if (ec != std::errc() || end != digits.data() + digits.size()) return std::nullopt;
    return value;
}

namespace {

DefaultRule none() { return {}; }
DefaultRule constant(std::string value) {
    DefaultRule r;
    r.kind = DefaultRule::Kind::Const;
    r.value = std::move(value);
    return r;
}
DefaultRule global(std::string name) {
    DefaultRule r;
    r.kind = DefaultRule::Kind::Global;
    r.value = std::move(name);
    return r;
}
DefaultRule template_or(DefaultRule fallback) {
    DefaultRule r;
    r.kind = DefaultRule::Kind::TemplateOr;
    r.fallback = std::make_shared<DefaultRule>(std::move(fallback));
    return r;
}
DefaultRule computed(std::function<std::optional<std::string>(const Model&, const Qube*)> fn) {
    DefaultRule r;
    r.kind = DefaultRule::Kind::Computed;
    r.compute = std::move(fn);
    return r;
}

using Check = std::optional<Refusal>;

Check property_refusal(std::string message) { return Refusal{"QubesPropertyValueError", std::move(message)}; }
Check value_refusal(std::string message) { return Refusal{"QubesValueError", std::move(message)}; }
// qubes.vm.VMProperty's class check.
Check wrong_class(const Qube& target, std::string_view wanted) {
    return property_refusal("wrong VM class: domains[" + py_repr(target.name) + "] is of type " + target.klass +
                            " and not " + std::string(wanted));
}

// qubes.vm.qubesvm._setter_positive_int / _setter_non_negative_int.
decltype(PropertyDef::check) positive(std::string name) {
    return [name](const Model&, const Qube*, const std::string& value) -> Check {
        auto n = parse_int(value);
        if (n && *n > 0) return std::nullopt;
        return property_refusal(name + " must be positive");
    };
}
decltype(PropertyDef::check) non_negative(std::string name) {
    return [name](const Model&, const Qube*, const std::string& value) -> Check {
        auto n = parse_int(value);
        if (n && *n >= 0) return std::nullopt;
        return property_refusal(name + " must be positive or zero");
    };
}
Check virt_mode_check(const Model&, const Qube*, const std::string& value) {
    if (value == "hvm" || value == "pv" || value == "pvh") return std::nullopt;
    return property_refusal("Invalid virtualization mode, supported values: hvm, pv, pvh");
}
// Whether following the netvm chain from `start` (itself included) reaches
// `target`. Ends on a loop that does not pass through `target`.
bool netvm_chain_reaches(const Model& model, const Qube* start, const Qube* target) {
    std::set<const Qube*> seen;
    for (const Qube* hop = start; hop && seen.insert(hop).second; hop = model.find(model.value_text(hop, "netvm")))
        if (hop == target) return true;
    return false;
}
// A netvm must provide network and must not create a loop
// (qubes.vm.mix.net._setter_netvm).
Check netvm_check(const Model& model, const Qube* self, const std::string& value) {
    if (value.empty()) return std::nullopt;
    const Qube* target = model.find(value);
    if (!target) return std::nullopt;
    if (model.value_text(target, "provides_network") != "True")
        return value_refusal("The " + value + " qube does not provide network");
    if (self && netvm_chain_reaches(model, target, self)) return value_refusal("Loops in network are unsupported");
    return std::nullopt;
}
// The global default netvm: a network provider, and no qube that follows the
// default may be it or lie behind it (qubes.app._setter_default_netvm).
Check default_netvm_check(const Model& model, const Qube*, const std::string& value) {
    if (value.empty()) return std::nullopt;
    if (auto why = netvm_check(model, nullptr, value)) return why;
    const Qube* target = model.find(value);
    if (!target) return std::nullopt;
    for (const Qube* qube : model.qubes_by_name()) {
        if (qube->properties.count("netvm") || !find_property(model.properties_of(*qube), "netvm")) continue;
        if (netvm_chain_reaches(model, target, qube)) return property_refusal("Network loop on '" + qube->name + "'");
    }
    return std::nullopt;
}
// A qube stays a network provider while qubes use it
// (qubes.vm.mix.net._setter_provides_network).
Check provides_network_check(const Model& model, const Qube* self, const std::string& value) {
    if (!self || value != "False") return std::nullopt;
    for (const Qube* qube : model.qubes_by_name()) {
        if (qube != self && model.value_text(qube, "netvm") == self->name)
            return value_refusal("The qube is still used by other qubes, change theirs 'netvm' first");
    }
    return std::nullopt;
}
Check default_template_check(const Model& model, const Qube*, const std::string& value) {
    const Qube* target = model.find(value);
    if (!target || target->klass == "TemplateVM") return std::nullopt;
    return wrong_class(*target, "TemplateVM");
}
Check template_check(const Model& model, const Qube* self, const std::string& value) {
    const Qube* target = model.find(value);
    if (!target) return std::nullopt;
    if (self && self->klass == "DispVM") {
        if (model.value_text(target, "template_for_dispvms") == "True") return std::nullopt;
        return property_refusal("template for disposable must have template_for_dispvms=True");
    }
    if (target->klass == "TemplateVM") return std::nullopt;
    return wrong_class(*target, "TemplateVM");
}
// Aerie's own rule: a default disposable template must be one.
Check dispvm_template_check(const Model& model, const Qube*, const std::string& value) {
    if (value.empty()) return std::nullopt;
    const Qube* target = model.find(value);
    if (!target || model.value_text(target, "template_for_dispvms") == "True") return std::nullopt;
    return property_refusal("VM " + value + " is not a template for disposables (template_for_dispvms=False)");
}

// Set once (qubes.property write_once: an AttributeError qubesd does not
// answer).
Check dispid_check(const Model&, const Qube* self, const std::string&) {
    if (self && self->properties.count("dispid")) return Refusal{"", "property 'dispid' is write-once and already set"};
    return std::nullopt;
}

PropertyDef prop(std::string name, PropType type, DefaultRule rule, std::string help) {
    PropertyDef def;
    def.name = std::move(name);
    def.type = type;
    def.default_rule = std::move(rule);
    def.help = std::move(help);
    return def;
}
PropertyDef read_only(PropertyDef def) {
    def.writable = false;
    return def;
}
PropertyDef nullable(PropertyDef def) {
    def.allow_none = true;
    return def;
}
PropertyDef checked(PropertyDef def, decltype(PropertyDef::check) check) {
    def.check = std::move(check);
    return def;
}

// name, qid, uuid, label, icon: every class has them.
std::vector<PropertyDef> identity_properties() {
    return {
        prop("name", PropType::Str, none(), "User-specified name of the domain."),
        read_only(prop("qid", PropType::Int, none(), "Internal, persistent identificator of particular domain.")),
        read_only(prop("uuid", PropType::Str, none(), "UUID from libvirt.")),
        prop("label", PropType::Label, none(), "Colourful label assigned to VM. This is where the colour of the padlock is set."),
        read_only(prop("icon", PropType::Str, computed([](const Model& m, const Qube* q) -> std::optional<std::string> {
                           return q ? std::optional(m.icon(*q)) : std::nullopt;
                       }),
                       "freedesktop icon name, suitable for use in :py:meth:`PyQt4.QtGui.QIcon.fromTheme`")),
    };
}

// What every QubesVM (AppVM, TemplateVM, StandaloneVM, DispVM) has.
std::vector<PropertyDef> qubesvm_properties(std::string_view klass) {
    auto list = identity_properties();
    auto add = [&list](PropertyDef def) { list.push_back(std::move(def)); };
    bool dispvm = klass == "DispVM";
    bool updateable = klass == "TemplateVM" || klass == "StandaloneVM";

    add(nullable(checked(prop("netvm", PropType::Vm, dispvm ? template_or(global("default_netvm")) : global("default_netvm"),
                              "VM that provides network connection to this domain. When `None`, machine is disconnected."),
                         netvm_check)));
    add(checked(prop("provides_network", PropType::Bool, constant("False"),
                     "If this domain can act as network provider (formerly known as NetVM or ProxyVM)"),
                provides_network_check));
    // A disposable's default disposable is its own template (qubes.vm.dispvm).
    add(nullable(checked(prop("default_dispvm", PropType::Vm,
                              dispvm ? computed([](const Model& m, const Qube* q) -> std::optional<std::string> {
                                  return q ? m.value_text(q, "template") : std::string();
                              })
                                     : global("default_dispvm"),
                              "Default VM to be used as Disposable VM for service calls."),
                         dispvm_template_check)));
    add(nullable(prop("management_dispvm", PropType::Vm, template_or(global("management_dispvm")),
                      "Default DVM template for Disposable VM for managing this VM.")));
    add(nullable(prop("guivm", PropType::Vm, global("default_guivm"), "VM used for GUI")));
    add(nullable(prop("audiovm", PropType::Vm, global("default_audiovm"), "VM used for Audio")));
    // Qubes' 400 / 4000 / 2 where the host has room; sized to the host by the
    // daemon (backend::qube_size_defaults) so that a usual set of qubes fits.
    add(checked(prop("memory", PropType::Int, template_or(computed([](const Model& m, const Qube*) -> std::optional<std::string> {
                         return std::to_string(m.size_defaults().memory_mib);
                     })),
                     "Memory currently available for this VM."), positive("memory")));
    add(checked(prop("maxmem", PropType::Int, template_or(computed([](const Model& m, const Qube*) -> std::optional<std::string> {
                         return std::to_string(m.size_defaults().maxmem_mib);
                     })),
                     "Maximum amount of memory available for this VM (for the purpose of the memory balancer)."), non_negative("maxmem")));
    add(checked(prop("vcpus", PropType::Int, template_or(computed([](const Model& m, const Qube*) -> std::optional<std::string> {
                         return std::to_string(m.size_defaults().vcpus);
                     })),
                     "Number of virtual CPUs for a qube"), positive("vcpus")));
    add(prop("kernel", PropType::Str, template_or(global("default_kernel")), "Kernel used by this domain."));
    add(prop("kernelopts", PropType::Str, template_or(constant("")), "Kernel command line passed to domain."));
    add(checked(prop("virt_mode", PropType::Str, constant("pvh"), "Virtualisation mode: full virtualisation (\"HVM\"), or paravirtualisation (\"PV\"), or hybrid (\"PVH\")."), virt_mode_check));
    add(checked(prop("qrexec_timeout", PropType::Int, template_or(global("default_qrexec_timeout")), "Time in seconds after which qrexec connection attempt is deemed failed."), positive("qrexec_timeout")));
    add(checked(prop("shutdown_timeout", PropType::Int, template_or(global("default_shutdown_timeout")), "Time in seconds for shutdown of the VM, after which VM may be forcefully powered off."), positive("shutdown_timeout")));
    add(prop("default_user", PropType::Str, template_or(constant("user")), "Default user to start applications as."));
    add(prop("autostart", PropType::Bool, constant("False"), "Setting this to `True` means that VM should be autostarted on dom0 boot."));
    // A disposable is backed up unless it removes itself on shutdown.
    add(prop("include_in_backups", PropType::Bool,
             dispvm ? computed([](const Model& m, const Qube* q) -> std::optional<std::string> {
                 return m.value_text(q, "auto_cleanup") == "True" ? "False" : "True";
             })
                    : constant("True"),
             "If this domain is to be included in default backup."));
    add(prop("debug", PropType::Bool, constant("False"), "Turns on debugging features."));
    add(prop("installed_by_rpm", PropType::Bool, constant("False"), "If this domain's image was installed from package tracked by package manager."));
    add(read_only(prop("updateable", PropType::Bool, constant(updateable ? "True" : "False"), "True if this machine may be updated on its own.")));
    add(read_only(prop("xid", PropType::Int, constant("-1"), "Xen ID or -1 if domain is not running.")));
    add(prop("keyboard_layout", PropType::Str, constant("us++"), "Keyboard layout for this VM"));
    // A stateless property of Qubes: None (empty) unless running.
    add(read_only(prop("start_time", PropType::Str, computed([](const Model&, const Qube* q) -> std::optional<std::string> {
                           if (!q || q->start_time <= 0 || q->is_halted()) return std::string();
                           return fmt::format("{}", q->start_time);
                       }),
                       "Tell when machine was started.")));
    add(prop("backup_timestamp", PropType::Int, none(), "Time of last backup of the qube, in seconds since unix epoch"));
    add(read_only(prop("ip", PropType::Str, computed([](const Model& m, const Qube* q) -> std::optional<std::string> {
                           if (!q || m.value_text(q, "netvm").empty()) return std::string();
                           return "10.137." + std::to_string(q->qid >> 8) + "." + std::to_string(q->qid & 0xff);
                       }),
                       "IP address of this domain.")));
    add(read_only(prop("visible_ip", PropType::Str, computed([](const Model& m, const Qube* q) -> std::optional<std::string> {
                           return q ? m.value_text(q, "ip") : std::string();
                       }),
                       "IP address of this domain as seen by the domain.")));
    add(read_only(prop("mac", PropType::Str, computed([](const Model&, const Qube* q) -> std::optional<std::string> {
                           char buf[32];
                           int qid = q ? q->qid : 0;
                           std::snprintf(buf, sizeof buf, "00:16:3e:5e:%02x:%02x", (qid >> 8) & 0xff, qid & 0xff);
                           return std::string(buf);
                       }),
                       "MAC address of the NIC emulated inside VM")));
    add(read_only(prop("dns", PropType::Str, computed([](const Model& m, const Qube* q) -> std::optional<std::string> {
                           if (!q || m.value_text(q, "netvm").empty()) return std::string();
                           return std::string("10.139.1.1 10.139.1.2");
                       }),
                       "Secondary DNS server set up for this domain.")));
    if (klass == "AppVM" || klass == "DispVM")
        add(checked(prop("template", PropType::Vm, none(), "Template, on which this AppVM is based."),
                    template_check));
    if (klass == "AppVM" || klass == "StandaloneVM" || klass == "TemplateVM")
        add(prop("template_for_dispvms", PropType::Bool, constant("False"), "Should this VM be allowed to start as Disposable VM"));
    if (dispvm) {
        add(prop("auto_cleanup", PropType::Bool, constant("False"), "automatically remove this qube upon shutdown"));
        add(checked(prop("dispid", PropType::Int, none(), "Internal, persistent identifier of particular disposable."),
                    dispid_check));
        add(read_only(prop("is_preload", PropType::Bool,
                           computed([](const Model& m, const Qube* q) -> std::optional<std::string> {
                               return q && is_preload(m, *q) ? "True" : "False";
                           }),
                           "Check if qube is a preloaded disposable.")));
    }
    return list;
}

std::vector<PropertyDef> admin_vm_properties() {
    auto list = identity_properties();
    list[3].default_rule = constant("black");  // label
    list.push_back(nullable(checked(prop("default_dispvm", PropType::Vm, global("default_dispvm"), "Default VM to be used as Disposable VM for service calls."), dispvm_template_check)));
    list.push_back(prop("keyboard_layout", PropType::Str, constant("us++"), "Keyboard layout for this VM"));
    list.push_back(read_only(prop("xid", PropType::Int, constant("0"), "Always 0.")));
    return list;
}

std::vector<PropertyDef> remote_vm_properties() {
    auto list = identity_properties();
    list.push_back(nullable(prop("relayvm", PropType::Vm, none(), "Local qube that relays qrexec calls to this remote qube.")));
    list.push_back(prop("transport_rpc", PropType::Str, none(), "qrexec service in the relay that forwards calls (e.g. qubesair.SSHProxy)."));
    list.push_back(prop("remote_name", PropType::Str, computed([](const Model&, const Qube* q) -> std::optional<std::string> {
                            return q ? std::optional(q->name) : std::nullopt;
                        }),
                        "Name of this qube on the remote side; defaults to the local name."));
    return list;
}

void sort_by_name(std::vector<PropertyDef>& list) {
    std::sort(list.begin(), list.end(), [](const PropertyDef& a, const PropertyDef& b) { return a.name < b.name; });
}

std::map<std::string, std::vector<PropertyDef>, std::less<>> build_tables() {
    std::map<std::string, std::vector<PropertyDef>, std::less<>> tables;
    for (std::string_view klass : {"AppVM", "TemplateVM", "StandaloneVM", "DispVM"})
        tables[std::string(klass)] = qubesvm_properties(klass);
    tables["AdminVM"] = admin_vm_properties();
    tables["RemoteVM"] = remote_vm_properties();
    for (auto& [klass, list] : tables) sort_by_name(list);
    return tables;
}

std::vector<PropertyDef> build_globals() {
    std::vector<PropertyDef> list = {
        nullable(prop("clockvm", PropType::Vm, none(), "Which VM to use as NTP proxy for updating AdminVM")),
        prop("check_updates_vm", PropType::Bool, constant("True"), "Check for updates inside qubes"),
        nullable(prop("default_audiovm", PropType::Vm, constant("dom0"), "Default AudioVM for VMs.")),
        nullable(checked(prop("default_dispvm", PropType::Vm, none(), "Default DispVM base for service calls"), dispvm_template_check)),
        nullable(prop("default_guivm", PropType::Vm, constant("dom0"), "Default GuiVM for VMs.")),
        prop("default_kernel", PropType::Str, constant("aerie-ns"), "Which kernel to use when not overriden in VM"),
        nullable(checked(prop("default_netvm", PropType::Vm, none(), "Default NetVM for AppVMs. Initial state is `None`, which means that AppVMs are not connected to the Internet."), default_netvm_check)),
        prop("default_pool", PropType::Str, constant("varlibqubes"), "Default storage pool"),
        checked(prop("default_qrexec_timeout", PropType::Int, constant("60"), "Default time in seconds after which qrexec connection attempt is deemed failed"), positive("default_qrexec_timeout")),
        checked(prop("default_shutdown_timeout", PropType::Int, constant("60"), "Default time in seconds for VM shutdown to complete"), positive("default_shutdown_timeout")),
        nullable(checked(prop("default_template", PropType::Vm, none(), "Default template for new AppVMs"), default_template_check)),
        nullable(prop("management_dispvm", PropType::Vm, none(), "Default DVM template for Disposable VM for managing other VMs.")),
        checked(prop("stats_interval", PropType::Int, constant("3"), "Interval in seconds for VM stats reporting (memory, CPU usage)"), positive("stats_interval")),
        nullable(prop("updatevm", PropType::Vm, none(), "Which VM to use as `yum` proxy for updating AdminVM and TemplateVMs")),
    };
    sort_by_name(list);
    return list;
}

}  // namespace

const std::vector<PropertyDef>* class_properties(std::string_view klass) {
    static const auto tables = build_tables();
    auto it = tables.find(klass);
    return it == tables.end() ? nullptr : &it->second;
}

const std::vector<PropertyDef>& global_properties() {
    static const auto list = build_globals();
    return list;
}

const PropertyDef* find_property(const std::vector<PropertyDef>& list, std::string_view name) {
    auto it = std::lower_bound(list.begin(), list.end(), name,
                               [](const PropertyDef& def, std::string_view n) { return def.name < n; });
    return it != list.end() && it->name == name ? &*it : nullptr;
}

}  // namespace aerie::admin
