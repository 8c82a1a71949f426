// The admin daemon's qube model on its own: property definitions, defaults
// and their inheritance, the checks of new values, who depends on whom,
// renames, features along chains, labels, icons and the system info.
#include <gtest/gtest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "admin/api_error.hpp"
#include "admin/model.hpp"

namespace aerie::admin {
namespace {

using Props = std::map<std::string, std::string>;

Qube make_qube(const std::string& klass, const std::string& name, int qid, Props properties = {}) {
    Qube q;
    q.klass = klass;
    q.name = name;
    q.qid = qid;
    q.uuid = "00000000-0000-4000-8000-0000000000" + std::string(qid < 10 ? "0" : "") + std::to_string(qid);
    q.properties = std::move(properties);
    if (!q.properties.count("label")) q.properties["label"] = "red";
    return q;
}

const PropertyDef& def_of(const Model& model, const Qube* qube, const std::string& name) {
    const auto& list = qube ? model.properties_of(*qube) : global_properties();
    const PropertyDef* def = find_property(list, name);
    if (!def) throw std::runtime_error("no property " + name);
    return *def;
}

// The error a call raises: "TYPE|silent|message" or "TYPE|reply|message"; "" when none.
std::string error_of(const std::function<void()>& action) {
    try {
        action();
    } catch (const ApiError& e) {
        return e.type + (e.silent ? "|silent|" : "|reply|") + e.what();
    }
    return "";
}

// The part of error_of() before the message.
std::string kind_of(const std::function<void()>& action) {
    std::string e = error_of(action);
    size_t second = e.find('|', e.find('|') + 1);
    return second == std::string::npos ? e : e.substr(0, second);
}

// A small system: a template, a disposable template, a net qube, a firewall,
// an AppVM using them.
class AdminModelTest : public ::testing::Test {
protected:
    void SetUp() override {
        model.add(make_qube("TemplateVM", "fedora", 1));
        model.add(make_qube("TemplateVM", "debian", 2, {{"label", "black"}}));
        model.add(make_qube("AppVM", "sys-net", 3, {{"template", "fedora"}, {"provides_network", "True"}, {"netvm", ""}}));
        model.add(make_qube("AppVM", "sys-firewall", 4,
                            {{"template", "fedora"}, {"provides_network", "True"}, {"netvm", "sys-net"}}));
        model.add(make_qube("AppVM", "dvm", 5, {{"template", "fedora"}, {"template_for_dispvms", "True"}}));
        model.add(make_qube("AppVM", "work", 6, {{"template", "fedora"}, {"label", "blue"}}));
    }

    Qube* q(const std::string& name) {
        Qube* qube = model.find(name);
        if (!qube) throw std::runtime_error("no qube " + name);
        return qube;
    }
    PropertyValue get(const std::string& qube, const std::string& property) {
        Qube* holder = qube.empty() ? nullptr : q(qube);
        return model.get(holder, def_of(model, holder, property));
    }
    std::string value(const std::string& qube, const std::string& property) { return get(qube, property).text; }
    bool is_default(const std::string& qube, const std::string& property) { return get(qube, property).is_default; }
    std::string sanitize(const std::string& qube, const std::string& property, const std::string& raw) {
        Qube* holder = qube.empty() ? nullptr : q(qube);
        return model.sanitize(holder, def_of(model, holder, property), raw);
    }
    std::string sanitize_error(const std::string& qube, const std::string& property, const std::string& raw) {
        return error_of([&] { sanitize(qube, property, raw); });
    }
    std::string sanitize_kind(const std::string& qube, const std::string& property, const std::string& raw) {
        return kind_of([&] { sanitize(qube, property, raw); });
    }

