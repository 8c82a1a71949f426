// qvm-check: whether qubes exist, and with --running, --paused, --template,
// --networked whether they are so, as Qubes' qvm-check says it: through its
// "qvm-check" logger ("qvm-check: NAME: running, paused", or "qvm-check: None
// of qubes: running"), names not found as warnings ("NAME: non-existent!").
// Exit codes: 0 when all given qubes exist (and pass the checks), 3 when only
// some pass, 1 when none does or a name is not found. Unlike the other tools,
// an unknown name is no argument error.
#include <fnmatch.h>

#include "tools/qvm_support.hpp"

using namespace aerie;
using tools::qvm::ToolCli;

namespace {

struct Options {
    tools::qvm::VmNames vms;
    bool running = false, paused = false, is_template = false, networked = false;
};

struct Filter {
    std::string status;
    std::function<bool(const admin::QubeInfo&)> check;
};

// A property's value, "" when the qube lacks it or it is None.
std::string property_or_empty(const admin::AdminClient& client, const std::string& vm, const char* name) {
    try {
        return client.get_property(vm, name).value;
    } catch (const admin::AdminError& e) {
        if (e.is_attribute_error() || e.is_access_error()) return {};
        throw;
    }
}

// QubesVM.is_networked(): it provides network, or it has a netvm.
bool is_networked(const admin::AdminClient& client, const std::string& vm) {
    if (property_or_empty(client, vm, "provides_network") == "True") return true;
    return !property_or_empty(client, vm, "netvm").empty();
}

// The qubes a name list selects, and (sorted) the names that select none:
// QvmCheckArgumentParser keeps "no such domain" out of argparse's errors.
std::vector<admin::QubeInfo> choose(const ToolCli& cli, const Options& opt, const std::vector<admin::QubeInfo>& qubes,
                                    std::vector<std::string>& invalid) {
    if (opt.vms.all) return tools::qvm::chosen_qubes(cli, opt.vms, qubes);
    if (!opt.vms.exclude.empty()) cli.usage_error("--exclude can only be used with --all");
    std::set<std::string> chosen;
    for (const auto& name : opt.vms.names) {
        if (name.find_first_of("*?[!]") != std::string::npos) {
            for (const auto& q : qubes)
                if (::fnmatch(name.c_str(), q.name.c_str(), FNM_NOESCAPE) == 0) chosen.insert(q.name);
            continue;
        }
        bool found = std::any_of(qubes.begin(), qubes.end(), [&](const auto& q) { return q.name == name; });
        if (found)
            chosen.insert(name);
        else if (std::find(invalid.begin(), invalid.end(), name) == invalid.end())
            invalid.push_back(name);
    }
    std::sort(invalid.begin(), invalid.end());
    std::vector<admin::QubeInfo> out;
    for (const auto& q : qubes)
        if (chosen.count(q.name)) out.push_back(q);
    return out;
}

void print_msg(const ToolCli& cli, const std::vector<std::string>& names, const std::vector<std::string>& status) {
    std::string joined = tools::qvm::join(status, ", ");
    if (names.empty()) {
        cli.log_info("qvm-check", "None of qubes: " + joined);
        return;
    }
    for (const auto& name : names) cli.log_info("qvm-check", name + ": " + joined);
}

int run(ToolCli& cli, Options& opt, int argc, char** argv) {
    cli.parse(argc, argv);
    tools::qvm::check_vm_names(cli, opt.vms);
    std::vector<std::string> invalid;
    auto domains = choose(cli, opt, cli.client.list_qubes(), invalid);
    const admin::AdminClient& client = cli.client;

    auto state_is = [&](const admin::QubeInfo& q, bool running) {
        std::string state = client.power_state(q.name);
        return running ? state != "Halted" && state != "NA" : state == "Paused";
    };
    std::vector<Filter> filters;
    if (opt.running) filters.push_back({"running", [&](const auto& q) { return state_is(q, true); }});
    if (opt.paused) filters.push_back({"paused", [&](const auto& q) { return state_is(q, false); }});
    if (opt.is_template)
        filters.push_back({"template", [](const auto& q) { return q.klass == "TemplateVM"; }});
    if (opt.networked)
        filters.push_back({"networked", [&](const auto& q) { return is_networked(client, q.name); }});

    int return_code = 0;
    std::vector<std::string> names;
    for (const auto& q : domains) names.push_back(q.name);
    std::sort(names.begin(), names.end());
    if (!filters.empty()) {
        std::set<std::string> passing(names.begin(), names.end());
        std::vector<std::string> status;
        for (const auto& filter : filters) {
            status.push_back(filter.status);
            std::set<std::string> passed;
            for (const auto& q : domains)
                if (filter.check(q)) passed.insert(q.name);
            std::set<std::string> both;
            std::set_intersection(passing.begin(), passing.end(), passed.begin(), passed.end(),
                                  std::inserter(both, both.end()));
            passing = std::move(both);
        }
        if (passing.size() != names.size()) return_code = passing.empty() ? 1 : 3;
        print_msg(cli, {passing.begin(), passing.end()}, status);
    } else if (domains.empty()) {
        return_code = 1;
    } else {
        print_msg(cli, names, {"exists"});
    }
    if (!invalid.empty()) {
        for (const auto& name : invalid) cli.log_error("qvm-check", name + ": non-existent!");
        return_code = 1;
    }
    return return_code;
}

}  // namespace

int main(int argc, char** argv) {
    ToolCli cli("Exits sucessfull if the provided domain(s) exist, else returns failure", "qvm-check");
    Options opt;
    tools::qvm::add_vm_names(cli, opt.vms);
    cli.app.add_flag("--running", opt.running, "Determine if (any of given) VM is running");
    cli.app.add_flag("--paused", opt.paused, "Determine if (any of given) VM is paused");
    cli.app.add_flag("--template", opt.is_template, "Determine if (any of given) VM is a template");
    cli.app.add_flag("--networked", opt.networked, "Determine if (any of given) VM can reach network");
    cli.usage_optionals.insert(cli.usage_optionals.end(),
                               {"[--running]", "[--paused]", "[--template]", "[--networked]"});
    cli.usage_positionals = {"[VMNAME ...]"};
    return tools::qvm::run_tool(cli, [&] { return run(cli, opt, argc, argv); });
}
