// What the qvm-* tools share: argparse's conventions as qubesadmin's tools
// show them (usage text, "PROG: error: ..." with exit 2 for argument errors
// and 1 for runtime errors, Python's repr() of names in messages), the
// logging format of qubesadmin, `column -t` tables, and qube name lookups.
#pragma once

#include <fmt/format.h>
#include <fnmatch.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "admin/client.hpp"

namespace aerie::tools::qvm {

// Thrown to leave main() with a code once the message is out.
struct ExitStatus {
    int code;
};

// Python's repr() of a str: single quotes unless the text holds one and no
// double quote; backslash escapes for quotes, backslashes and controls.
inline std::string py_repr(std::string_view s) {
    bool has_single = s.find('\'') != std::string_view::npos;
    bool has_double = s.find('"') != std::string_view::npos;
    char quote = has_single && !has_double ? '"' : '\'';
    std::string out(1, quote);
    for (unsigned char c : s) {
        if (c == static_cast<unsigned char>(quote) || c == '\\') {
            out += '\\';
            out += static_cast<char>(c);
        } else if (c == '\n') {
            out += "\\n";
        } else if (c == '\r') {
            out += "\\r";
        } else if (c == '\t') {
            out += "\\t";
        } else if (c < 0x20 || c == 0x7f) {
            out += fmt::format("\\x{:02x}", c);
        } else {
            out += static_cast<char>(c);
        }
    }
    out += quote;
    return out;
}

inline std::string join(const std::vector<std::string>& parts, std::string_view sep) {
    std::string out;
    for (size_t i = 0; i < parts.size(); ++i) {
        if (i) out += sep;
        out += parts[i];
    }
    return out;
}

// Display width of UTF-8 text, one column per code point (what `column`
// sees for the names and values qubes have).
inline size_t text_width(std::string_view s) {
    return static_cast<size_t>(std::count_if(s.begin(), s.end(), [](char c) { return (c & 0xC0) != 0x80; }));
}

inline std::string pad_right(std::string_view s, size_t width) {
    std::string out(s);
    size_t w = text_width(s);
    if (w < width) out.append(width - w, ' ');
    return out;
}

// qubesadmin's print_table(), i.e. `column -t`: every column but the last
// padded to its widest cell, two spaces between columns; empty rows dropped.
inline std::string format_table(const std::vector<std::vector<std::string>>& rows) {
    std::vector<size_t> widths;
    for (const auto& row : rows)
        for (size_t i = 0; i < row.size(); ++i) {
            if (widths.size() <= i) widths.push_back(0);
            widths[i] = std::max(widths[i], text_width(row[i]));
        }
    std::string out;
    for (const auto& row : rows) {
        if (row.empty()) continue;
        for (size_t i = 0; i + 1 < row.size(); ++i) out += pad_right(row[i], widths[i]) + "  ";
        out += row.back() + "\n";
    }
    return out;
}

// Python's textwrap.fill(): words and runs of blanks are chunks; a line
// takes chunks while they fit, and blanks at a line's end (or at the start
// of a continuation line) are dropped. Blanks inside a line are kept.
inline std::string wrap_text(std::string_view text, size_t width, std::string_view initial_indent,
                             std::string_view subsequent_indent) {
    std::vector<std::string> chunks;
    for (size_t pos = 0; pos < text.size();) {
        bool blank = text[pos] == ' ';
        size_t end = pos;
        while (end < text.size() && (text[end] == ' ') == blank) ++end;
        chunks.emplace_back(text.substr(pos, end - pos));
        pos = end;
    }
    auto is_blank = [](const std::string& c) { return !c.empty() && c[0] == ' '; };
    std::vector<std::string> lines;
    size_t next = 0;
    while (next < chunks.size()) {
        std::string_view indent = lines.empty() ? initial_indent : subsequent_indent;
        size_t room = width > indent.size() ? width - indent.size() : 1;
        if (!lines.empty() && is_blank(chunks[next])) ++next;
        std::string line;
        while (next < chunks.size() && text_width(line) + text_width(chunks[next]) <= room)
            line += chunks[next++];
        if (line.empty() && next < chunks.size()) {  // a word longer than a line: break it
            line = chunks[next].substr(0, room);
            chunks[next].erase(0, room);
        }
        if (!line.empty() && line.back() == ' ') line.erase(line.find_last_not_of(' ') + 1);
        if (!line.empty()) lines.push_back(std::string(indent) + line);
    }
    return join(lines, "\n");
}

// shutil.get_terminal_size().columns, as argparse asks it: $COLUMNS, else
// the terminal on stdout, else 80.
inline size_t terminal_columns() {
    if (const char* cols = std::getenv("COLUMNS")) {
        int n = std::atoi(cols);
        if (n > 0) return static_cast<size_t>(n);
    }
    winsize ws{};
    if (::ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
    return 80;
}

// argparse's usage text: "usage: PROG [options...] positionals", wrapped at
// $COLUMNS - 2 (78 without it) with continuation lines under the options.
inline std::string format_usage(const std::string& prog, const std::vector<std::string>& optionals,
                                const std::vector<std::string>& positionals) {
    size_t width = terminal_columns() - 2;
    const std::string prefix = "usage: ";
    std::vector<std::string> all = optionals;
    all.insert(all.end(), positionals.begin(), positionals.end());
    std::string oneline = prog + (all.empty() ? "" : " " + join(all, " "));
    if (prefix.size() + oneline.size() <= width) return prefix + oneline + "\n";

    auto get_lines = [width](const std::vector<std::string>& parts, const std::string& indent,
                             bool first_has_prefix, size_t prefix_len) {
        std::vector<std::string> lines, line;
        size_t line_len = (first_has_prefix ? prefix_len : indent.size()) - 1;
        for (const auto& part : parts) {
            if (line_len + 1 + part.size() > width && !line.empty()) {
                lines.push_back(indent + join(line, " "));
                line.clear();
                line_len = indent.size() - 1;
            }
            line.push_back(part);
            line_len += part.size() + 1;
        }
        if (!line.empty()) lines.push_back(indent + join(line, " "));
        if (first_has_prefix && !lines.empty()) lines[0] = lines[0].substr(indent.size());
        return lines;
    };
    std::string indent(prefix.size() + prog.size() + 1, ' ');
    std::vector<std::string> first = {prog};
    std::vector<std::string> lines;
    if (!optionals.empty()) {
        first.insert(first.end(), optionals.begin(), optionals.end());
        lines = get_lines(first, indent, true, prefix.size());
        auto more = get_lines(positionals, indent, false, 0);
        lines.insert(lines.end(), more.begin(), more.end());
    } else {
        first.insert(first.end(), positionals.begin(), positionals.end());
        lines = get_lines(first, indent, true, prefix.size());
    }
    return prefix + join(lines, "\n") + "\n";
}

// The common part of every qvm-* tool: QubesArgumentParser's options
// (--verbose/-v, --quiet/-q, --help/-h), argparse-style errors, qubesadmin's
// logging, and one AdminClient.
class ToolCli {
public:
    ToolCli(std::string description, std::string prog)
        : app(std::move(description), prog), prog_(std::move(prog)) {
        app.set_help_flag("-h,--help", "show this help message and exit");
        app.add_flag("-v,--verbose", verbose_, "increase verbosity");
        app.add_flag("-q,--quiet", quiet_, "decrease verbosity");
        app.add_flag("--force-root", force_root_)->group("");  // accepted, ignored (as upstream)
        app.allow_extras();
        usage_optionals = {"[--verbose]", "[--quiet]", "[--help]"};
    }

    CLI::App app;
    std::vector<std::string> usage_optionals;  // argparse usage parts after the common ones
    std::vector<std::string> usage_positionals;
    admin::AdminClient client;

    const std::string& prog() const { return prog_; }
    // QubesArgumentParser's verbosity: 1 by default, -v adds, -q takes away.
    int verbosity() const { return 1 + verbose_ - quiet_; }

    // Parses argv; throws ExitStatus for --help (0) and argument errors (2).
    void parse(int argc, char** argv) {
        if (argc > 0 && argv[0] && *argv[0]) prog_ = basename_of(argv[0]);
        try {
            app.parse(argc, argv);
        } catch (const CLI::CallForHelp&) {
            std::fputs(app.help().c_str(), stdout);
            throw ExitStatus{0};
        } catch (const CLI::ArgumentMismatch& e) {
            usage_error(mismatch_message(e.what()));
        } catch (const CLI::ParseError& e) {
            usage_error(e.what());
        }
        if (!app.remaining().empty()) usage_error("unrecognized arguments: " + join(app.remaining(), " "));
    }

    // argparse's parser.error(): usage, the message, exit code 2.
    [[noreturn]] void usage_error(const std::string& message) const {
        usage_error_of(prog_, usage_optionals, usage_positionals, message);
    }
    // The same from a sub-command's parser ("PROG VMNAME add").
    [[noreturn]] void usage_error_of(const std::string& prog, const std::vector<std::string>& optionals,
                                     const std::vector<std::string>& positionals,
                                     const std::string& message) const {
        std::fputs(format_usage(prog, optionals, positionals).c_str(), stderr);
        fmt::print(stderr, "{}: error: {}\n", prog, message);
        std::fflush(stderr);
        throw ExitStatus{2};
    }

    // QubesArgumentParser.error_runtime(): the message, exit code 1.
    [[noreturn]] void runtime_error(const std::string& message, int code = 1) const {
        fmt::print(stderr, "{}: error: {}\n", prog_, message);
        std::fflush(stderr);
        throw ExitStatus{code};
    }

    // A logging.error() through qubesadmin's console handler ("NAME: MSG"),
    // or Python's last-resort handler (bare message) when -q turned it off.
    void log_error(std::string_view logger, const std::string& message) const {
        if (verbosity() >= 1)
            fmt::print(stderr, "{}: {}\n", logger, message);
        else
            fmt::print(stderr, "{}\n", message);
        std::fflush(stderr);
    }

    // QubesArgumentParser.print_error(): "Error: MSG" on stderr.
    void print_error(const std::string& message) const {
        fmt::print(stderr, "Error: {}\n", message);
        std::fflush(stderr);
    }

    // A logging.info() through qubesadmin's console handler, which is only
    // installed at verbosity 1 and above (Python's last-resort handler shows
    // nothing below WARNING).
    void log_info(std::string_view logger, const std::string& message) const {
        if (verbosity() < 1) return;
        fmt::print(stderr, "{}: {}\n", logger, message);
        std::fflush(stderr);
    }

    // For a tool that reads (some of) its arguments itself: its -v and -q.
    void add_verbosity(int more, int less) {
        verbose_ += more;
        quiet_ += less;
    }

    // Parses the options up to the first positional word (or an option this
    // parser does not know) and returns that word and all after it, for a
    // tool whose later arguments are read by hand (sub-commands, a command
    // line to run). --help and argument errors as parse().
    std::vector<std::string> parse_prefix(int argc, char** argv) {
        if (argc > 0 && argv[0] && *argv[0]) prog_ = basename_of(argv[0]);
        app.prefix_command();
        try {
            app.parse(argc, argv);
        } catch (const CLI::CallForHelp&) {
            std::fputs(app.help().c_str(), stdout);
            throw ExitStatus{0};
        } catch (const CLI::ArgumentMismatch& e) {
            usage_error(mismatch_message(e.what()));
        } catch (const CLI::ParseError& e) {
            usage_error(e.what());
        }
        return app.remaining();
    }

    // argparse's "the following arguments are required: A, B".
    void require_positionals(const std::vector<std::pair<std::string, bool>>& name_given) const {
        std::vector<std::string> missing;
        for (const auto& [name, given] : name_given)
            if (!given) missing.push_back(name);
        if (!missing.empty()) usage_error("the following arguments are required: " + join(missing, ", "));
    }

    // argparse's mutually exclusive groups: the second member given is
    // refused ("argument B: not allowed with argument A"). Each member is an
    // option and its argparse display name ("--fields/-O").
    void check_exclusive(const std::vector<std::pair<const CLI::Option*, std::string>>& group) const {
        std::string first;
        for (const CLI::Option* seen : app.parse_order()) {
            for (const auto& [opt, display] : group) {
                if (opt != seen || display == first) continue;
                if (first.empty())
                    first = display;
                else
                    usage_error("argument " + display + ": not allowed with argument " + first);
            }
        }
    }

    // Checks that every name is a qube (VmNameAction); "no such domain" is an
    // argument error upstream. Wildcards (*?[) match against all qubes.
    std::vector<std::string> resolve_qubes(const std::vector<std::string>& names,
                                           const std::vector<admin::QubeInfo>& qubes) const {
        std::set<std::string> all, chosen;
        for (const auto& q : qubes) all.insert(q.name);
        for (const auto& name : names) {
            if (name.find_first_of("*?[!]") != std::string::npos) {
                for (const auto& candidate : all)
                    if (::fnmatch(name.c_str(), candidate.c_str(), FNM_NOESCAPE) == 0)
                        chosen.insert(candidate);
                continue;
            }
            if (!all.count(name)) usage_error("no such domain: " + py_repr(name));
            chosen.insert(name);
        }
        return {chosen.begin(), chosen.end()};
    }

    // The one qube a single-VMNAME tool works on.
    std::string resolve_qube(const std::string& name) const {
        for (const auto& q : client.list_qubes())
            if (q.name == name) return name;
        usage_error("no such domain: " + py_repr(name));
    }

private:
    int verbose_ = 0;
    int quiet_ = 0;
    bool force_root_ = false;
    std::string prog_;

    static std::string basename_of(std::string_view path) {
        size_t slash = path.rfind('/');
        return std::string(slash == std::string_view::npos ? path : path.substr(slash + 1));
    }

    // CLI11's "NAME: 1 required TYPE missing" as argparse words it.
    std::string mismatch_message(const std::string& what) const {
        std::string name = what.substr(0, what.find(':'));
        const CLI::Option* opt = app.get_option_no_throw(name);
        if (!opt) return what;
        std::vector<std::string> names;
        for (const auto& l : opt->get_lnames()) names.push_back("--" + l);
        for (const auto& s : opt->get_snames()) names.push_back("-" + s);
        bool many = opt->get_items_expected_max() > 1;
        return fmt::format("argument {}: expected {}", join(names, "/"),
                           many ? "at least one argument" : "one argument");
    }
};

// QubesArgumentParser's VmNameGroup: --all, --exclude (repeatable) and
// VMNAME..., --all and VMNAME being mutually exclusive.
struct VmNames {
    bool all = false;
    std::vector<std::string> exclude;
    std::vector<std::string> names;
};

// Declares the group's options (after the common ones, as upstream's usage
// shows them); the tool adds its own after it and sets usage_positionals.
inline void add_vm_names(ToolCli& cli, VmNames& v, const std::string& all_help = "perform the action on all qubes") {
    cli.app.add_flag("--all", v.all, all_help);
    cli.app.add_option("--exclude", v.exclude, "exclude the qube from --all")
        ->take_all()
        ->expected(1)
        ->allow_extra_args(false);
    cli.app.add_option("VMNAME", v.names, "one or more domain names");
    cli.usage_optionals.insert(cli.usage_optionals.end(), {"[--all]", "[--exclude EXCLUDE]"});
}

// The group's parse-time checks: --all with VMNAME, and (when required)
// neither of them.
inline void check_vm_names(const ToolCli& cli, const VmNames& v, bool required = true) {
    cli.check_exclusive({{cli.app.get_option("--all"), "--all"}, {cli.app.get_option("VMNAME"), "VMNAME"}});
    if (required && !v.all && v.names.empty()) cli.usage_error("one of the arguments --all VMNAME is required");
}

// VmNameAction's choice: with --all every qube but the AdminVM and the
// excluded ones, in name order; else the named ones (wildcards matched),
// each of which must exist.
inline std::vector<admin::QubeInfo> chosen_qubes(const ToolCli& cli, const VmNames& v,
                                                 const std::vector<admin::QubeInfo>& qubes) {
    std::vector<admin::QubeInfo> out;
    if (v.all) {
        for (const auto& q : qubes)
            if (q.klass != "AdminVM" && std::find(v.exclude.begin(), v.exclude.end(), q.name) == v.exclude.end())
                out.push_back(q);
        std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
        return out;
    }
    if (!v.exclude.empty()) cli.usage_error("--exclude can only be used with --all");
    for (const auto& name : cli.resolve_qubes(v.names, qubes))
        for (const auto& q : qubes)
            if (q.name == name) out.push_back(q);
    return out;
}

// A sub-command of a tool (argparse sub-parser with aliases): its names,
// how many arguments it takes, and how its usage shows them.
struct SubCommand {
    std::string name;
    std::vector<std::string> aliases;
    size_t min_args = 0, max_args = 0;           // SIZE_MAX: no limit
    std::vector<std::string> usage_positionals;  // {"tag", "[tag ...]"}
    std::vector<std::string> required;           // its required arguments' names
};

// The sub-command `word` names, with argparse's checks: an unknown word is
// an invalid choice, missing arguments are the sub-parser's error (its prog
// is `prefix` + name), extra ones the main parser's.
inline const SubCommand& pick_subcommand(const ToolCli& cli, const std::vector<SubCommand>& commands,
                                         const std::string& prefix, const std::string& word,
                                         const std::vector<std::string>& args) {
    std::vector<std::string> choices;
    const SubCommand* found = nullptr;
    for (const auto& c : commands) {
        choices.push_back(py_repr(c.name));
        if (c.name == word) found = &c;
        for (const auto& a : c.aliases) {
            choices.push_back(py_repr(a));
            if (a == word) found = &c;
        }
    }
    if (!found)
        cli.usage_error("argument command: invalid choice: " + py_repr(word) + " (choose from " +
                        join(choices, ", ") + ")");
    if (args.size() < found->min_args)
        cli.usage_error_of(
            prefix + " " + found->name, {"[--verbose]", "[--quiet]", "[--help]"}, found->usage_positionals,
            "the following arguments are required: " +
                join({found->required.begin() + static_cast<long>(args.size()), found->required.end()},
                     ", "));
    if (args.size() > found->max_args)
        cli.usage_error(
            "unrecognized arguments: " +
            join(std::vector<std::string>(args.begin() + static_cast<long>(found->max_args), args.end()),
                 " "));
    return *found;
}

// str() of the error qubesadmin raises when setting a property fails: a
// refused call becomes QubesPropertyAccessError.
inline std::string property_error_text(const admin::AdminError& e, std::string_view property) {
    if (e.is_access_error() || e.type() == "QubesVMNotFoundError")
        return fmt::format("Failed to access '{}' property", property);
    return e.what();
}

// Where a clone's volumes go: one pool for all, or per volume.
struct ClonePools {
    std::string pool;
    std::vector<std::pair<std::string, std::string>> per_volume;  // sorted by volume
};

// The creation request qubesadmin sends: admin.vm.Create.CLASS, or
// CreateInPool with pool settings appended to the payload.
inline void create_qube_in(const admin::AdminClient& client, const std::string& klass,
                           const std::string& template_name, const std::string& name,
                           const std::string& label, const ClonePools& pools) {
    if (pools.pool.empty() && pools.per_volume.empty()) {
        client.create_qube(klass, template_name, name, label);
        return;
    }
    std::string payload = "name=" + name + " label=" + label;
    if (!pools.pool.empty()) payload += " pool=" + pools.pool;
    for (const auto& [volume, pool] : pools.per_volume) payload += " pool:" + volume + "=" + pool;
    client.call("dom0", "admin.vm.CreateInPool." + klass, template_name, payload);
}

// Qubes.clone_vm() of qubesadmin, without menus: create a qube of the
// source's class (or `new_class`), template and label, then copy the
// properties set on the source, its tags (but created-by-*), its features,
// its notes and its firewall rules. A failure removes the new qube and is
// rethrown, unless `ignore_errors`: then a failed property, tag or feature
// is only logged, and a failure elsewhere ends the copy quietly. Last the
// data of every volume that keeps it (save_on_stop) is copied through
// admin.vm.volume.CloneFrom / CloneTo; a failure there always removes the
// new qube.
inline void clone_qube(const ToolCli& cli, const std::string& source, const std::string& new_name,
                       std::string new_class, const ClonePools& pools, bool ignore_errors) {
    const admin::AdminClient& client = cli.client;
    if (new_class.empty())
        for (const auto& q : client.list_qubes())
            if (q.name == source) new_class = q.klass;
    auto optional_ref = [&](const char* prop) -> std::string {
        try {
            return client.get_property(source, prop).value;
        } catch (const admin::AdminError& e) {
            if (e.is_attribute_error() || e.is_access_error() || e.type() == "QubesVMNotFoundError")
                return {};
            throw;
        }
    };
    std::string template_name = optional_ref("template");
    std::string label = client.get_property(source, "label").value;
    create_qube_in(client, new_class, template_name, new_name, label, pools);

    // A failed copy is logged, then ends the copy unless ignored.
    auto failed = [&](const std::string& what, const admin::AdminError& e) {
        cli.log_error(new_name, "Failed to " + what + ": " + e.what());
        if (!ignore_errors) throw e;
    };
    auto copy_property = [&](const std::string& prop, const std::string& value) {
        try {
            client.set_property(new_name, prop, value);
        } catch (const admin::AdminError& e) {
            // AttributeError (no such property, no access) is skipped silently.
            bool attribute =
                e.is_attribute_error() || e.is_access_error() || e.type() == "QubesVMNotFoundError";
            if (!attribute) failed("set " + prop + " property", e);
        }
    };
    try {
        static const std::set<std::string> kSkipped = {"name",  "qid",  "template",
                                                       "label", "uuid", "installed_by_rpm"};
        auto values = client.get_all_properties(source);
        for (const auto& prop : client.property_names(source)) {
            if (kSkipped.count(prop)) continue;
            admin::PropertyValue v;
            if (values) {
                auto it = values->find(prop);
                if (it == values->end()) continue;
                v = it->second;
            } else {
                v = client.get_property(source, prop);
            }
            if (!v.is_default && !v.unset()) copy_property(prop, v.value);
        }
        for (const auto& tag : client.tags(source)) {
            if (tag.rfind("created-by-", 0) == 0) continue;
            try {
                client.add_tag(new_name, tag);
            } catch (const admin::AdminError& e) {
                failed("add " + tag + " tag", e);
            }
        }
        for (const auto& feature : client.feature_names(source)) {
            auto value = client.get_feature(source, feature);
            if (!value) throw admin::AdminError("QubesFeatureNotFoundError", feature);
            try {
                client.set_feature(new_name, feature, *value);
            } catch (const admin::AdminError& e) {
                failed("set " + feature + " feature", e);
            }
        }
        try {
            std::string notes = client.call(source, "admin.vm.notes.Get");
            if (!notes.empty()) client.call(new_name, "admin.vm.notes.Set", {}, notes);
        } catch (const admin::AdminError& e) {
            failed("clone qube notes", e);
        }
        // A RemoteVM has no firewall (nor volumes).
        if (new_class != "RemoteVM") {
            try {
                client.call(new_name, "admin.vm.firewall.Set", {}, client.call(source, "admin.vm.firewall.Get"));
            } catch (const admin::AdminError& e) {
                cli.log_error(new_name, std::string("Failed to set firewall: ") + e.what());
                if (!ignore_errors) throw;
            }
        }
    } catch (const admin::AdminError&) {
        if (ignore_errors) return;
        client.remove_qube(new_name);
        throw;
    }
    try {
        for (const auto& volume : client.volume_names(new_name)) {
            auto info = client.volume_info(new_name, volume);
            if (info["save_on_stop"] != "True") continue;
            std::string token = client.call(source, "admin.vm.volume.CloneFrom", volume);
            client.call(new_name, "admin.vm.volume.CloneTo", volume, token);
        }
    } catch (const admin::AdminError&) {
        client.remove_qube(new_name);
        throw;
    }
}

// Runs a tool's body: ExitStatus ends it with its code; an Admin API error
// nobody handled is reported as QubesArgumentParser.error_runtime() does.
inline int run_tool(const ToolCli& cli, const std::function<int()>& body) {
    try {
        return body();
    } catch (const ExitStatus& e) {
        return e.code;
    } catch (const admin::AdminError& e) {
        fmt::print(stderr, "{}: error: {}\n", cli.prog(), e.what());
        return 1;
    }
}

}  // namespace aerie::tools::qvm