    Model model;
};

// --- definitions ---------------------------------------------------------------------

TEST(AdminModelDefs, EveryClassHasItsPropertiesSortedByName) {
    for (std::string_view klass : kQubeClasses) {
        const auto* list = class_properties(klass);
        ASSERT_NE(list, nullptr) << klass;
        for (size_t i = 1; i < list->size(); ++i) EXPECT_LT((*list)[i - 1].name, (*list)[i].name) << klass;
        for (const char* common : {"name", "qid", "uuid", "label", "icon"})
            EXPECT_NE(find_property(*list, common), nullptr) << klass << " " << common;
    }
    EXPECT_EQ(class_properties("NoSuchVM"), nullptr);
    const auto& app = *class_properties("AppVM");
    EXPECT_NE(find_property(app, "template"), nullptr);
    EXPECT_NE(find_property(app, "template_for_dispvms"), nullptr);
    EXPECT_EQ(find_property(app, "auto_cleanup"), nullptr);
    const auto& disp = *class_properties("DispVM");
    EXPECT_NE(find_property(disp, "template"), nullptr);
    EXPECT_NE(find_property(disp, "auto_cleanup"), nullptr);
    EXPECT_EQ(find_property(disp, "template_for_dispvms"), nullptr);
    EXPECT_EQ(find_property(*class_properties("TemplateVM"), "template"), nullptr);
    EXPECT_EQ(find_property(*class_properties("StandaloneVM"), "template"), nullptr);
    EXPECT_EQ(find_property(*class_properties("AdminVM"), "netvm"), nullptr);
    EXPECT_NE(find_property(*class_properties("RemoteVM"), "relayvm"), nullptr);
    EXPECT_NE(find_property(*class_properties("RemoteVM"), "transport_rpc"), nullptr);
    const auto& globals = global_properties();
    for (size_t i = 1; i < globals.size(); ++i) EXPECT_LT(globals[i - 1].name, globals[i].name);
    for (const char* name : {"default_netvm", "default_template", "default_dispvm", "default_kernel",
                             "default_qrexec_timeout", "clockvm", "updatevm"})
        EXPECT_NE(find_property(globals, name), nullptr) << name;
}

TEST(AdminModelDefs, TypeNames) {
    EXPECT_EQ(type_name(PropType::Bool), "bool");
    EXPECT_EQ(type_name(PropType::Int), "int");
    EXPECT_EQ(type_name(PropType::Str), "str");
    EXPECT_EQ(type_name(PropType::Label), "label");
    EXPECT_EQ(type_name(PropType::Vm), "vm");
    EXPECT_EQ(def_of(Model(), nullptr, "default_netvm").type, PropType::Vm);
}

TEST(AdminModelDefs, BooleansAsQubesReadsThem) {
    for (const char* yes : {"1", "yes", "true", "on", "True", "YES", "On"}) EXPECT_EQ(parse_bool(yes), true) << yes;
    for (const char* no : {"0", "no", "false", "off", "False", "NO", "Off"}) EXPECT_EQ(parse_bool(no), false) << no;
    for (const char* bad : {"", "2", "y", "n", "truth", " true", "none"}) EXPECT_EQ(parse_bool(bad), std::nullopt) << bad;
}

TEST(AdminModelDefs, IntegersAsPythonsIntReadsThem) {
    EXPECT_EQ(parse_int("42"), 42);
    EXPECT_EQ(parse_int(" 42\n"), 42);
    EXPECT_EQ(parse_int("+7"), 7);
    EXPECT_EQ(parse_int("-3"), -3);
    EXPECT_EQ(parse_int("007"), 7);
    EXPECT_EQ(parse_int("1_000"), 1000);  // int('1_000') == 1000
    for (const char* bad : {"", " ", "+", "-", "abc", "4.5", "0x10", "1e3", "+-5", "-+5", "--5", "1__0", "_1", "1_",
                            "99999999999999999999999"})
        EXPECT_EQ(parse_int(bad), std::nullopt) << bad;
}

// --- defaults and inheritance -------------------------------------------------------

TEST_F(AdminModelTest, DefaultsFromConstantsAndGlobals) {
    EXPECT_EQ(value("work", "memory"), "400");
    EXPECT_EQ(value("work", "maxmem"), "4000");
    EXPECT_EQ(value("work", "vcpus"), "2");
    EXPECT_EQ(value("work", "kernel"), "aerie-ns");  // global default_kernel
    EXPECT_EQ(value("work", "kernelopts"), "");
    EXPECT_EQ(value("work", "default_user"), "user");
    EXPECT_EQ(value("work", "qrexec_timeout"), "60");
    EXPECT_EQ(value("work", "shutdown_timeout"), "60");
    EXPECT_EQ(value("work", "virt_mode"), "pvh");
    EXPECT_EQ(value("work", "include_in_backups"), "True");
    EXPECT_EQ(value("work", "provides_network"), "False");
    EXPECT_EQ(value("work", "updateable"), "False");
    EXPECT_EQ(value("fedora", "updateable"), "True");
    EXPECT_EQ(value("work", "guivm"), "dom0");  // global default_guivm
    EXPECT_EQ(value("work", "audiovm"), "dom0");
    // Unset globals without a default: nothing.
    PropertyValue netvm = get("work", "netvm");
    EXPECT_FALSE(netvm.has_value);
    EXPECT_TRUE(netvm.is_default);
    EXPECT_FALSE(get("work", "default_dispvm").has_value);
    EXPECT_FALSE(get("work", "backup_timestamp").has_value);
    EXPECT_FALSE(get("", "default_netvm").has_value);
    EXPECT_EQ(value("", "default_kernel"), "aerie-ns");
    EXPECT_EQ(value("", "default_qrexec_timeout"), "60");
    EXPECT_EQ(value("", "default_pool"), "varlibqubes");
}

TEST_F(AdminModelTest, SizeDefaultsAreTheHostsWhenTheDaemonSizesThem) {
    // A 2-CPU host with 23.5 GiB (backend::qube_size_defaults).
    model.set_size_defaults({400, 3500, 1});
    EXPECT_EQ(value("work", "memory"), "400");
    EXPECT_EQ(value("work", "maxmem"), "3500");
    EXPECT_EQ(value("work", "vcpus"), "1");
    for (const char* p : {"memory", "maxmem", "vcpus"}) EXPECT_TRUE(is_default("work", p)) << p;
    EXPECT_EQ(model.default_of(q("work"), def_of(model, q("work"), "vcpus")), "1");
    // The template's own value still comes first, as in Qubes.
    model.set(q("fedora"), "vcpus", "2");
    EXPECT_EQ(value("work", "vcpus"), "2");
    EXPECT_TRUE(is_default("work", "vcpus"));
    EXPECT_EQ(value("fedora", "maxmem"), "3500");
}

TEST_F(AdminModelTest, TemplateValuesAreInheritedElseTheConstantOrGlobal) {
    model.set(q("fedora"), "memory", "800");
    model.set(q("fedora"), "vcpus", "4");
    model.set(q("fedora"), "kernel", "k-tpl");
    model.set(q("fedora"), "default_user", "fed");
    model.set(q("fedora"), "qrexec_timeout", "30");
    for (const char* p : {"memory", "vcpus", "kernel", "default_user", "qrexec_timeout"})
        EXPECT_TRUE(is_default("work", p)) << p;
    EXPECT_EQ(value("work", "memory"), "800");
    EXPECT_EQ(value("work", "vcpus"), "4");
    EXPECT_EQ(value("work", "kernel"), "k-tpl");
    EXPECT_EQ(value("work", "default_user"), "fed");
    EXPECT_EQ(value("work", "qrexec_timeout"), "30");
    // The template's own defaults flow through too.
    model.reset(q("fedora"), "qrexec_timeout");
    model.set(nullptr, "default_qrexec_timeout", "120");
    model.set(nullptr, "default_kernel", "k-global");
    model.reset(q("fedora"), "kernel");
    EXPECT_EQ(value("work", "qrexec_timeout"), "120");
    EXPECT_EQ(value("fedora", "qrexec_timeout"), "120");
    EXPECT_EQ(value("work", "kernel"), "k-global");
    // A template of another template (a switch) changes what is inherited.
    model.set(q("work"), "template", "debian");
    EXPECT_EQ(value("work", "memory"), "400");
    EXPECT_EQ(value("work", "default_user"), "user");
    // The qube's own value wins.
    model.set(q("work"), "memory", "1000");
    EXPECT_EQ(value("work", "memory"), "1000");
    EXPECT_FALSE(is_default("work", "memory"));
    // Standalone and template qubes inherit nothing.
    model.add(make_qube("StandaloneVM", "solo", 7));
    model.set(q("debian"), "memory", "900");
    EXPECT_EQ(value("solo", "memory"), "400");
    EXPECT_EQ(value("debian", "memory"), "900");
}

TEST_F(AdminModelTest, NetvmDefaultDispvmAndGuivmFollowTheGlobals) {
    model.set(nullptr, "default_netvm", "sys-firewall");
    model.set(nullptr, "default_dispvm", "dvm");
    model.set(nullptr, "default_guivm", "");
    EXPECT_EQ(value("work", "netvm"), "sys-firewall");
    EXPECT_TRUE(is_default("work", "netvm"));
    EXPECT_EQ(value("work", "default_dispvm"), "dvm");
    EXPECT_EQ(value("dom0", "default_dispvm"), "dvm");
    PropertyValue guivm = get("work", "guivm");
    EXPECT_TRUE(guivm.has_value);  // set to None: a value, empty
    EXPECT_EQ(guivm.text, "");
    EXPECT_TRUE(guivm.is_default);
    // Explicit None is a value that is not the default.
    model.set(q("work"), "netvm", "");
    PropertyValue netvm = get("work", "netvm");
    EXPECT_TRUE(netvm.has_value);
    EXPECT_FALSE(netvm.is_default);
    EXPECT_EQ(netvm.text, "");
    // Explicit values of the template do not flow into an AppVM's netvm.
    model.reset(q("work"), "netvm");
    model.set(q("fedora"), "netvm", "sys-net");
    EXPECT_EQ(value("work", "netvm"), "sys-firewall");
    // ip/dns follow the netvm.
    EXPECT_EQ(value("work", "ip"), "10.137.0.6");
    EXPECT_EQ(value("work", "visible_ip"), "10.137.0.6");
    EXPECT_EQ(value("work", "dns"), "10.139.1.1 10.139.1.2");
    EXPECT_EQ(value("work", "mac"), "00:16:3e:5e:00:06");
    EXPECT_EQ(value("sys-net", "ip"), "");
    EXPECT_EQ(value("sys-net", "dns"), "");
}

TEST_F(AdminModelTest, DisposableDefaultsComeFromItsTemplate) {
    model.set(nullptr, "default_netvm", "sys-firewall");
    model.set(nullptr, "default_dispvm", "dvm");
    model.set(q("dvm"), "netvm", "sys-net");
    model.set(q("dvm"), "memory", "1234");
    model.set(q("dvm"), "default_user", "disp-user");
    model.set(q("fedora"), "vcpus", "3");
    model.add(make_qube("DispVM", "disp1", 8, {{"template", "dvm"}}));
    EXPECT_EQ(value("disp1", "netvm"), "sys-net");
    EXPECT_TRUE(is_default("disp1", "netvm"));
    EXPECT_EQ(value("disp1", "memory"), "1234");
    EXPECT_EQ(value("disp1", "default_user"), "disp-user");
    EXPECT_EQ(value("disp1", "vcpus"), "3");  // through dvm from fedora
    // A disposable's default disposable is its own template (qubes.vm.dispvm).
    model.set(nullptr, "default_dispvm", "");
    EXPECT_EQ(value("disp1", "default_dispvm"), "dvm");
    EXPECT_TRUE(is_default("disp1", "default_dispvm"));
    // A disposable is in backups unless it cleans itself up.
    EXPECT_EQ(value("disp1", "auto_cleanup"), "False");
    EXPECT_EQ(value("disp1", "include_in_backups"), "True");
    model.set(q("disp1"), "auto_cleanup", "True");
    EXPECT_EQ(value("disp1", "include_in_backups"), "False");
    EXPECT_TRUE(is_default("disp1", "include_in_backups"));
    // Its template has no default.
    EXPECT_EQ(model.default_of(q("disp1"), def_of(model, q("disp1"), "template")), std::nullopt);
}

TEST_F(AdminModelTest, IsDefaultFlagsAndDefaultOf) {
    EXPECT_FALSE(is_default("work", "name"));
    EXPECT_FALSE(is_default("work", "qid"));
    EXPECT_FALSE(is_default("work", "uuid"));
    EXPECT_FALSE(is_default("work", "label"));
    EXPECT_FALSE(is_default("work", "template"));
    EXPECT_TRUE(is_default("work", "icon"));
    EXPECT_TRUE(is_default("work", "vcpus"));
    EXPECT_EQ(value("work", "qid"), "6");
    EXPECT_EQ(value("work", "name"), "work");
    EXPECT_EQ(value("work", "uuid"), q("work")->uuid);
    model.set(q("work"), "vcpus", "2");  // equal to the default, still explicit
    EXPECT_FALSE(is_default("work", "vcpus"));
    EXPECT_EQ(model.default_of(q("work"), def_of(model, q("work"), "vcpus")), "2");
    model.reset(q("work"), "vcpus");
    EXPECT_TRUE(is_default("work", "vcpus"));
    EXPECT_EQ(model.default_of(q("work"), def_of(model, q("work"), "label")), std::nullopt);
    EXPECT_EQ(model.default_of(&model.admin_vm(), def_of(model, &model.admin_vm(), "label")), "black");
    EXPECT_EQ(model.value_text(q("work"), "no-such-property"), "");
    // Globals.
    EXPECT_TRUE(is_default("", "default_kernel"));
    model.set(nullptr, "default_kernel", "aerie-ns");
    EXPECT_FALSE(is_default("", "default_kernel"));
    model.reset(nullptr, "default_kernel");
    EXPECT_TRUE(is_default("", "default_kernel"));
}

// --- sanitize ---------------------------------------------------------------------

TEST_F(AdminModelTest, SanitizeBooleans) {
    EXPECT_EQ(sanitize("work", "autostart", "yes"), "True");
    EXPECT_EQ(sanitize("work", "autostart", "On"), "True");
    EXPECT_EQ(sanitize("work", "autostart", "1"), "True");
    EXPECT_EQ(sanitize("work", "autostart", "FALSE"), "False");
    EXPECT_EQ(sanitize("work", "autostart", "off"), "False");
    EXPECT_EQ(sanitize("", "check_updates_vm", "no"), "False");
    EXPECT_EQ(sanitize_error("work", "autostart", "2"),
              "QubesValueError|reply|Invalid literal for boolean property: '2'");
    EXPECT_EQ(sanitize_kind("work", "debug", ""), "QubesValueError|reply");
}

TEST_F(AdminModelTest, SanitizeIntegers) {
    EXPECT_EQ(sanitize("work", "memory", " 512 "), "512");
    EXPECT_EQ(sanitize("work", "vcpus", "+3"), "3");
    EXPECT_EQ(sanitize("work", "maxmem", "0"), "0");
    EXPECT_EQ(sanitize("work", "backup_timestamp", "-5"), "-5");  // no extra check
    EXPECT_EQ(sanitize("", "default_qrexec_timeout", "90"), "90");
    EXPECT_EQ(sanitize_kind("work", "memory", "abc"), "QubesValueError|reply");
    EXPECT_EQ(sanitize_kind("work", "memory", ""), "QubesValueError|reply");
    EXPECT_EQ(sanitize_kind("work", "memory", "0"), "QubesPropertyValueError|reply");
    EXPECT_EQ(sanitize_kind("work", "memory", "-100"), "QubesPropertyValueError|reply");
    EXPECT_EQ(sanitize_kind("work", "vcpus", "0"), "QubesPropertyValueError|reply");
    EXPECT_EQ(sanitize_kind("work", "maxmem", "-1"), "QubesPropertyValueError|reply");
    EXPECT_EQ(sanitize_kind("work", "qrexec_timeout", "-2"), "QubesPropertyValueError|reply");
    EXPECT_EQ(sanitize_kind("", "default_shutdown_timeout", "0"), "QubesPropertyValueError|reply");
}

TEST_F(AdminModelTest, SanitizeStrings) {
    EXPECT_EQ(sanitize("work", "kernelopts", "quiet nomodeset"), "quiet nomodeset");
    EXPECT_EQ(sanitize("work", "kernelopts", ""), "");
    EXPECT_EQ(sanitize("work", "virt_mode", "hvm"), "hvm");
    EXPECT_EQ(sanitize_kind("work", "virt_mode", "xen"), "QubesPropertyValueError|reply");
    // qubes.property.sanitize: ASCII and string.printable only.
    EXPECT_EQ(sanitize("work", "kernelopts", "a\tb\nc"), "a\tb\nc");
    EXPECT_EQ(sanitize_kind("work", "kernelopts", "caf\xc3\xa9"), "QubesValueError|reply");
    EXPECT_EQ(sanitize_kind("work", "kernelopts", std::string("a\x01z")), "QubesValueError|reply");
    EXPECT_EQ(sanitize_kind("work", "default_user", std::string("a\x7f")), "QubesValueError|reply");
}

TEST_F(AdminModelTest, SanitizeLabelsByNameOrIndex) {
    EXPECT_EQ(sanitize("work", "label", "green"), "green");
    EXPECT_EQ(sanitize("work", "label", "6"), "blue");
    EXPECT_EQ(sanitize("work", "label", "8"), "black");
    EXPECT_EQ(sanitize_error("work", "label", "nosuch"), "QubesLabelNotFoundError|reply|Label does not exist: nosuch");
    EXPECT_EQ(sanitize_kind("work", "label", "9"), "QubesLabelNotFoundError|reply");
    ASSERT_EQ(model.labels().create("custom", "0x123456"), LabelError::None);
    EXPECT_EQ(sanitize("work", "label", "custom"), "custom");
    EXPECT_EQ(sanitize("work", "label", "9"), "custom");
}

TEST_F(AdminModelTest, SanitizeQubeReferences) {
    EXPECT_EQ(sanitize("work", "netvm", "sys-net"), "sys-net");
    EXPECT_EQ(sanitize("work", "netvm", "uuid:" + q("sys-net")->uuid), "sys-net");
    // None is the empty string, for properties that allow it.
    EXPECT_EQ(sanitize("work", "netvm", ""), "");
    EXPECT_EQ(sanitize("work", "default_dispvm", ""), "");
    EXPECT_EQ(sanitize("work", "guivm", ""), "");
    EXPECT_EQ(sanitize("", "default_netvm", ""), "");
    EXPECT_EQ(sanitize("", "default_template", ""), "");
    EXPECT_EQ(sanitize_kind("work", "template", ""), "QubesPropertyValueError|reply");
    // "None" is a valid qube name, not a spelling of None.
    EXPECT_EQ(sanitize_error("work", "netvm", "None"), "QubesPropertyValueError|reply|Can't set netvm to non-existing qube None");
    model.add(make_qube("AppVM", "None", 9, {{"template", "fedora"}, {"provides_network", "True"}}));
    EXPECT_EQ(sanitize("work", "netvm", "None"), "None");
    // Unknown qubes, and names that are no qube names at all.
    EXPECT_EQ(sanitize_error("work", "netvm", "ghost"), "QubesPropertyValueError|reply|Can't set netvm to non-existing qube ghost");
    EXPECT_EQ(sanitize_error("work", "template", "ghost"), "QubesPropertyValueError|reply|Can't set template to non-existing qube ghost");
    EXPECT_EQ(sanitize_kind("work", "netvm", "a b"), "QubesValueError|reply");
    EXPECT_EQ(sanitize_kind("work", "netvm", "-x"), "QubesValueError|reply");
    EXPECT_EQ(sanitize_kind("work", "netvm", "caf\xc3\xa9"), "QubesValueError|reply");
    // The right kind of qube.
    EXPECT_EQ(sanitize("work", "template", "debian"), "debian");
    EXPECT_EQ(sanitize_kind("work", "template", "sys-net"), "QubesPropertyValueError|reply");
    EXPECT_EQ(sanitize_kind("work", "default_dispvm", "work"), "QubesPropertyValueError|reply");
    EXPECT_EQ(sanitize("work", "default_dispvm", "dvm"), "dvm");
    EXPECT_EQ(sanitize("dvm", "default_dispvm", "dvm"), "dvm");  // a disposable template may name itself
    EXPECT_EQ(sanitize("", "default_template", "fedora"), "fedora");
    EXPECT_EQ(sanitize_kind("", "default_template", "work"), "QubesPropertyValueError|reply");
}

TEST_F(AdminModelTest, SanitizeRefusesReadOnlyProperties) {
    for (const char* p : {"qid", "uuid", "icon", "xid", "updateable", "ip", "visible_ip", "mac", "dns"})
        EXPECT_EQ(sanitize_kind("work", p, "1"), "ProtocolError|silent") << p;
    EXPECT_EQ(sanitize_kind("dom0", "xid", "0"), "ProtocolError|silent");
}

TEST_F(AdminModelTest, SanitizeQubeNames) {
    EXPECT_EQ(sanitize("work", "name", "work2"), "work2");
    EXPECT_EQ(sanitize("work", "name", "W_-9"), "W_-9");
    EXPECT_EQ(sanitize("work", "name", std::string(31, 'a')), std::string(31, 'a'));
    for (std::string bad : {std::string(32, 'a'), std::string("1abc"), std::string("a b"), std::string("a.b"),
                            std::string(""), std::string("_x"), std::string("none"), std::string("default"),
                            std::string("caf\xc3\xa9")}) {
        std::string kind = sanitize_kind("work", "name", bad);
        EXPECT_TRUE(kind == "QubesPropertyValueError|reply" || kind == "QubesValueError|reply") << bad << " " << kind;
    }
    EXPECT_EQ(invalid_qube_name_reason("ok-name"), "");
    EXPECT_EQ(invalid_qube_name_reason("none"), "VM name cannot be 'none' nor 'default'");
    EXPECT_EQ(invalid_qube_name_reason(std::string(32, 'x')), "VM name must be shorter than 32 characters");
    EXPECT_EQ(invalid_qube_name_reason("x-dm"), "VM name cannot end with -dm");
    EXPECT_EQ(qube_name_error("_x", "name").message, "name cannot start with hyphen, underscore, dot or numbers");
    EXPECT_EQ(qube_name_error("_x", "name").type, "QubesPropertyValueError");
    EXPECT_EQ(qube_name_error("_x").type, "QubesValueError");
}

TEST_F(AdminModelTest, NetvmMustProvideNetworkWithoutLoops) {
    EXPECT_EQ(sanitize_error("work", "netvm", "fedora"),
              "QubesValueError|reply|The fedora qube does not provide network");
    EXPECT_EQ(sanitize_kind("", "default_netvm", "work"), "QubesValueError|reply");
    // sys-firewall -> sys-net: sys-net may not use sys-firewall, nor itself.
    EXPECT_EQ(sanitize_kind("sys-net", "netvm", "sys-firewall"), "QubesValueError|reply");
    EXPECT_EQ(sanitize_kind("sys-net", "netvm", "sys-net"), "QubesValueError|reply");
    EXPECT_EQ(sanitize("work", "netvm", "sys-firewall"), "sys-firewall");
    // A loop through default values.
    model.add(make_qube("AppVM", "proxy", 10, {{"template", "fedora"}, {"provides_network", "True"}}));
    model.set(nullptr, "default_netvm", "sys-firewall");
    EXPECT_EQ(sanitize_kind("sys-net", "netvm", "proxy"), "QubesValueError|reply");
    EXPECT_EQ(sanitize("work", "netvm", "proxy"), "proxy");
}

TEST_F(AdminModelTest, DefaultNetvmMayNotCloseALoopThroughDefaults) {
    // qubes.app._setter_default_netvm: a qube using the default netvm may
    // not become (or lead to) the default netvm.
    model.add(make_qube("AppVM", "proxy", 10, {{"template", "fedora"}, {"provides_network", "True"}}));
    EXPECT_EQ(sanitize_kind("", "default_netvm", "proxy"), "QubesPropertyValueError|reply");
    model.set(q("proxy"), "netvm", "sys-net");
    EXPECT_EQ(sanitize("", "default_netvm", "proxy"), "proxy");
    EXPECT_EQ(sanitize("", "default_netvm", "sys-firewall"), "sys-firewall");
    // sys-net at its default netvm: sys-firewall leads to it.
    model.reset(q("sys-net"), "netvm");
    EXPECT_EQ(sanitize_kind("", "default_netvm", "sys-firewall"), "QubesPropertyValueError|reply");
}

TEST_F(AdminModelTest, NetvmChecksEndOnAnExistingLoop) {
    // A corrupt store may hold a loop that does not include the qube being
    // changed; the checks must still finish.
    model.set(q("sys-net"), "netvm", "sys-firewall");
    EXPECT_EQ(sanitize("work", "netvm", "sys-firewall"), "sys-firewall");
    EXPECT_EQ(sanitize("", "default_netvm", "sys-net"), "sys-net");
    EXPECT_EQ(model.feature_check_with(*q("sys-net"), "x", false, true, false), std::nullopt);
}

TEST_F(AdminModelTest, ProvidesNetworkStaysWhileQubesUseIt) {
    EXPECT_EQ(sanitize_kind("sys-net", "provides_network", "False"), "QubesValueError|reply");
    EXPECT_EQ(sanitize("sys-net", "provides_network", "True"), "True");
    EXPECT_EQ(sanitize("work", "provides_network", "False"), "False");
    // Through the default netvm too.
    model.add(make_qube("AppVM", "proxy", 10, {{"template", "fedora"}, {"provides_network", "True"}, {"netvm", ""}}));
    EXPECT_EQ(sanitize("proxy", "provides_network", "False"), "False");
    model.set(nullptr, "default_netvm", "proxy");
    EXPECT_EQ(sanitize_kind("proxy", "provides_network", "no"), "QubesValueError|reply");
}

TEST_F(AdminModelTest, DisposableTemplatesNeedTemplateForDispvms) {
    model.add(make_qube("DispVM", "disp1", 8, {{"template", "dvm"}}));
    EXPECT_EQ(sanitize("disp1", "template", "dvm"), "dvm");
    EXPECT_EQ(sanitize_kind("disp1", "template", "work"), "QubesPropertyValueError|reply");
    EXPECT_EQ(sanitize_kind("disp1", "template", "fedora"), "QubesPropertyValueError|reply");
    EXPECT_EQ(sanitize_kind("", "default_dispvm", "work"), "QubesPropertyValueError|reply");
    EXPECT_EQ(sanitize("", "default_dispvm", "dvm"), "dvm");
    EXPECT_EQ(sanitize("work", "management_dispvm", "dvm"), "dvm");
}

// --- dependants, references, rename -------------------------------------------------------

TEST_F(AdminModelTest, DependantsThroughSetAndDefaultValues) {
    using V = std::vector<std::string>;
    EXPECT_EQ(model.dependants(*q("fedora")), (V{"dvm.template", "sys-firewall.template", "sys-net.template",
                                                 "work.template"}));
    EXPECT_EQ(model.dependants(*q("sys-net")), (V{"sys-firewall.netvm"}));
    EXPECT_EQ(model.dependants(*q("work")), V{});
    // The default netvm: every qube that uses it, and the global itself.
    model.set(nullptr, "default_netvm", "sys-firewall");
    EXPECT_EQ(model.dependants(*q("sys-firewall")),
              (V{"debian.netvm", "dvm.netvm", "fedora.netvm", "work.netvm", "global.default_netvm"}));
    // default_dispvm through the global, dom0 included.
    model.set(nullptr, "default_dispvm", "dvm");
    V dvm_users = model.dependants(*q("dvm"));
    EXPECT_EQ(dvm_users, (V{"debian.default_dispvm", "dom0.default_dispvm", "fedora.default_dispvm",
                            "sys-firewall.default_dispvm", "sys-net.default_dispvm", "work.default_dispvm",
                            "global.default_dispvm"}));
    // A qube naming itself does not count.
    model.set(q("dvm"), "default_dispvm", "dvm");
    EXPECT_EQ(model.dependants(*q("dvm")), dvm_users);
    // Other globals.
    model.set(nullptr, "updatevm", "work");
    model.set(nullptr, "clockvm", "work");
    EXPECT_EQ(model.dependants(*q("work")), (V{"global.clockvm", "global.updatevm"}));
    model.set(nullptr, "default_template", "debian");
    EXPECT_EQ(model.dependants(*q("debian")), (V{"global.default_template"}));
}

TEST_F(AdminModelTest, ExplicitReferencesAndRenameRewriteThem) {
    model.set(nullptr, "default_netvm", "sys-firewall");
    model.set(nullptr, "updatevm", "sys-firewall");
    model.set(q("work"), "netvm", "sys-firewall");
    model.set(q("dvm"), "guivm", "sys-firewall");
    auto refs = model.explicit_references("sys-firewall");
    std::vector<std::string> named;
    for (const auto& [holder, property] : refs) named.push_back((holder ? holder->name : "global") + "." + property);
    std::sort(named.begin(), named.end());
    EXPECT_EQ(named, (std::vector<std::string>{"dvm.guivm", "global.default_netvm", "global.updatevm", "work.netvm"}));
    // Defaults are no explicit references.
    EXPECT_TRUE(model.explicit_references("dom0").empty());

    std::string uuid = q("sys-firewall")->uuid;
    model.rename("sys-firewall", "fw");
    EXPECT_EQ(model.find("sys-firewall"), nullptr);
    ASSERT_NE(model.find("fw"), nullptr);
    EXPECT_EQ(model.find("uuid:" + uuid), model.find("fw"));
    EXPECT_EQ(model.find("fw")->name, "fw");
    EXPECT_EQ(q("work")->properties.at("netvm"), "fw");
    EXPECT_EQ(q("dvm")->properties.at("guivm"), "fw");
    EXPECT_EQ(model.globals().at("default_netvm"), "fw");
    EXPECT_EQ(model.globals().at("updatevm"), "fw");
    EXPECT_EQ(value("fedora", "netvm"), "fw");  // through the default
    EXPECT_EQ(model.find("fw")->properties.at("netvm"), "sys-net");
    EXPECT_TRUE(model.explicit_references("sys-firewall").empty());
    EXPECT_EQ(model.size(), 7u);
    std::vector<std::string> names;
    for (const Qube* qube : model.qubes_by_name()) names.push_back(qube->name);
    EXPECT_EQ(names, (std::vector<std::string>{"debian", "dom0", "dvm", "fedora", "fw", "sys-net", "work"}));
}

TEST_F(AdminModelTest, RenameRewritesASelfReference) {
    model.set(q("dvm"), "default_dispvm", "dvm");
    model.rename("dvm", "dvm2");
    EXPECT_EQ(q("dvm2")->properties.at("default_dispvm"), "dvm2");
}

TEST_F(AdminModelTest, FindByNameOrUuidAndRemove) {
    EXPECT_EQ(model.find("dom0"), &model.admin_vm());
    EXPECT_EQ(model.find("uuid:00000000-0000-0000-0000-000000000000"), &model.admin_vm());
    EXPECT_EQ(model.find("uuid:" + q("work")->uuid), q("work"));
    EXPECT_EQ(model.find("uuid:00000000-0000-0000-0000-00000000ffff"), nullptr);
    EXPECT_EQ(model.find("ghost"), nullptr);
    EXPECT_EQ(model.next_free_qid(), 7);
    std::string uuid = q("work")->uuid;
    model.remove("work");
    EXPECT_EQ(model.find("work"), nullptr);
    EXPECT_EQ(model.find("uuid:" + uuid), nullptr);
    EXPECT_EQ(model.next_free_qid(), 6);
    model.remove("work");  // no effect
    EXPECT_EQ(model.size(), 6u);
}

TEST(AdminModel, LoadReplacesEverythingAndAddsDom0) {
    Model model;
    StoredState state;
    state.qubes.push_back(StoredQube{"11111111-1111-4111-8111-111111111111", 3, "t", "TemplateVM",
                                     {{"label", "black"}}, {{"f", "v"}}, {"tag1"}, "notes"});
    state.qubes.push_back(StoredQube{"22222222-2222-4222-8222-222222222222", 4, "r", "RemoteVM",
                                     {{"label", "red"}, {"relayvm", "t"}}, {}, {}, ""});
    state.global_properties = {{"default_kernel", "k"}};
    state.custom_labels = {Label{9, "custom", "0x010203"}};
    model.load(state);
    EXPECT_EQ(model.size(), 3u);
    EXPECT_EQ(model.admin_vm().power_state, "Running");
    const Qube* t = model.find("t");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->features.at("f"), "v");
    EXPECT_EQ(t->tags, std::set<std::string>{"tag1"});
    EXPECT_EQ(t->notes, "notes");
    EXPECT_EQ(t->power_state, "Halted");
    EXPECT_EQ(model.find("r")->power_state, "Running");  // remote qubes are always reachable
    EXPECT_EQ(model.value_text(nullptr, "default_kernel"), "k");
    EXPECT_EQ(model.value_text(t, "kernel"), "k");
    ASSERT_NE(model.labels().find("custom"), nullptr);
    EXPECT_EQ(model.labels().find("9")->name, "custom");
    // Loading again forgets what was there.
    model.load(StoredState{});
    EXPECT_EQ(model.size(), 1u);
    EXPECT_EQ(model.labels().find("custom"), nullptr);
    EXPECT_TRUE(model.globals().empty());
}

// --- features ---------------------------------------------------------------------------

TEST_F(AdminModelTest, FeatureChecksAlongTheChains) {
    model.add(make_qube("DispVM", "disp1", 8, {{"template", "dvm"}}));
    model.set(q("work"), "netvm", "sys-firewall");
    auto check = [&](const std::string& name, const std::string& f, bool tpl, bool net, bool admin) {
        return model.feature_check_with(*q(name), f, tpl, net, admin).value_or("<none>");
    };
    q("fedora")->features["tpl-only"] = "fedora";
    q("dvm")->features["dvm-only"] = "dvm";
    q("sys-net")->features["net-only"] = "net";
    q("dom0")->features["admin-only"] = "dom0";
    q("work")->features["own"] = "work";
    q("fedora")->features["own"] = "fedora";
    q("dom0")->features["own"] = "dom0";
    q("dom0")->features["tpl-only"] = "dom0";

    // Own value first, always.
    EXPECT_EQ(check("work", "own", true, false, false), "work");
    EXPECT_EQ(check("work", "own", false, true, false), "work");
    EXPECT_EQ(check("work", "own", false, false, true), "work");
    EXPECT_EQ(check("work", "own", true, false, true), "work");
    // Template chain: DispVM -> AppVM -> TemplateVM.
    EXPECT_EQ(check("work", "tpl-only", true, false, false), "fedora");
    EXPECT_EQ(check("disp1", "tpl-only", true, false, false), "fedora");
    EXPECT_EQ(check("disp1", "dvm-only", true, false, false), "dvm");
    EXPECT_EQ(check("work", "net-only", true, false, false), "<none>");
    EXPECT_EQ(check("fedora", "dvm-only", true, false, false), "<none>");
    // Netvm chain: work -> sys-firewall -> sys-net.
    EXPECT_EQ(check("work", "net-only", false, true, false), "net");
    EXPECT_EQ(check("work", "tpl-only", false, true, false), "<none>");
    EXPECT_EQ(check("sys-net", "net-only", false, true, false), "net");
    // dom0.
    EXPECT_EQ(check("work", "admin-only", false, false, true), "dom0");
    EXPECT_EQ(check("work", "admin-only", false, false, false), "<none>");
    EXPECT_EQ(check("work", "tpl-only", false, false, true), "dom0");
    // Template then dom0: the template wins.
    EXPECT_EQ(check("work", "tpl-only", true, false, true), "fedora");
    EXPECT_EQ(check("work", "admin-only", true, false, true), "dom0");
    EXPECT_EQ(check("work", "nowhere", true, false, true), "<none>");
    // An empty value is a value.
    q("work")->features["tpl-only"] = "";
    EXPECT_EQ(check("work", "tpl-only", true, false, true), "");
}

// --- labels and icons ----------------------------------------------------------------------

TEST_F(AdminModelTest, LabelInUse) {
    Label custom;
    ASSERT_EQ(model.labels().create("custom", "0x123456", &custom), LabelError::None);
    EXPECT_FALSE(model.label_in_use(custom.index));
    model.set(q("work"), "label", "custom");
    EXPECT_TRUE(model.label_in_use(custom.index));
    model.set(q("work"), "label", "blue");
    EXPECT_FALSE(model.label_in_use(custom.index));
    EXPECT_TRUE(model.label_in_use(1));    // red: fedora
    EXPECT_TRUE(model.label_in_use(8));    // black: debian, and dom0 by default
    EXPECT_FALSE(model.label_in_use(3));   // yellow
    EXPECT_FALSE(model.label_in_use(42));  // no such label
}

TEST_F(AdminModelTest, IconPerClass) {
    model.add(make_qube("StandaloneVM", "solo", 7, {{"label", "green"}}));
    model.add(make_qube("DispVM", "disp1", 8, {{"template", "dvm"}, {"label", "orange"}}));
    model.add(make_qube("RemoteVM", "far", 9, {{"label", "purple"}}));
    EXPECT_EQ(model.icon(*q("work")), "appvm-blue");
    EXPECT_EQ(model.icon(*q("fedora")), "templatevm-red");
    EXPECT_EQ(model.icon(*q("solo")), "standalonevm-green");
    EXPECT_EQ(model.icon(*q("disp1")), "dispvm-orange");
    EXPECT_EQ(model.icon(*q("far")), "remotevm-purple");
    EXPECT_EQ(model.icon(model.admin_vm()), "adminvm-black");
    EXPECT_EQ(value("work", "icon"), "appvm-blue");
    // A service qube is one with the "servicevm" feature (qubes.vm.qubesvm.icon),
    // not any qube that provides network.
    EXPECT_EQ(model.icon(*q("sys-net")), "appvm-red");
    q("sys-net")->features["servicevm"] = "1";
    EXPECT_EQ(model.icon(*q("sys-net")), "servicevm-red");
    q("work")->features["servicevm"] = "";  // false
    EXPECT_EQ(model.icon(*q("work")), "appvm-blue");
    model.set(q("work"), "label", "yellow");
    EXPECT_EQ(value("work", "icon"), "appvm-yellow");
}

// --- system info -------------------------------------------------------------------------

TEST_F(AdminModelTest, SystemInfoJson) {
    model.add(make_qube("DispVM", "disp1", 8, {{"template", "dvm"}}));
    model.add(make_qube("RemoteVM", "far", 9, {{"relayvm", "work"}, {"transport_rpc", "qubesair.SSHProxy"}}));
    model.set(nullptr, "default_dispvm", "dvm");
    model.set(q("work"), "guivm", "");
    q("work")->tags = {"b-tag", "a-tag"};
    q("work")->power_state = "Running";
    q("sys-net")->features["internal"] = "1";
    q("dvm")->features["internal"] = "";

    auto doc = nlohmann::json::parse(model.system_info_json());
    ASSERT_TRUE(doc.is_object());
    ASSERT_EQ(doc.size(), 1u);
    const auto& domains = doc.at("domains");
    ASSERT_TRUE(domains.is_object());
    EXPECT_EQ(domains.size(), model.size());
    const std::vector<std::string> keys = {"default_dispvm", "guivm", "icon", "internal", "label", "power_state",
                                           "relayvm", "tags", "template_for_dispvms", "transport_rpc", "type",
                                           "uuid"};
    for (const Qube* qube : model.qubes_by_name()) {
        SCOPED_TRACE(qube->name);
        ASSERT_TRUE(domains.contains(qube->name));
        const auto& d = domains.at(qube->name);
        std::vector<std::string> got;
        for (const auto& [k, v] : d.items()) got.push_back(k);
        EXPECT_EQ(got, keys);
        EXPECT_TRUE(d.at("tags").is_array());
        for (const auto& t : d.at("tags")) EXPECT_TRUE(t.is_string());
        EXPECT_EQ(d.at("type"), qube->klass);
        EXPECT_TRUE(d.at("template_for_dispvms").is_boolean());
        EXPECT_TRUE(d.at("default_dispvm").is_string() || d.at("default_dispvm").is_null());
        EXPECT_EQ(d.at("power_state"), qube->power_state);
        EXPECT_EQ(d.at("uuid"), qube->uuid);
        EXPECT_EQ(d.at("icon"), model.icon(*qube));
        EXPECT_EQ(d.at("label"), model.value_text(qube, "label"));
        EXPECT_TRUE(d.at("guivm").is_string() || d.at("guivm").is_null());
        EXPECT_TRUE(d.at("internal").is_boolean());
        EXPECT_TRUE(d.at("relayvm").is_string() || d.at("relayvm").is_null());
        EXPECT_TRUE(d.at("transport_rpc").is_string() || d.at("transport_rpc").is_null());
    }
    const auto& work = domains.at("work");
    EXPECT_EQ(work.at("tags"), nlohmann::json::array({"a-tag", "b-tag"}));
    EXPECT_EQ(work.at("power_state"), "Running");
    EXPECT_EQ(work.at("default_dispvm"), "dvm");
    EXPECT_TRUE(work.at("guivm").is_null());
    EXPECT_EQ(work.at("icon"), "appvm-blue");
    EXPECT_EQ(work.at("label"), "blue");
    EXPECT_EQ(work.at("internal"), false);
    EXPECT_TRUE(work.at("relayvm").is_null());
    EXPECT_EQ(domains.at("dvm").at("template_for_dispvms"), true);
    EXPECT_EQ(domains.at("dvm").at("internal"), false);  // empty: false
    EXPECT_EQ(domains.at("sys-net").at("internal"), true);
    EXPECT_EQ(domains.at("disp1").at("default_dispvm"), "dvm");
    EXPECT_EQ(domains.at("disp1").at("icon"), "dispvm-red");
    EXPECT_EQ(domains.at("fedora").at("guivm"), "dom0");
    const auto& dom0 = domains.at("dom0");
    EXPECT_EQ(dom0.at("type"), "AdminVM");
    EXPECT_EQ(dom0.at("uuid"), "00000000-0000-0000-0000-000000000000");
    EXPECT_EQ(dom0.at("power_state"), "Running");
    EXPECT_EQ(dom0.at("icon"), "adminvm-black");
    EXPECT_EQ(dom0.at("label"), "black");
    EXPECT_EQ(dom0.at("template_for_dispvms"), false);
    EXPECT_EQ(dom0.at("default_dispvm"), "dvm");
    EXPECT_TRUE(dom0.at("guivm").is_null());
    const auto& far = domains.at("far");
    EXPECT_EQ(far.at("relayvm"), "work");
    EXPECT_EQ(far.at("transport_rpc"), "qubesair.SSHProxy");
    EXPECT_EQ(far.at("icon"), "remotevm-red");
    EXPECT_TRUE(far.at("default_dispvm").is_null());
}

}  // namespace
}  // namespace aerie::admin
