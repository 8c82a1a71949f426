// qvm-clone: creates a copy of a qube (its class, template, label, the
// properties set on it, its tags and features), as Qubes' qvm-clone does
// through qubesadmin's Qubes.clone_vm().
#include <map>

#include "tools/qvm_support.hpp"

using namespace aerie;
using tools::qvm::ToolCli;

namespace {

struct Options {
    std::string vm, new_name, klass, one_pool;
    std::vector<std::string> pool_args;
    bool ignore_errors = false;
};

tools::qvm::ClonePools collect_pools(const ToolCli& cli, const Options& opt) {
    tools::qvm::ClonePools pools;
    if (!opt.one_pool.empty()) {
        pools.pool = opt.one_pool;
        return pools;
    }
    std::map<std::string, std::string> per_volume;
    for (const auto& arg : opt.pool_args) {
        size_t eq = arg.find('=');
        if (eq == std::string::npos || arg.find('=', eq + 1) != std::string::npos)
            cli.usage_error("Pool argument must be of form: -P volume_name=pool_name");
        per_volume[arg.substr(0, eq)] = arg.substr(eq + 1);
    }
    pools.per_volume.assign(per_volume.begin(), per_volume.end());
    return pools;
}

int run(ToolCli& cli, Options& opt, int argc, char** argv) {
    cli.parse(argc, argv);
    cli.check_exclusive({{cli.app.get_option("-P"), "-P"}, {cli.app.get_option("--pool"), "-p/--pool"}});
    cli.require_positionals({{"VMNAME", cli.app.get_option("VMNAME")->count() > 0},
                             {"NEWVM", cli.app.get_option("NEWVM")->count() > 0}});
    cli.resolve_qube(opt.vm);
    auto pools = collect_pools(cli, opt);
    try {
        tools::qvm::clone_qube(cli, opt.vm, opt.new_name, opt.klass, pools, opt.ignore_errors);
    } catch (const admin::AdminError& e) {
        cli.runtime_error(e.what());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    ToolCli cli("Clone a domain", "qvm-clone");
    Options opt;
    auto& app = cli.app;
    app.add_option("-C,--class", opt.klass, "specify the class of the new domain (default: same as source)");
    app.add_flag("--ignore-errors", opt.ignore_errors,
                 "log errors encountered during setting metadata but continue clone operation");
    app.add_option("-P", opt.one_pool, "pool to use for the new domain");
    app.add_option("-p,--pool", opt.pool_args, "specify the pool to use for the specific volume")
        ->take_all()
        ->expected(1)
        ->allow_extra_args(false);
    app.add_option("VMNAME", opt.vm, "a domain name");
    app.add_option("NEWVM", opt.new_name, "name of the domain to create");
    cli.usage_optionals.insert(cli.usage_optionals.end(),
                               {"[--class CLS]", "[--ignore-errors]", "[-P POOL | --pool VOLUME=POOL]"});
    cli.usage_positionals = {"VMNAME", "NEWVM"};
    return tools::qvm::run_tool(cli, [&] { return run(cli, opt, argc, argv); });
}
