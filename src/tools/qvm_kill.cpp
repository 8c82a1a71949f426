// qvm-kill: forceful shutdown (admin.vm.Kill), as Qubes' qvm-kill does. A
// qube that is not running is no error; any other failure is reported as
// "Error: Failed to kill 'NAME': MESSAGE" and makes the exit code 1, the
// other qubes being killed all the same.
#include "tools/qvm_support.hpp"

using namespace aerie;
using tools::qvm::ToolCli;

namespace {

int run(ToolCli& cli, tools::qvm::VmNames& vms, int argc, char** argv) {
    cli.parse(argc, argv);
    tools::qvm::check_vm_names(cli, vms);
    int exit_code = 0;
    for (const auto& domain : tools::qvm::chosen_qubes(cli, vms, cli.client.list_qubes())) {
        try {
            cli.client.kill(domain.name);
        } catch (const admin::AdminError& e) {
            if (e.is_instance_of("QubesVMNotStartedError")) continue;
            exit_code = 1;
            cli.print_error("Failed to kill '" + domain.name + "': " + e.what());
        }
    }
    return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
    ToolCli cli("forceful shutdown of a domain", "qvm-kill");
    tools::qvm::VmNames vms;
    tools::qvm::add_vm_names(cli, vms);
    cli.usage_positionals = {"[VMNAME ...]"};
    return tools::qvm::run_tool(cli, [&] { return run(cli, vms, argc, argv); });
}
