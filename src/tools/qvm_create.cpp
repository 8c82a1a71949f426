// qvm-create: creates a qube (admin.vm.Create.<class>[+TEMPLATE] with
// "name=N label=L"), then sets the --property values, as Qubes' qvm-create
// does. A StandaloneVM with a template is a clone of that template.
// Exit codes: 0, 1 (not created), 2 (argument error, or created but a
// property failed), 3 (created but the root volume was not imported).
#include <sys/stat.h>

#include <map>

#include "tools/qvm_support.hpp"

using namespace aerie;
using tools::qvm::ToolCli;

namespace {

struct Options {
    std::string klass = "AppVM";
    bool standalone = false, disp = false, help_classes = false, no_root = false;
    std::vector<std::string> property_args, pool_args;
    std::string one_pool, template_name, label, name, root_copy_from, root_move_from;
};

// The properties in command-line order (a later value wins, the first
// position stays), as the tool's PropertyAction/SinglePropertyAction build
// their dict: --property/--prop NAME=VALUE, --template, --label and VMNAME.
using Properties = std::vector<std::pair<std::string, std::string>>;

void put(Properties& props, const std::string& key, const std::string& value) {
    for (auto& [k, v] : props)
        if (k == key) {
            v = value;
            return;
        }
    props.emplace_back(key, value);
}

const std::string* find(const Properties& props, const std::string& key) {
    for (const auto& [k, v] : props)
        if (k == key) return &v;
    return nullptr;
}

std::string take(Properties& props, const std::string& key) {
    std::string value;
    std::erase_if(props, [&](const auto& kv) {
        if (kv.first != key) return false;
        value = kv.second;
        return true;
    });
    return value;
}

Properties collect_properties(const ToolCli& cli, const Options& opt) {
    Properties props;
    size_t next_prop = 0;
    for (const CLI::Option* o : cli.app.parse_order()) {
        if (o->check_name("--property")) {
            const std::string& token = opt.property_args.at(next_prop++);
            size_t eq = token.find('=');
            if (eq == std::string::npos)
                cli.usage_error("invalid property token: " + tools::qvm::py_repr(token));
            put(props, token.substr(0, eq), token.substr(eq + 1));
        } else if (o->check_name("--template")) {
            put(props, "template", opt.template_name);
        } else if (o->check_name("--label")) {
            put(props, "label", opt.label);
        } else if (o->check_name("VMNAME")) {
            put(props, "name", opt.name);
        }
    }
    return props;
}

tools::qvm::ClonePools collect_pools(const ToolCli& cli, const Options& opt) {
    tools::qvm::ClonePools pools;
    std::map<std::string, std::string> per_volume;
    for (const auto& arg : opt.pool_args) {
        size_t eq = arg.find('=');
        if (eq == std::string::npos || arg.find('=', eq + 1) != std::string::npos)
            cli.usage_error("Pool argument must be of form: -P volume_name=pool_name");
        per_volume[arg.substr(0, eq)] = arg.substr(eq + 1);
    }
    pools.per_volume.assign(per_volume.begin(), per_volume.end());
    pools.pool = opt.one_pool;
    return pools;
}

bool file_exists(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
}

// app.get_label(): a label name, or the index of one.
void check_label(const ToolCli& cli, const std::string& label) {
    auto names = cli.client.label_names();
    if (std::find(names.begin(), names.end(), label) != names.end()) return;
    if (!label.empty() && std::all_of(label.begin(), label.end(), ::isdigit)) {
        for (const auto& name : names)
            if (std::to_string(cli.client.get_label(name).index) == label) return;
    }
    cli.usage_error("no such label: " + tools::qvm::py_repr(label) +
                    "; available: " + tools::qvm::join(names, ", "));
}

int help_classes(const ToolCli& cli) {
    std::string body = cli.client.call("dom0", "admin.vmclass.List");
    std::vector<std::string> classes;
    for (size_t pos = 0; pos < body.size();) {
        size_t nl = body.find('\n', pos);
        classes.push_back(body.substr(pos, nl - pos));
        pos = nl == std::string::npos ? body.size() : nl + 1;
    }
    std::sort(classes.begin(), classes.end());
    fmt::print("{}\n", tools::qvm::join(classes, "\n"));
    return 0;
}

// Creates the qube; false (logged) when that failed.
bool create(const ToolCli& cli, const Options& opt, Properties& props, const tools::qvm::ClonePools& pools) {
    try {
        if (opt.klass == "StandaloneVM" && find(props, "template")) {
            // A template-based StandaloneVM is a clone of the template.
            std::string source = take(props, "template");
            tools::qvm::clone_qube(cli, source, take(props, "name"), opt.klass, pools, false);
        } else {
            std::string name = take(props, "name"), label = take(props, "label");
            tools::qvm::create_qube_in(cli.client, opt.klass, take(props, "template"), name, label, pools);
        }
    } catch (const admin::AdminError& e) {
        cli.log_error("app", std::string("Error creating VM: ") + e.what());
        return false;
    }
    return true;
}

int run(ToolCli& cli, Options& opt, int argc, char** argv) {
    cli.parse(argc, argv);
    cli.check_exclusive({{cli.app.get_option("--root-copy-from"), "--root-copy-from/-r"},
                         {cli.app.get_option("--root-move-from"), "--root-move-from/-R"},
                         {cli.app.get_option("--no-root"), "--no-root"}});
    if (opt.help_classes) return help_classes(cli);
    auto pools = collect_pools(cli, opt);
    Properties props = collect_properties(cli, opt);
    if (opt.disp) {
        if (!find(props, "label")) put(props, "label", "red");
        opt.klass = "DispVM";
    }
    if (opt.standalone) opt.klass = "StandaloneVM";
    if (!find(props, "label")) cli.usage_error("--label option is mandatory");
    if (!find(props, "name")) cli.usage_error("VMNAME is mandatory");
    std::string root = !opt.root_copy_from.empty() ? opt.root_copy_from : opt.root_move_from;
    if (!root.empty() && !file_exists(root))
        cli.usage_error("File pointed by --root-copy-from/--root-move-from does not exist");
    if (!root.empty() && (opt.klass == "AppVM" || opt.klass == "DispVM"))
        cli.usage_error(
            "--root-copy-from/--root-move-from used but this qube does not have own 'root' volume "
            "(uses template's one)");
    check_label(cli, *find(props, "label"));
    // Qubes here have no volumes yet: refuse a root image before creating anything.
    if (!root.empty()) cli.runtime_error("cannot import a root volume: qubes have no volumes yet");

    std::string name = *find(props, "name");
    if (!create(cli, opt, props, pools)) return 1;
    int rc = 0;
    for (const auto& [prop, value] : props) {
        try {
            cli.client.set_property(name, prop, value);
        } catch (const admin::AdminError& e) {
            cli.log_error("app", fmt::format("Error setting property {} (but VM created): {}", prop,
                                             tools::qvm::property_error_text(e, prop)));
            rc = 2;
        }
    }
    return rc;
}

void add_options(ToolCli& cli, Options& opt) {
    auto& app = cli.app;
    app.add_option("-C,--class", opt.klass, "specify the class of the new domain (default: AppVM)");
    app.add_flag("--standalone", opt.standalone, "shortcut for --class StandaloneVM");
    app.add_flag("--disp", opt.disp, "alias for --class DispVM --label red");
    app.add_option("--property,--prop", opt.property_args,
                   "set domain's property, like \"internal\", \"memory\" or \"vcpus\"")
        ->take_all()
        ->expected(1)
        ->allow_extra_args(false);
    app.add_option("-p,--pool", opt.pool_args, "specify the pool to use for a volume")
        ->take_all()
        ->expected(1)
        ->allow_extra_args(false);
    app.add_option("-P", opt.one_pool, "change all volume pools to specified pool");
    app.add_option("-t,--template", opt.template_name, "specify the TemplateVM to use");
    app.add_option("-l,--label", opt.label,
                   "specify the label to use for the new domain (e.g. red, yellow, green, ...)");
    app.add_flag("--help-classes", opt.help_classes, "List available classes and exit");
    app.add_option("-r,--root-copy-from", opt.root_copy_from,
                   "use provided root.img instead of default/empty one (file will be COPIED)");
    app.add_option("-R,--root-move-from", opt.root_move_from,
                   "use provided root.img instead of default/empty one (file will be MOVED)");
    app.add_flag("--no-root", opt.no_root)->group("");  // silently ignored, as upstream
    app.add_option("VMNAME", opt.name, "name of the domain to create");
}

}  // namespace

int main(int argc, char** argv) {
    ToolCli cli("Create a new qube.", "qvm-create");
    Options opt;
    add_options(cli, opt);
    cli.usage_optionals.insert(
        cli.usage_optionals.end(),
        {"[--class CLS]", "[--standalone]", "[--disp]", "[--property NAME=VALUE]",
         "[--pool VOLUME_NAME=POOL_NAME]", "[-P POOL_NAME]", "[--template VALUE]", "[--label VALUE]",
         "[--help-classes]", "[--root-copy-from FILENAME | --root-move-from FILENAME]"});
    cli.usage_positionals = {"[VMNAME]"};
    return tools::qvm::run_tool(cli, [&] { return run(cli, opt, argc, argv); });
}
