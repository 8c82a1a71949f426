// qvm-features: lists (a `column -t` table), shows, sets or unsets a qube's
// features, as Qubes' qvm-features does. Showing a feature the qube does
// not have prints nothing and exits 1.
#include "tools/qvm_support.hpp"

using namespace aerie;
using tools::qvm::ToolCli;

namespace {

struct Options {
    std::string vm, feature, value;
    bool unset = false;
};

int list_features(const ToolCli& cli, const std::string& vm) {
    std::vector<std::vector<std::string>> rows;
    for (const auto& name : cli.client.feature_names(vm)) {
        auto value = cli.client.get_feature(vm, name);
        if (!value) throw admin::AdminError("QubesFeatureNotFoundError", name);
        rows.push_back({name, *value});
    }
    fmt::print("{}", tools::qvm::format_table(rows));
    return 0;
}

int run(ToolCli& cli, Options& opt, int argc, char** argv) {
    cli.parse(argc, argv);
    cli.require_positionals({{"VMNAME", cli.app.get_option("VMNAME")->count() > 0}});
    bool has_feature = cli.app.get_option("FEATURE")->count() > 0;
    bool has_value = cli.app.get_option("VALUE")->count() > 0;
    cli.resolve_qube(opt.vm);
    try {
        if (!has_feature) {
            if (opt.unset) cli.usage_error("--unset requires a feature");
            return list_features(cli, opt.vm);
        }
        if (opt.unset) {
            if (has_value) cli.usage_error("cannot both set and unset a value");
            try {
                cli.client.remove_feature(opt.vm, opt.feature);
            } catch (const admin::AdminError& e) {
                if (!e.is_key_error()) throw;  // not there: nothing to do
            }
            return 0;
        }
        if (!has_value) {
            try {
                auto value = cli.client.get_feature(opt.vm, opt.feature);
                if (!value) return 1;
                fmt::print("{}\n", *value);
                return 0;
            } catch (const admin::AdminError& e) {
                if (e.is_key_error()) return 1;
                throw;
            }
        }
        cli.client.set_feature(opt.vm, opt.feature, opt.value);
    } catch (const admin::AdminError& e) {
        cli.runtime_error(e.what());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    ToolCli cli("manage domain's features", "qvm-features");
    Options opt;
    cli.app.add_option("VMNAME", opt.vm, "a domain name");
    cli.app.add_option("FEATURE", opt.feature, "name of the feature");
    cli.app.add_option("VALUE", opt.value, "new value of the feature");
    cli.app.add_flag("-D,--unset,--default,--delete", opt.unset, "unset the feature");
    cli.usage_optionals.insert(cli.usage_optionals.end(), {"[--unset]"});
    cli.usage_positionals = {"VMNAME", "[FEATURE]", "[VALUE]"};
    return tools::qvm::run_tool(cli, [&] { return run(cli, opt, argc, argv); });
}
