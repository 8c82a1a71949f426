// qvm-pause: pauses qubes (admin.vm.Pause; with --suspend, admin.vm.Suspend),
// as Qubes' qvm-pause does: each failure is reported as "Error: MESSAGE" and
// makes the exit code 1, the other qubes being paused all the same.
#include "tools/qvm_support.hpp"

using namespace aerie;
using tools::qvm::ToolCli;

namespace {

struct Options {
    tools::qvm::VmNames vms;
    bool suspend = false;
};

int run(ToolCli& cli, Options& opt, int argc, char** argv) {
    cli.parse(argc, argv);
    tools::qvm::check_vm_names(cli, opt.vms);
    int exit_code = 0;
    for (const auto& domain : tools::qvm::chosen_qubes(cli, opt.vms, cli.client.list_qubes())) {
        try {
            if (opt.suspend)
                cli.client.suspend(domain.name);
            else
                cli.client.pause(domain.name);
        } catch (const admin::AdminError& e) {
            exit_code = 1;
            cli.print_error(e.what());
        }
    }
    return exit_code;
}

}  // namespace

int main(int argc, char** argv) {
    ToolCli cli("pause a qube", "qvm-pause");
    cli.app.footer("Paused qubes will be killed on system shutdown.");
    Options opt;
    tools::qvm::add_vm_names(cli, opt.vms);
    cli.app.add_flag("-S,--suspend", opt.suspend, "Put the qube to (S3) suspend mode instead of emergency pause");
    cli.usage_optionals.push_back("[--suspend]");
    cli.usage_positionals = {"[VMNAME ...]"};
    return tools::qvm::run_tool(cli, [&] { return run(cli, opt, argc, argv); });
}
