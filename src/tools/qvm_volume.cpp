// qvm-volume: the volumes of qubes, as Qubes' qvm-volume shows and changes
// them, over admin.vm.volume.*:
//   qvm-volume [list|ls|l] [-p POOL_NAME] [--full] [--all] [--exclude X] [VMNAME ...]
//   qvm-volume info|i VM:VOLUME [PROPERTY]
//   qvm-volume config|c|set|s VM:VOLUME PROPERTY VALUE   (rw, revisions_to_keep, ephemeral)
//   qvm-volume revert|rv|r VM:VOLUME [REVISION]           (default: the newest)
//   qvm-volume resize|extend [--force] VM:VOLUME SIZE
// The listing is "column -t" of POOL:VOLUME, VMNAME, VOLUME_NAME and
// REVERT_POSSIBLE; info a two-column table of the volume's properties and
// its revisions. A failure of the daemon (or of a check of upstream's, e.g.
// no snapshot to revert to) is "Error: MESSAGE" with exit code 1. (Qubes'
// "import" is not here yet: aeried takes admin.vm.volume.Import, which
// upstream qubesadmin's qvm-volume import uses.)
#include <fnmatch.h>

#include <climits>
#include <cstdint>

#include "tools/qvm_support.hpp"

using namespace aerie;
using tools::qvm::ToolCli;

