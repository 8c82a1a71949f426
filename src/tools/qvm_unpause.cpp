// qvm-unpause: unpauses qubes (admin.vm.Unpause; a suspended one is resumed
// with admin.vm.Resume), as Qubes' qvm-unpause does. --all leaves out the
// qubes with the "internal" feature. Each failure is reported as
// "Error: MESSAGE" and makes the exit code 1.
#include "tools/qvm_support.hpp"

using namespace aerie;
using tools::qvm::ToolCli;

namespace {

// features.get("internal") is truthy: set, and not to "".
bool is_internal(const admin::AdminClient& client, const std::string& vm) {
    auto value = client.get_feature(vm, "internal");
    return value && !value->empty();
}

int run(ToolCli& cli, tools::qvm::VmNames& vms, int argc, char** argv) {
    cli.parse(argc, argv);
    tools::qvm::check_vm_names(cli, vms);
    auto domains = tools::qvm::chosen_qubes(cli, vms, cli.client.list_qubes());
    if (vms.all) std::erase_if(domains, [&](const admin::QubeInfo& q) { return is_internal(cli.client, q.name); });
    int exit_code = 0;
    for (const auto& domain : domains) {
        try {
            if (cli.client.power_state(domain.name) == "Suspended")
                cli.client.resume(domain.name);
            else
                cli.client.unpause(domain.name);
        } catch (const admin::AdminError& e) {
            exit_code = 1;
            cli.print_error(e.what());
        }
    }
    return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
    ToolCli cli("unpause a domain", "qvm-unpause");
    tools::qvm::VmNames vms;
    tools::qvm::add_vm_names(cli, vms);
    cli.usage_positionals = {"[VMNAME ...]"};
    return tools::qvm::run_tool(cli, [&] { return run(cli, vms, argc, argv); });
}
