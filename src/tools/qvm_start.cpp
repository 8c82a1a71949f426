// qvm-start: starts qubes (admin.vm.Start), as Qubes' qvm-start does. A qube
// that already runs ends the tool with "Error: domain NAME is already
// running" and exit code 1, unless --skip-if-running; a failed start is
// reported ("Error: MESSAGE") and the next qube is tried, the exit code
// being 1. (Qubes' --drive, --hddisk, --cdrom and --install-windows-tools
// attach block devices, which Aerie does not have.)
#include "tools/qvm_support.hpp"

using namespace aerie;
using tools::qvm::ToolCli;

namespace {

struct Options {
    tools::qvm::VmNames vms;
    bool skip_if_running = false;
};

bool is_running(const std::string& state) { return state != "Halted" && state != "NA"; }

int run(ToolCli& cli, Options& opt, int argc, char** argv) {
    cli.parse(argc, argv);
    tools::qvm::check_vm_names(cli, opt.vms);
    auto domains = tools::qvm::chosen_qubes(cli, opt.vms, cli.client.list_qubes());
    int exit_code = 0;
    for (const auto& domain : domains) {
        if (is_running(cli.client.power_state(domain.name))) {
            if (opt.skip_if_running) continue;
            cli.print_error("domain " + domain.name + " is already running");
            return 1;
        }
        try {
            cli.client.start(domain.name);
        } catch (const admin::AdminError& e) {
            exit_code = 1;
            cli.print_error(e.what());
        }
    }
    return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
    ToolCli cli("start a domain", "qvm-start");
    Options opt;
    tools::qvm::add_vm_names(cli, opt.vms);
    cli.app.add_flag("--skip-if-running", opt.skip_if_running, "Do not fail if the qube is already runnning");
    cli.usage_optionals.push_back("[--skip-if-running]");
    cli.usage_positionals = {"[VMNAME ...]"};
    return tools::qvm::run_tool(cli, [&] { return run(cli, opt, argc, argv); });
}
