// qvm-prefs: list, show, set or reset a qube's properties, as Qubes'
// qvm-prefs does. Listing: "NAME  D  VALUE" (D: default, -: set, U: unset
// without a default), names padded to the longest.
#include <map>
#include <optional>

#include "tools/qvm_support.hpp"

using namespace aerie;
using tools::qvm::ToolCli;

namespace {

// What qubesadmin prints for a value (str() of the Python object).
std::string display(const admin::PropertyValue& v) {
    return v.is_none() ? "None" : v.value;
}

// A property lookup failing the way qubesadmin turns into AttributeError:
// no such property, or the daemon refused (QubesPropertyAccessError).
bool is_missing_property(const admin::AdminError& e) {
    return e.is_attribute_error() || e.is_access_error() || e.type() == "QubesVMNotFoundError";
}

struct Options {
    std::string vm, property, value;
    bool has_property = false, has_value = false;
    bool help_properties = false, hide_default = false, reset = false;
};

// One listing row; nullopt when --hide-default hides it.
std::optional<std::string> listing_line(const std::string& name, size_t width,
                                        const std::optional<admin::PropertyValue>& v, bool hide_default) {
    std::string padded = tools::qvm::pad_right(name, width);
    if (!v || v->unset()) return padded + "  U";
    if (!v->is_default) return padded + "  -  " + display(*v);
    if (hide_default) return std::nullopt;
    return padded + "  D  " + display(*v);
}

int list_properties(const ToolCli& cli, const Options& opt) {
    auto names = cli.client.property_names(opt.vm);
    size_t width = 0;
    for (const auto& n : names) width = std::max(width, n.size());
    // One GetAll instead of a Get per property, as qubesadmin's cache does.
    auto all = cli.client.get_all_properties(opt.vm);
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
        std::optional<admin::PropertyValue> v;
        if (all) {
            if (auto it = all->find(name); it != all->end()) v = it->second;
        } else {
            try {
                v = cli.client.get_property(opt.vm, name);
            } catch (const admin::AdminError& e) {
                if (!is_missing_property(e)) throw;
            }
        }
        if (auto line = listing_line(name, width, v, opt.hide_default)) fmt::print("{}\n", *line);
    }
    return 0;
}

int help_properties(const ToolCli& cli, const Options& opt) {
    auto names = cli.client.property_names(opt.vm);
    size_t width = 0;
    for (const auto& n : names) width = std::max(width, n.size());
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
        std::string text = tools::qvm::pad_right(name, width) + "  " + cli.client.property_help(opt.vm, name);
        fmt::print("{}\n", tools::qvm::wrap_text(text, 80, "  ", std::string(width + 6, ' ')));
    }
    return 0;
}

// Runs one change or lookup, reporting errors as upstream: a missing
// property is an argument error (2), anything else a runtime error (1).
template <typename Fn>
void property_action(const ToolCli& cli, const std::string& property, Fn&& fn) {
    try {
        fn();
    } catch (const admin::AdminError& e) {
        if (is_missing_property(e)) cli.usage_error("no such property: " + tools::qvm::py_repr(property));
        cli.runtime_error(e.what());
    }
}

int show_property(const ToolCli& cli, const Options& opt, const std::string& property) {
    property_action(cli, property, [&] {
        auto v = cli.client.get_property(opt.vm, property);
        if (v.unset()) throw admin::AdminError("AttributeError", property);
        if (!v.is_none()) fmt::print("{}\n", v.value);
    });
    return 0;
}

int set_property(const ToolCli& cli, const Options& opt, const std::string& property) {
    std::string value = opt.value;
    // "none" clears a qube-valued property, as in qvm-prefs.
    static const std::set<std::string> kVmProperties = {"default_dispvm", "netvm", "template", "guivm",
                                                        "audiovm"};
    std::string lower = value;
    std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
    if (lower == "none" && kVmProperties.count(property)) value.clear();
    property_action(cli, property, [&] { cli.client.set_property(opt.vm, property, value); });
    return 0;
}

int run(ToolCli& cli, Options& opt, int argc, char** argv) {
    cli.parse(argc, argv);
    cli.require_positionals({{"VMNAME", cli.app.get_option("VMNAME")->count() > 0}});
    cli.resolve_qube(opt.vm);
    opt.has_property = cli.app.get_option("PROPERTY")->count() > 0;
    opt.has_value = cli.app.get_option("VALUE")->count() > 0;

    if (opt.help_properties) return help_properties(cli, opt);
    if (!opt.has_property) return list_properties(cli, opt);
    std::string property = opt.property;
    std::transform(property.begin(), property.end(), property.begin(), ::tolower);
    std::replace(property.begin(), property.end(), '-', '_');
    if (opt.has_value) return set_property(cli, opt, property);
    if (opt.reset) {
        property_action(cli, property, [&] { cli.client.reset_property(opt.vm, property); });
        return 0;
    }
    return show_property(cli, opt, property);
}

}  // namespace

int main(int argc, char** argv) {
    ToolCli cli("Manipulate VM properties.", "qvm-prefs");
    Options opt;
    bool ignored = false;
    cli.app.add_flag("--help-properties", opt.help_properties,
                     "list all available properties with short descriptions and exit");
    cli.app.add_flag("--hide-default", opt.hide_default,
                     "Do not show properties that are set to the default value.");
    cli.app.add_flag("-g,--get", ignored, "Ignored; for compatibility with older scripts.");
    cli.app.add_flag("-s,--set", ignored, "Ignored; for compatibility with older scripts.");
    cli.app.add_flag("-D,--default", opt.reset, "reset property to its default value");
    cli.app.add_option("VMNAME", opt.vm, "a domain name");
    cli.app.add_option("PROPERTY", opt.property, "name of the property to show or change");
    cli.app.add_option("VALUE", opt.value, "new value of the property");
    cli.usage_optionals.insert(cli.usage_optionals.end(), {"[--help-properties]", "[--hide-default]",
                                                           "[--get]", "[--set]", "[--default]"});
    cli.usage_positionals = {"VMNAME", "[PROPERTY]", "[VALUE]"};
    return tools::qvm::run_tool(cli, [&] { return run(cli, opt, argc, argv); });
}
