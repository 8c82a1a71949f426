// qvm-label: the labels (admin.label.*), in the style of the qvm-* tools
// (Qubes has no command for them):
//   qvm-label [list]             table INDEX NAME COLOR, by index
//   qvm-label create NAME COLOR  COLOR is 0xRRGGBB
//   qvm-label remove NAME        only custom labels no qube carries
// Aliases: ls/l, add, rm/del. Refusals from the daemon exit 1.
#include <climits>

#include "tools/qvm_support.hpp"

using namespace aerie;
using tools::qvm::SubCommand;
using tools::qvm::ToolCli;

namespace {

const std::vector<SubCommand>& commands() {
    static const std::vector<SubCommand> c = {
        {"list", {"ls", "l"}, 0, 0, {}, {}},
        {"create", {"add"}, 2, 2, {"NAME", "COLOR"}, {"NAME", "COLOR"}},
        {"remove", {"rm", "del"}, 1, 1, {"NAME"}, {"NAME"}},
    };
    return c;
}

int list_labels(const ToolCli& cli) {
    std::vector<admin::LabelInfo> labels;
    for (const auto& name : cli.client.label_names()) labels.push_back(cli.client.get_label(name));
    std::sort(labels.begin(), labels.end(), [](const auto& a, const auto& b) { return a.index < b.index; });
    std::vector<std::vector<std::string>> rows = {{"INDEX", "NAME", "COLOR"}};
    for (const auto& l : labels) rows.push_back({std::to_string(l.index), l.name, l.color});
    fmt::print("{}", tools::qvm::format_table(rows));
    return 0;
}

// The daemon drops malformed requests without a word; say what is wrong first.
void check_new_label(const ToolCli& cli, const std::string& name, const std::string& color) {
    auto fail = [&](const std::string& what) {
        cli.usage_error_of(cli.prog() + " create", {"[--verbose]", "[--quiet]", "[--help]"},
                           {"NAME", "COLOR"}, what);
    };
    bool name_ok = !name.empty() && name.find_first_not_of(
                                        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                        "0123456789._-") == std::string::npos;
    if (!name_ok || name.find_first_not_of("0123456789") == std::string::npos)
        fail("invalid label name: " + tools::qvm::py_repr(name));
    bool color_ok = color.size() == 8 && color.rfind("0x", 0) == 0 &&
                    color.find_first_not_of("0123456789abcdefABCDEF", 2) == std::string::npos;
    if (!color_ok) fail("invalid color: " + tools::qvm::py_repr(color) + " (expected 0xRRGGBB)");
}

int run(ToolCli& cli, std::vector<std::string>& words, int argc, char** argv) {
    cli.parse(argc, argv);
    std::string command = "list";
    std::vector<std::string> args;
    if (!words.empty()) {
        args.assign(words.begin() + 1, words.end());
        command = tools::qvm::pick_subcommand(cli, commands(), cli.prog(), words[0], args).name;
    }
    if (command == "create") check_new_label(cli, args[0], args[1]);
    try {
        if (command == "list") return list_labels(cli);
        if (command == "create")
            cli.client.create_label(args[0], args[1]);
        else
            cli.client.remove_label(args[0]);
    } catch (const admin::AdminError& e) {
        cli.runtime_error(e.what());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    ToolCli cli("manage qube labels", "qvm-label");
    std::vector<std::string> words;
    cli.app.add_option("command", words, "list, create NAME 0xRRGGBB, or remove NAME");
    cli.usage_positionals = {"{list,ls,l,create,add,remove,rm,del} ..."};
    return tools::qvm::run_tool(cli, [&] { return run(cli, words, argc, argv); });
}
