// qvm-remove: removes qubes (admin.vm.Remove) after asking, as Qubes'
// qvm-remove does. A qube still in use is refused by the daemon
// (QubesVMInUseError); the tool then lists where it is used, as
// qubesadmin.utils.vm_dependencies() finds it, and prints the daemon's
// message.
#include <iostream>

#include "tools/qvm_support.hpp"

using namespace aerie;
using tools::qvm::ToolCli;

namespace {

struct Options {
    bool all = false, force = false;
    std::vector<std::string> exclude, vmnames;
};

// getattr(holder, prop, None) and whether it is the default, for one
// holder's properties (GetAll, else one Get each). Failures read as None.
struct Refs {
    std::optional<std::map<std::string, admin::PropertyValue>> all;
    const admin::AdminClient* client;
    std::string holder;  // "" for the global properties

    std::optional<admin::PropertyValue> get(const std::string& prop) const {
        if (all) {
            auto it = all->find(prop);
            return it == all->end() ? std::nullopt : std::optional(it->second);
        }
        try {
            return client->get_property(holder, prop);
        } catch (const admin::AdminError& e) {
            if (e.is_attribute_error() || e.is_access_error() || e.type() == "QubesVMNotFoundError")
                return std::nullopt;
            throw;
        }
    }
};

// Where `target` is used: global properties (holder "") naming it, and
// other qubes' explicitly set vm properties.
std::vector<std::pair<std::string, std::string>> dependencies(const admin::AdminClient& client,
                                                              const std::string& target) {
    std::vector<std::pair<std::string, std::string>> out;
    Refs globals{client.get_all_properties(""), &client, ""};
    for (const char* prop : {"default_dispvm", "default_netvm", "default_guivm", "default_audiovm",
                             "default_template", "clockvm", "updatevm", "management_dispvm"}) {
        auto v = globals.get(prop);
        if (v && v->value == target) out.emplace_back("", prop);
    }
    for (const auto& q : client.list_qubes()) {
        if (q.name == target) continue;
        Refs refs{client.get_all_properties(q.name), &client, q.name};
        auto preload = refs.get("is_preload");
        bool is_preload = preload && preload->value == "True";
        for (const char* prop :
             {"template", "netvm", "guivm", "audiovm", "default_dispvm", "management_dispvm"}) {
            auto v = refs.get(prop);
            if (!v || v->unset() || v->is_default || v->value != target) continue;
            if (is_preload && std::string_view(prop) == "template") continue;
            out.emplace_back(q.name, prop);
        }
    }
    return out;
}

void remove_one(const ToolCli& cli, const std::string& name) {
    try {
        cli.client.remove_qube(name);
    } catch (const admin::AdminError& e) {
        if (e.type() == "QubesVMInUseError") {
            auto deps = dependencies(cli.client, name);
            if (!deps.empty()) fmt::print("VM {} cannot be removed. It is in use as:\n", name);
            for (const auto& [holder, prop] : deps) {
                if (holder.empty())
                    fmt::print(" - global property {}\n", prop);
                else
                    fmt::print(" - {} for {}\n", prop, holder);
            }
            std::fflush(stdout);
        }
        cli.runtime_error(e.what());
    }
}

// input("Are you sure? [y/N] "): end of input is Python's EOFError.
bool confirmed(const std::vector<std::string>& names) {
    fmt::print("This will completely remove the selected VM(s)...\n");
    for (const auto& name : names) fmt::print("  {}\n", name);
    fmt::print("Are you sure? [y/N] ");
    std::fflush(stdout);
    std::string answer;
    if (!std::getline(std::cin, answer)) {
        fmt::print(stderr, "EOFError: EOF when reading a line\n");
        throw tools::qvm::ExitStatus{1};
    }
    return answer == "y" || answer == "Y";
}

int run(ToolCli& cli, Options& opt, int argc, char** argv) {
    cli.parse(argc, argv);
    CLI::Option* all = cli.app.get_option("--all");
    CLI::Option* vmname = cli.app.get_option("VMNAME");
    cli.check_exclusive({{all, "--all"}, {vmname, "VMNAME"}});
    if (!opt.all && opt.vmnames.empty()) cli.usage_error("one of the arguments --all VMNAME is required");
    auto qubes = cli.client.list_qubes();
    std::vector<std::string> names;
    if (opt.all) {
        for (const auto& q : qubes)
            if (q.klass != "AdminVM" &&
                std::find(opt.exclude.begin(), opt.exclude.end(), q.name) == opt.exclude.end())
                names.push_back(q.name);
        std::sort(names.begin(), names.end());
    } else {
        if (!opt.exclude.empty()) cli.usage_error("--exclude can only be used with --all");
        names = cli.resolve_qubes(opt.vmnames, qubes);
    }
    if (!opt.force && !confirmed(names)) {
        fmt::print("Remove cancelled.\n");
        return 1;
    }
    for (const auto& name : names) remove_one(cli, name);
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    ToolCli cli("Remove domains from the system", "qvm-remove");
    Options opt;
    cli.app.add_flag("--all", opt.all, "perform the action on all qubes");
    cli.app.add_option("--exclude", opt.exclude, "exclude the qube from --all")
        ->take_all()
        ->expected(1)
        ->allow_extra_args(false);
    cli.app.add_flag("-f,--force", opt.force, "Do not prompt for confirmation");
    cli.app.add_option("VMNAME", opt.vmnames, "one or more domain names");
    cli.usage_optionals.insert(cli.usage_optionals.end(), {"[--all]", "[--exclude EXCLUDE]", "[--force]"});
    cli.usage_positionals = {"[VMNAME ...]"};
    return tools::qvm::run_tool(cli, [&] { return run(cli, opt, argc, argv); });
}
