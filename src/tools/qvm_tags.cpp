// qvm-tags: lists, queries, adds or removes a qube's tags, as Qubes'
// qvm-tags does: `qvm-tags VM [list [TAG]]`, `qvm-tags VM add TAG...`,
// `qvm-tags VM del TAG` (and the aliases ls/l, a/set, d/unset/u). A query
// for a tag the qube lacks prints nothing and exits 1.
#include <climits>

#include "tools/qvm_support.hpp"

using namespace aerie;
using tools::qvm::SubCommand;
using tools::qvm::ToolCli;

namespace {

const std::vector<SubCommand>& commands() {
    static const std::vector<SubCommand> c = {
        {"list", {"ls", "l"}, 0, 1, {"[tag]"}, {}},
        {"add", {"a", "set"}, 1, SIZE_MAX, {"tag", "[tag ...]"}, {"tag"}},
        {"del", {"d", "unset", "u"}, 1, 1, {"tag"}, {"tag"}},
    };
    return c;
}

int query(const ToolCli& cli, const std::string& vm, const std::vector<std::string>& args) {
    if (args.empty()) {
        auto tags = cli.client.tags(vm);
        std::sort(tags.begin(), tags.end());
        for (const auto& t : tags) fmt::print("{}\n", t);
        return 0;
    }
    if (!cli.client.has_tag(vm, args[0])) return 1;
    fmt::print("{}\n", args[0]);
    return 0;
}

int run(ToolCli& cli, std::vector<std::string>& words, int argc, char** argv) {
    cli.parse(argc, argv);
    cli.require_positionals({{"VMNAME", !words.empty()}});
    std::string vm = words[0];
    std::string command = "list";
    std::vector<std::string> args;
    if (words.size() > 1) {
        args.assign(words.begin() + 2, words.end());
        command = tools::qvm::pick_subcommand(cli, commands(), cli.prog() + " VMNAME", words[1], args).name;
    }
    cli.resolve_qube(vm);
    try {
        if (command == "list") return query(cli, vm, args);
        if (command == "add") {
            for (const auto& tag : args) cli.client.add_tag(vm, tag);
            return 0;
        }
        try {
            cli.client.remove_tag(vm, args[0]);
        } catch (const admin::AdminError& e) {
            if (!e.is_key_error()) throw;  // discard(): a missing tag is fine
        }
    } catch (const admin::AdminError& e) {
        cli.runtime_error(e.what());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    ToolCli cli("manage domain's tags", "qvm-tags");
    std::vector<std::string> words;
    cli.app.add_option("VMNAME", words, "a domain name, then a command and its tags");
    cli.usage_positionals = {"VMNAME", "{list,ls,l,add,a,set,del,d,unset,u} ..."};
    return tools::qvm::run_tool(cli, [&] { return run(cli, words, argc, argv); });
}