namespace {

// A failure upstream raises as a QubesException and main() reports.
struct ToolFailure {
    std::string message;
};

const std::vector<std::pair<std::string, std::vector<std::string>>>& command_names() {
    static const std::vector<std::pair<std::string, std::vector<std::string>>> names = {
        {"info", {"i"}},   {"config", {"c", "set", "s"}}, {"resize", {"extend"}},
        {"list", {"ls", "l"}}, {"revert", {"rv", "r"}},
    };
    return names;
}

const std::vector<std::string> kCommonUsage = {"[--verbose]", "[--quiet]", "[--help]"};

// One sub-command's arguments as its argparse sub-parser reads them.
struct SubArgs {
    std::vector<std::string> positionals;
    std::vector<std::string> pools, exclude;
    bool force = false, full = false, all = false, help = false;
    std::string first_of_group;  // "--all" or "VMNAME": argparse's exclusive group
};

struct SubSpec {
    std::string name;
    std::vector<std::string> usage_optionals;  // after the common ones
    std::vector<std::string> usage_positionals;
    std::vector<std::string> required;  // names of the required positionals
    size_t max_positionals;
    std::string help;
};

SubSpec spec_of(const std::string& command) {
    if (command == "info")
        return {command, {}, {"VM:VOLUME", "[property]"}, {"VM:VOLUME"}, 2, "info about volume"};
    if (command == "config")
        return {command, {}, {"VM:VOLUME", "property", "value"}, {"VM:VOLUME", "property", "value"}, 3,
                "set config option for a volume"};
    if (command == "resize")
        return {command, {"[--force]"}, {"VM:VOLUME", "size"}, {"VM:VOLUME", "size"}, 2, "resize volume for domain"};
    if (command == "revert")
        return {command, {}, {"VM:VOLUME", "[REVISION]"}, {"VM:VOLUME"}, 2, "revert volume to previous revision"};
    return {"list", {"[-p POOL_NAME]", "[--full]", "[--all]", "[--exclude EXCLUDE]"}, {"[VMNAME ...]"}, {}, SIZE_MAX,
            "list storage volumes"};
}

// Reads a sub-command's words: its options anywhere, then positionals.
// `extras`: words argparse would not take, found so far.
SubArgs read_sub(ToolCli& cli, const SubSpec& spec, const std::vector<std::string>& words,
                 std::vector<std::string> extras) {
    SubArgs out;
    std::string prog = cli.prog() + " " + spec.name;
    std::vector<std::string> usage_opts = kCommonUsage;
    usage_opts.insert(usage_opts.end(), spec.usage_optionals.begin(), spec.usage_optionals.end());
    auto sub_error = [&](const std::string& message) {
        cli.usage_error_of(prog, usage_opts, spec.usage_positionals, message);
    };
    bool is_list = spec.name == "list";
    bool only_positionals = false;
    for (size_t i = 0; i < words.size(); ++i) {
        const std::string& w = words[i];
        if (only_positionals || w == "-" || w.size() < 2 || w[0] != '-') {
            if (is_list && out.first_of_group.empty()) out.first_of_group = "VMNAME";
            if (is_list && out.first_of_group == "--all")
                sub_error("argument VMNAME: not allowed with argument --all");
            out.positionals.push_back(w);
            continue;
        }
        if (w == "--") {
            only_positionals = true;
            continue;
        }
        size_t eq = w.find('=');
        std::string name = w.substr(0, eq);
        std::optional<std::string> inline_value;
        if (w[1] == '-' && eq != std::string::npos) inline_value = w.substr(eq + 1);
        if (w[1] != '-' && w.size() > 2) {  // -pPOOL (no other clusters)
            if (!is_list || w.compare(0, 2, "-p") != 0) {
                extras.push_back(w);
                continue;
            }
            name = "-p";
            inline_value = w.substr(2);
        }
        auto value = [&](const std::string& display) {
            if (inline_value) return *inline_value;
            if (i + 1 < words.size() && !(words[i + 1].size() > 1 && words[i + 1][0] == '-')) return words[++i];
            sub_error("argument " + display + ": expected one argument");
            throw tools::qvm::ExitStatus{2};  // not reached: sub_error() throws
        };
        auto flag = [&](const std::string& display) {
            if (inline_value)
                sub_error("argument " + display + ": ignored explicit argument " + tools::qvm::py_repr(*inline_value));
        };
        if (name == "-v" || name == "--verbose") {
            flag("--verbose/-v");
            cli.add_verbosity(1, 0);
        } else if (name == "-q" || name == "--quiet") {
            flag("--quiet/-q");
            cli.add_verbosity(0, 1);
        } else if (name == "-h" || name == "--help") {
            out.help = true;
        } else if (name == "--force-root") {
            flag("--force-root");
        } else if (spec.name == "resize" && (name == "-f" || name == "--force")) {
            flag("--force/-f");
            out.force = true;
        } else if (is_list && (name == "-p" || name == "--pool")) {
            out.pools.push_back(value("-p/--pool"));
        } else if (is_list && name == "--full") {
            flag("--full");
            out.full = true;
        } else if (is_list && name == "--all") {
            flag("--all");
            if (out.first_of_group == "VMNAME") sub_error("argument --all: not allowed with argument VMNAME");
            out.first_of_group = "--all";
            out.all = true;
        } else if (is_list && name == "--exclude") {
            out.exclude.push_back(value("--exclude"));
        } else {
            extras.push_back(w);
        }
    }
    if (out.help) {
        std::fputs(tools::qvm::format_usage(prog, usage_opts, spec.usage_positionals).c_str(), stdout);
        fmt::print("\n{}\n", spec.help);
        throw tools::qvm::ExitStatus{0};
    }
    if (out.positionals.size() < spec.required.size())
        sub_error("the following arguments are required: " +
                  tools::qvm::join({spec.required.begin() + static_cast<long>(out.positionals.size()),
                                    spec.required.end()},
                                   ", "));
    if (out.positionals.size() > spec.max_positionals)
        extras.insert(extras.begin(), out.positionals.begin() + static_cast<long>(spec.max_positionals),
                      out.positionals.end());
    if (!extras.empty()) cli.usage_error("unrecognized arguments: " + tools::qvm::join(extras, " "));
    return out;
}

// VMVolumeAction: "VM:VOLUME" names a volume of an existing qube.
struct VolumeRef {
    std::string vm, volume;
};

VolumeRef resolve_volume(const ToolCli& cli, const std::string& text) {
    size_t colon = text.find(':');
    if (colon == std::string::npos || text.find(':', colon + 1) != std::string::npos)
        cli.usage_error("expected a vm & volume combination like foo:bar");
    VolumeRef ref{text.substr(0, colon), text.substr(colon + 1)};
    auto qubes = cli.client.list_qubes();
    if (std::none_of(qubes.begin(), qubes.end(), [&](const auto& q) { return q.name == ref.vm; }))
        cli.runtime_error("no vm " + tools::qvm::py_repr(ref.vm));
    auto volumes = cli.client.volume_names(ref.vm);
    if (std::find(volumes.begin(), volumes.end(), ref.volume) == volumes.end())
        cli.runtime_error("vm " + tools::qvm::py_repr(ref.vm) + " has no volume " + tools::qvm::py_repr(ref.volume));
    return ref;
}

std::string bool_text(const std::map<std::string, std::string>& info, const std::string& key) {
    auto it = info.find(key);
    return it != info.end() && it->second == "True" ? "True" : "False";
}

// getattr(volume, item) as qubesadmin's Volume answers it, printed.
std::string item_text(const std::map<std::string, std::string>& info, const std::string& item) {
    if (item == "rw" || item == "save_on_stop" || item == "snap_on_start" || item == "ephemeral" ||
        item == "is_outdated")
        return bool_text(info, item);
    auto it = info.find(item);
    if (it == info.end()) {
        if (item == "source") return "";
        throw admin::AdminError("QubesDaemonCommunicationError", "Invalid response format: no " + item);
    }
    return it->second;
}

const std::vector<std::string> kInfoItems = {"pool", "vid",  "rw",    "source",           "save_on_stop",
                                             "snap_on_start", "size", "usage", "revisions_to_keep", "ephemeral"};

void info_volume(const ToolCli& cli, const VolumeRef& ref, const std::optional<std::string>& property) {
    const admin::AdminClient& client = cli.client;
    if (property) {
        if (*property == "revisions") {
            for (const auto& rev : client.volume_revisions(ref.vm, ref.volume)) fmt::print("{}\n", rev);
        } else if (*property == "is_outdated") {
            fmt::print("{}\n", bool_text(client.volume_info(ref.vm, ref.volume), "is_outdated"));
        } else if (std::find(kInfoItems.begin(), kInfoItems.end(), *property) != kInfoItems.end()) {
            fmt::print("{}\n", item_text(client.volume_info(ref.vm, ref.volume), *property));
        } else {
            throw ToolFailure{"No such property: " + *property};
        }
        return;
    }
    auto info = client.volume_info(ref.vm, ref.volume);
    std::vector<std::vector<std::string>> rows;
    for (const auto& item : kInfoItems) rows.push_back({item, item_text(info, item)});
    rows.push_back({"is_outdated", bool_text(info, "is_outdated")});
    fmt::print("{}", tools::qvm::format_table(rows));
    auto revisions = client.volume_revisions(ref.vm, ref.volume);
    if (revisions.empty()) {
        fmt::print("List of available revisions (for revert): none\n");
    } else {
        fmt::print("List of available revisions (for revert):\n");
        for (const auto& rev : revisions) fmt::print("  {}\n", rev);
    }
}

void config_volume(const ToolCli& cli, const VolumeRef& ref, const std::string& property, const std::string& value) {
    if (property != "rw" && property != "revisions_to_keep" && property != "ephemeral")
        throw ToolFailure{"Invalid property: " + property};
    cli.client.volume_set(ref.vm, ref.volume, property, value);
}

void revert_volume(const ToolCli& cli, const VolumeRef& ref, const std::optional<std::string>& revision) {
    std::string target;
    if (revision && !revision->empty()) {
        target = *revision;
    } else {
        auto revisions = cli.client.volume_revisions(ref.vm, ref.volume);
        if (revisions.empty()) throw ToolFailure{"No snapshots available"};
        target = revisions.back();
    }
    cli.client.volume_revert(ref.vm, ref.volume, target);
}

// qubesadmin.utils.parse_size(): bytes, or a number with K/M/G (powers of
// 1000) or Ki/Mi/Gi (powers of 1024), with or without a trailing B.
uint64_t parse_size(std::string size) {
    size.erase(0, size.find_first_not_of(" \t\n\r\f\v"));
    size.erase(size.find_last_not_of(" \t\n\r\f\v") + 1);
    for (auto& c : size) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    auto number = [&](const std::string& digits) -> uint64_t {
        std::string d = digits;
        d.erase(d.find_last_not_of(" \t") + 1);
        if (d.empty() || d.find_first_not_of("0123456789") != std::string::npos)
            throw ToolFailure{"Invalid size: " + size + "."};
        try {
            return std::stoull(d);
        } catch (const std::exception&) {
            throw ToolFailure{"Invalid size: " + size + "."};
        }
    };
    if (!size.empty() && size.find_first_not_of("0123456789") == std::string::npos) return number(size);
    static const std::vector<std::pair<std::string, uint64_t>> units = {
        {"K", 1000ULL},        {"KB", 1000ULL},        {"M", 1000000ULL},     {"MB", 1000000ULL},
        {"G", 1000000000ULL},  {"GB", 1000000000ULL},  {"KI", 1024ULL},       {"KIB", 1024ULL},
        {"MI", 1048576ULL},    {"MIB", 1048576ULL},    {"GI", 1073741824ULL}, {"GIB", 1073741824ULL},
    };
    for (const auto& [unit, multiplier] : units)
        if (size.size() >= unit.size() && size.compare(size.size() - unit.size(), unit.size(), unit) == 0) {
            uint64_t n = number(size.substr(0, size.size() - unit.size()));
            if (n > UINT64_MAX / multiplier) throw ToolFailure{"Invalid size: " + size + "."};
            return n * multiplier;
        }
    throw ToolFailure{"Invalid size: " + size + "."};
}

void resize_volume(const ToolCli& cli, const VolumeRef& ref, const std::string& size_text, bool force) {
    uint64_t size = parse_size(size_text);
    std::string current_text = item_text(cli.client.volume_info(ref.vm, ref.volume), "size");
    uint64_t current = 0;
    try {
        current = std::stoull(current_text);
    } catch (const std::exception&) {
        throw admin::AdminError("QubesDaemonCommunicationError", "Invalid volume size received: " + current_text);
    }
    if (!force && size < current)
        throw ToolFailure{fmt::format(
            "For your own safety, shrinking of {} is disabled ({} < {}). If you really know what you are doing, "
            "resize filesystem manually first, then use `-f` option.",
            ref.volume, size, current)};
    cli.client.volume_resize(ref.vm, ref.volume, size);
}

struct VolumeRow {
    std::string pool, vid;
    std::string revisions;  // "Yes" / "No"
    std::vector<std::pair<std::string, std::string>> domains;  // (vm, volume name)
};

void list_volumes(const ToolCli& cli, const SubArgs& args) {
    const admin::AdminClient& client = cli.client;
    auto qubes = client.list_qubes();
    // VmNameAction (not required here) and PoolsAction.
    std::vector<std::string> domains;
    if (args.all) {
        tools::qvm::VmNames v{true, args.exclude, {}};
        for (const auto& q : tools::qvm::chosen_qubes(cli, v, qubes)) domains.push_back(q.name);
    } else {
        if (!args.exclude.empty()) cli.usage_error("--exclude can only be used with --all");
        domains = cli.resolve_qubes(args.positionals, qubes);
    }
    if (!args.pools.empty()) {
        std::vector<std::string> known;
        try {
            std::string text = client.call("dom0", "admin.pool.List");
            for (size_t pos = 0; pos < text.size();) {
                size_t nl = std::min(text.find('\n', pos), text.size());
                if (nl > pos) known.push_back(text.substr(pos, nl - pos));
                pos = nl + 1;
            }
        } catch (const admin::AdminError& e) {
            cli.usage_error(e.what());
        }
        for (const auto& pool : args.pools)
            if (std::find(known.begin(), known.end(), pool) == known.end()) {
                std::vector<std::string> reprs;
                for (const auto& p : args.pools) reprs.push_back(tools::qvm::py_repr(p));
                cli.usage_error("No such pools: [" + tools::qvm::join(reprs, ", ") + "]");
            }
    }
    bool filtered = !domains.empty();
    if (!filtered) {
        for (const auto& q : qubes) domains.push_back(q.name);
        std::sort(domains.begin(), domains.end());
    }

    std::map<std::pair<std::string, std::string>, VolumeRow> rows;
    for (const auto& vm : domains) {
        for (const auto& volume : client.volume_names(vm)) {
            auto info = client.volume_info(vm, volume);
            std::string pool = item_text(info, "pool"), vid = item_text(info, "vid");
            if (!args.pools.empty() && std::find(args.pools.begin(), args.pools.end(), pool) == args.pools.end())
                continue;
            auto key = std::make_pair(pool, vid);
            auto it = rows.find(key);
            if (it == rows.end()) {
                VolumeRow row{pool, vid, client.volume_revisions(vm, volume).empty() ? "No" : "Yes", {}};
                it = rows.emplace(key, std::move(row)).first;
            }
            it->second.domains.emplace_back(vm, volume);
        }
    }
    bool tty = ::isatty(STDOUT_FILENO) != 0;
    std::vector<std::vector<std::string>> table = {{"POOL:VOLUME", "VMNAME", "VOLUME_NAME", "REVERT_POSSIBLE"}};
    for (auto& [key, row] : rows) {
        std::string id = row.pool + ":" + row.vid;
        if (row.domains.empty()) {
            table.push_back({id, ""});
            continue;
        }
        // The last one found comes first (list.pop()), the others after it.
        auto last = row.domains.back();
        row.domains.pop_back();
        table.push_back({id, last.first, last.second, row.revisions});
        for (const auto& [vm, volume] : row.domains)
            table.push_back({args.full || !tty ? id : "", vm, volume, row.revisions});
    }
    fmt::print("{}", tools::qvm::format_table(table));
}

std::string command_of(const ToolCli& cli, const std::string& word) {
    std::vector<std::string> choices;
    for (const auto& [name, aliases] : command_names()) {
        choices.push_back(tools::qvm::py_repr(name));
        if (word == name) return name;
        for (const auto& a : aliases) {
            choices.push_back(tools::qvm::py_repr(a));
            if (word == a) return name;
        }
    }
    cli.usage_error("argument command: invalid choice: " + tools::qvm::py_repr(word) + " (choose from " +
                    tools::qvm::join(choices, ", ") + ")");
}

int run(ToolCli& cli, int argc, char** argv) {
    std::vector<std::string> rest = cli.parse_prefix(argc, argv);
    // Options the main parser does not know are argparse's leftovers.
    std::vector<std::string> unknown;
    while (!rest.empty() && rest[0].size() > 1 && rest[0][0] == '-') {
        unknown.push_back(rest[0]);
        rest.erase(rest.begin());
    }
    std::string command = "list";
    std::vector<std::string> words;
    if (!rest.empty()) {
        command = command_of(cli, rest[0]);
        words.assign(rest.begin() + 1, rest.end());
    }
    SubArgs args = read_sub(cli, spec_of(command), words, unknown);
    auto positional = [&](size_t i) -> std::optional<std::string> {
        return i < args.positionals.size() ? std::optional(args.positionals[i]) : std::nullopt;
    };
    try {
        if (command == "list") {
            list_volumes(cli, args);
            return 0;
        }
        VolumeRef ref = resolve_volume(cli, args.positionals[0]);
        if (command == "info") info_volume(cli, ref, positional(1));
        if (command == "config") config_volume(cli, ref, args.positionals[1], args.positionals[2]);
        if (command == "revert") revert_volume(cli, ref, positional(1));
        if (command == "resize") resize_volume(cli, ref, args.positionals[1], args.force);
    } catch (const ToolFailure& f) {
        cli.print_error(f.message);
        return 1;
    } catch (const admin::AdminError& e) {
        cli.print_error(e.what());
        return 1;
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    ToolCli cli("Qubes volume management", "qvm-volume");
    cli.usage_positionals = {"{info,i,config,c,set,s,resize,extend,list,ls,l,revert,rv,r}", "..."};
    return tools::qvm::run_tool(cli, [&] { return run(cli, argc, argv); });
}
