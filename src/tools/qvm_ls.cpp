// qvm-ls: lists qubes in a `column -t` table (or '|'-separated with
// --raw-data), columns chosen by a preset format or --fields, as Qubes'
// qvm-ls does. Values come from admin.vm.List and one
// admin.vm.property.GetAll per listed qube.
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "tools/qvm_support.hpp"

using namespace aerie;
using tools::qvm::ToolCli;

namespace {

// --- the qubes and what the columns read from them ------------------------

// One qube with what has been fetched about it so far.
struct Qube {
    explicit Qube(admin::QubeInfo i) : info(std::move(i)) {}
    admin::QubeInfo info;
    bool props_loaded = false;
    std::optional<std::map<std::string, admin::PropertyValue>> props;  // nullopt: GetAll refused
    std::optional<std::vector<std::string>> tags, feature_names;
    std::map<std::string, std::optional<std::string>> features;
};

class Qubes {
public:
    explicit Qubes(const admin::AdminClient& client) : client_(client) {
        for (auto& info : client.list_qubes()) {
            std::string name = info.name;
            by_name_[name] = std::make_unique<Qube>(std::move(info));
        }
    }

    std::vector<Qube*> all() const {  // sorted by name
        std::vector<Qube*> out;
        for (const auto& [name, q] : by_name_) out.push_back(q.get());
        return out;
    }
    Qube* find(const std::string& name) const {
        auto it = by_name_.find(name);
        return it == by_name_.end() ? nullptr : it->second.get();
    }
    std::vector<admin::QubeInfo> infos() const {
        std::vector<admin::QubeInfo> out;
        for (const auto& [name, q] : by_name_) out.push_back(q->info);
        return out;
    }

    // A property as qubesadmin's getattr() sees it; nullopt for what it
    // turns into AttributeError (no such property, unset, refused).
    std::optional<admin::PropertyValue> property(Qube& q, const std::string& name) const {
        if (!q.props_loaded) {
            q.props = client_.get_all_properties(q.info.name);
            q.props_loaded = true;
        }
        std::optional<admin::PropertyValue> v;
        if (q.props) {
            if (auto it = q.props->find(name); it != q.props->end()) v = it->second;
        } else {
            try {
                v = client_.get_property(q.info.name, name);
            } catch (const admin::AdminError&) {
            }
        }
        if (v && v->unset()) return std::nullopt;
        return v;
    }

    const std::vector<std::string>& tags(Qube& q) const {
        if (!q.tags) q.tags = client_.tags(q.info.name);
        return *q.tags;
    }
    const std::vector<std::string>& feature_names(Qube& q) const {
        if (!q.feature_names) q.feature_names = client_.feature_names(q.info.name);
        return *q.feature_names;
    }
    std::optional<std::string> feature(Qube& q, const std::string& name) const {
        auto it = q.features.find(name);
        if (it == q.features.end())
            it = q.features.emplace(name, client_.get_feature(q.info.name, name)).first;
        return it->second;
    }
    // The memory in use (KiB) from admin.vm.CurrentState, when it answers.
    std::optional<long long> memory(const Qube& q) const {
        try {
            std::string state = client_.call(q.info.name, "admin.vm.CurrentState");
            size_t at = state.find("mem=");
            while (at != std::string::npos && at > 0 && state[at - 1] != ' ') at = state.find("mem=", at + 1);
            if (at != std::string::npos) return std::stoll(state.substr(at + 4));
        } catch (const std::exception&) {
        }
        return std::nullopt;
    }

private:
    const admin::AdminClient& client_;
    std::map<std::string, std::unique_ptr<Qube>> by_name_;
};

// Python's truth value of a property as qubesadmin returns it.
bool truthy(const std::optional<admin::PropertyValue>& v) {
    if (!v || v->value.empty()) return false;
    if (v->type == "bool") return v->value == "True";
    if (v->type == "int") return v->value.find_first_not_of("0+-") != std::string::npos;
    return true;
}

// str() of getattr(vm, attr), None as nullopt. Besides properties, the
// Python attributes qvm-ls can reach: name, klass, and the tags and features
// collections (joined with commas).
std::optional<std::string> attribute(const Qubes& qubes, Qube& q, const std::string& attr) {
    if (attr == "name") return q.info.name;
    if (attr == "klass") return q.info.klass;
    if (attr == "tags") return tools::qvm::join(qubes.tags(q), ",");
    if (attr == "features") return tools::qvm::join(qubes.feature_names(q), ",");
    auto v = qubes.property(q, attr);
    if (!v || v->is_none()) return std::nullopt;
    return v->value;
}

// --- columns ----------------------------------------------------------------

using CellFn = std::function<std::optional<std::string>(const Qubes&, Qube&)>;

struct Column {
    std::string head;
    CellFn cell;
    std::string doc;
};

const char* const kFlagsDoc = "Some fancy flags that describe general status of the domain.";

std::optional<std::string> flags_cell(const Qubes& qubes, Qube& q) {
    static const std::map<std::string, char> kTypes = {
        {"AdminVM", '0'}, {"TemplateVM", 't'}, {"AppVM", 'a'}, {"StandaloneVM", 's'}, {"DispVM", 'd'}};
    std::string out;
    auto type = kTypes.find(q.info.klass);
    char t = type == kTypes.end() ? '-' : type->second;
    if (t != '0' && t != '-') {
        auto mode = qubes.property(q, "virt_mode");
        if (mode && mode->value == "hvm") t = static_cast<char>(std::toupper(t));
    }
    out += t;
    std::string state = q.info.state;
    std::transform(state.begin(), state.end(), state.begin(), ::tolower);
    static const std::set<std::string> kStates = {"running", "transient", "paused", "suspended",
                                                  "halting", "dying",     "crashed"};
    out += state == "unknown" ? '?' : kStates.count(state) ? state[0] : '-';
    const std::pair<const char*, char> simple[] = {
        {"updateable", 'U'}, {"provides_network", 'N'}, {"installed_by_rpm", 'R'}, {"internal", 'i'},
        {"debug", 'D'},      {"autostart", 'A'}};
    for (const auto& [prop, letter] : simple) out += truthy(qubes.property(q, prop)) ? letter : '-';
    return out;
}

// The columns qvm-ls defines itself; any other name is a property.
const std::vector<Column>& builtin_columns() {
    auto zero = [](const Qubes&, Qube&) -> std::optional<std::string> { return "0"; };
    auto none = [](const Qubes&, Qube&) -> std::optional<std::string> { return std::nullopt; };
    static const std::vector<Column> columns = {
        {"STATE", [](const Qubes&, Qube& q) -> std::optional<std::string> { return q.info.state; },
         "Current power state."},
        {"CLASS", [](const Qubes&, Qube& q) -> std::optional<std::string> { return q.info.klass; },
         "Class of the qube."},
        {"GATEWAY",
         [](const Qubes& qubes, Qube& q) -> std::optional<std::string> {
             auto netvm = attribute(qubes, q, "netvm");
             Qube* net = netvm ? qubes.find(*netvm) : nullptr;
             return net ? attribute(qubes, *net, "gateway") : std::nullopt;
         },
         "Network gateway."},
        {"MEMORY",
         [](const Qubes& qubes, Qube& q) -> std::optional<std::string> {
             if (q.info.state == "Halted" || q.info.state == "NA") return std::nullopt;
             auto mem = qubes.memory(q);
             return mem ? std::optional<std::string>(std::to_string(*mem / 1024)) : std::nullopt;
         },
         "Memory currently used by VM"},
        // Qubes without volumes: what qvm-ls shows for a qube whose volume
        // list is empty.
        {"DISK", zero, "Total disk utilisation."},
        {"PRIV-CURR", zero, "Disk utilisation by private image (/home, /usr/local)."},
        {"PRIV-MAX", zero, "Maximum available space for private image."},
        {"PRIV-POOL", none, "Storage pool of private volume."},
        {"PRIV-USED", zero, "Disk utilisation by private image as a percentage of available space."},
        {"ROOT-CURR", zero, "Disk utilisation by root image (/usr, /lib, /etc, ...)."},
        {"ROOT-MAX", zero, "Maximum available space for root image."},
        {"ROOT-POOL", none, "Storage pool of root volume."},
        {"ROOT-USED", zero, "Disk utilisation by root image as a percentage of available space."},
        {"FLAGS", flags_cell, kFlagsDoc},
    };
    return columns;
}

std::string upper(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), ::toupper);
    return s;
}
std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), ::tolower);
    return s;
}

// A column by the name given in a format or --fields.
Column column_for(const std::string& name) {
    for (const auto& c : builtin_columns())
        if (c.head == upper(name)) return c;
    std::string attr = lower(name);
    std::string head = attr;
    std::replace(head.begin(), head.end(), '_', '-');
    return {upper(head), [attr](const Qubes& qubes, Qube& q) { return attribute(qubes, q, attr); }, ""};
}

const std::vector<std::pair<std::string, std::vector<std::string>>>& formats() {
    static const std::vector<std::pair<std::string, std::vector<std::string>>> f = {
        {"simple", {"name", "state", "class", "label", "template", "netvm"}},
        {"network", {"name", "state", "netvm", "ip", "ipback", "gateway"}},
        {"kernel", {"name", "state", "class", "template", "kernel", "kernelopts"}},
        {"full", {"name", "state", "class", "label", "qid", "xid", "uuid"}},
        {"prefs", {"name", "label", "template", "netvm", "vcpus", "initialmem", "maxmem", "virt_mode"}},
        {"disk",
         {"name", "state", "disk", "priv-curr", "priv-max", "priv-used", "root-curr", "root-max",
          "root-used"}},
    };
    return f;
}

const std::vector<std::string>* find_format(const std::string& name) {
    for (const auto& [n, cols] : formats())
        if (n == name) return &cols;
    return nullptr;
}

// --- options ---------------------------------------------------------------

struct Options {
    bool all = false;
    std::vector<std::string> exclude, vmnames;
    std::string format = "simple", fields;
    bool tree = false, raw_data = false, raw_list = false;
    bool help_formats = false, help_columns = false;
    std::vector<std::string> klass, label, tags, exclude_tags, template_source, netvm_is;
    bool running = false, paused = false, halted = false, pending_update = false;
    std::string internal = "both", servicevm = "both";
    std::vector<std::string> features, prefs;
    std::string sort = "NAME";
    bool reverse = false, ignore_case = false, spinner = true;
    bool disk = false, network = false, kernel = false;
};

std::string help_formats_text() {
    size_t width = 0;
    for (const auto& [name, cols] : formats()) width = std::max(width, name.size());
    auto sorted = formats();
    std::sort(sorted.begin(), sorted.end());
    std::string text = "Available formats:\n";
    for (const auto& [name, cols] : sorted)
        text += "  " + tools::qvm::pad_right(name, width) + "  " + upper(tools::qvm::join(cols, ",")) + "\n";
    return text + "\n";
}

std::string help_columns_text() {
    size_t width = 0;
    auto columns = builtin_columns();
    for (const auto& c : columns) width = std::max(width, c.head.size());
    std::sort(columns.begin(), columns.end(),
              [](const Column& a, const Column& b) { return a.head < b.head; });
    std::string text = "Available columns:\n";
    for (size_t i = 0; i < columns.size(); ++i) {
        if (i) text += "\n";
        text += tools::qvm::wrap_text(tools::qvm::pad_right(columns[i].head, width) + "  " + columns[i].doc,
                                      80, "  ", std::string(width + 6, ' '));
    }
    text +=
        "\n\nAdditionally any VM property may be used as a column, see qvm-prefs "
        "--help-properties for available values";
    return text + "\n\n";
}

// --- choosing the qubes -------------------------------------------------------

bool yes(const std::string& v) {
    return v == "y" || v == "yes";
}
bool no(const std::string& v) {
    return v == "n" || v == "no";
}

// A feature flag as qvm-ls reads internal/servicevm.
bool feature_on(const Qubes& qubes, Qube& q, const std::string& name) {
    auto v = qubes.feature(q, name);
    return v && (*v == "1" || *v == "true" || *v == "True");
}

bool has_any(const std::vector<std::string>& have, const std::vector<std::string>& wanted) {
    for (const auto& w : wanted)
        if (std::find(have.begin(), have.end(), w) != have.end()) return true;
    return false;
}

// KEY=VALUE filters: an empty VALUE means "unset" (None), '' or "" a blank.
std::pair<std::string, std::optional<std::string>> key_value(const ToolCli& cli, const std::string& flag,
                                                             const std::string& arg) {
    size_t eq = arg.find('=');
    if (eq == std::string::npos || eq == 0) cli.usage_error("Invalid argument: " + flag + " " + arg);
    std::string value = arg.substr(eq + 1);
    if (value.empty()) return {arg.substr(0, eq), std::nullopt};
    if (value == "''" || value == "\"\"") value.clear();
    return {arg.substr(0, eq), value};
}

template <typename Pred>
void keep_if(std::vector<Qube*>& qubes, Pred pred) {
    std::erase_if(qubes, [&](Qube* q) { return !pred(*q); });
}

void filter_qubes(const ToolCli& cli, const Options& opt, const Qubes& qubes, std::vector<Qube*>& doms) {
    if (!opt.klass.empty()) keep_if(doms, [&](Qube& q) { return has_any({q.info.klass}, opt.klass); });
    if (!opt.label.empty())
        keep_if(doms,
                [&](Qube& q) { return has_any({attribute(qubes, q, "label").value_or("")}, opt.label); });
    if (!opt.tags.empty()) keep_if(doms, [&](Qube& q) { return has_any(qubes.tags(q), opt.tags); });
    if (!opt.exclude_tags.empty())
        keep_if(doms, [&](Qube& q) { return !has_any(qubes.tags(q), opt.exclude_tags); });
    // getattr(dom, 'template', ''): no such property is "", None matches nothing.
    auto ref_matches = [&](Qube& q, const char* prop, const std::vector<std::string>& wanted) {
        auto v = qubes.property(q, prop);
        if (!v) return has_any({""}, wanted);
        return !v->is_none() && has_any({v->value}, wanted);
    };
    if (!opt.template_source.empty())
        keep_if(doms, [&](Qube& q) { return ref_matches(q, "template", opt.template_source); });
    if (!opt.netvm_is.empty()) keep_if(doms, [&](Qube& q) { return ref_matches(q, "netvm", opt.netvm_is); });
    for (const auto& [flag, name] : {std::pair{opt.internal, "internal"}, {opt.servicevm, "servicevm"}}) {
        if (yes(flag)) keep_if(doms, [&](Qube& q) { return feature_on(qubes, q, name); });
        if (no(flag)) keep_if(doms, [&](Qube& q) { return !feature_on(qubes, q, name); });
    }
    if (opt.pending_update)
        keep_if(doms, [&](Qube& q) { return !qubes.feature(q, "updates-available").value_or("").empty(); });
    for (const auto& arg : opt.features) {
        auto [key, value] = key_value(cli, "--features", arg);
        keep_if(doms, [&](Qube& q) { return qubes.feature(q, key) == value; });
    }
    for (const auto& arg : opt.prefs) {
        auto [key, value] = key_value(cli, "--prefs", arg);
        // str(getattr(d, key, None)) == value: never true for an unset VALUE.
        keep_if(doms, [&](Qube& q) { return value && attribute(qubes, q, key).value_or("None") == *value; });
    }
    std::vector<std::string> states;
    if (opt.running) states.push_back("running");
    if (opt.paused) states.push_back("paused");
    if (opt.halted) states.push_back("halted");
    if (!states.empty()) keep_if(doms, [&](Qube& q) { return has_any({lower(q.info.state)}, states); });
}

std::vector<Qube*> choose_qubes(const ToolCli& cli, const Options& opt, const Qubes& qubes) {
    if (!opt.all && !opt.exclude.empty()) cli.usage_error("--exclude can only be used with --all");
    std::vector<Qube*> doms;
    if (opt.all) {
        // Unlike other tools' --all, qvm-ls keeps dom0.
        for (Qube* q : qubes.all())
            if (std::find(opt.exclude.begin(), opt.exclude.end(), q->info.name) == opt.exclude.end())
                doms.push_back(q);
    } else if (!opt.vmnames.empty()) {
        for (const auto& name : cli.resolve_qubes(opt.vmnames, qubes.infos()))
            doms.push_back(qubes.find(name));
    } else {
        doms = qubes.all();
    }
    filter_qubes(cli, opt, qubes, doms);
    return doms;
}

// --- the table ----------------------------------------------------------------

const std::set<std::string> kNumericColumns = {
    "MEMORY", "DISK",           "PRIV-CURR",        "PRIV-MAX", "ROOT-CURR", "XID",      "ROOT-MAX",
    "MAXMEM", "QREXEC-TIMEOUT", "SHUTDOWN-TIMEOUT", "VCPUS",    "PRIV-USED", "ROOT-USED"};

long long numeric_key(std::string s) {
    if (!s.empty() && s.back() == '%') s.pop_back();
    try {
        size_t used = 0;
        long long v = std::stoll(s, &used);
        return used == s.size() ? v : 0;
    } catch (const std::exception&) {
        return 0;
    }
}

std::vector<std::string> row_for(const Qubes& qubes, Qube& q, const std::vector<Column>& columns,
                                 int depth = 0) {
    std::vector<std::string> row;
    for (const auto& c : columns) {
        std::string cell = c.cell(qubes, q).value_or("");
        if (cell.empty()) cell = "-";
        if (depth > 0 && c.head == "NAME") cell = std::string(2 * (depth - 1), ' ') + "└─" + cell;
        row.push_back(cell);
    }
    return row;
}

// --tree: qubes without network first, then each network root followed by
// the qubes connected through it, depth first, as qvm-ls orders them.
std::vector<std::pair<int, Qube*>> network_tree(const Qubes& qubes, std::vector<Qube*> doms) {
    std::vector<std::pair<int, Qube*>> tree;
    auto netvm_of = [&](Qube& q) { return qubes.property(q, "netvm"); };
    auto take = [&](Qube* q) { std::erase(doms, q); };
    for (Qube* q : std::vector<Qube*>(doms)) {
        auto netvm = netvm_of(*q);
        if (!netvm || (netvm->is_none() && !truthy(qubes.property(*q, "provides_network")))) {
            tree.emplace_back(0, q);
            take(q);
        }
    }
    std::function<void(Qube&, int)> children = [&](Qube& parent, int level) {
        for (Qube* child : qubes.all()) {
            auto netvm = netvm_of(*child);
            if (!netvm || netvm->is_none() || netvm->value != parent.info.name) continue;
            if (std::find(doms.begin(), doms.end(), child) == doms.end()) continue;
            tree.emplace_back(level, child);
            if (truthy(qubes.property(*child, "provides_network"))) children(*child, level + 1);
        }
    };
    for (Qube* q : std::vector<Qube*>(doms)) {
        auto netvm = netvm_of(*q);
        if (std::find(doms.begin(), doms.end(), q) == doms.end() || !netvm || !netvm->is_none()) continue;
        tree.emplace_back(0, q);
        take(q);
        children(*q, 1);
    }
    return tree;
}

void sort_rows(const Options& opt, const std::vector<std::string>& heads,
               std::vector<std::vector<std::string>>& rows) {
    std::string key = upper(opt.sort);
    auto it = std::find(heads.begin(), heads.end(), key);
    if (it == heads.end()) return;  // sorting only by a shown column
    size_t col = static_cast<size_t>(it - heads.begin());
    bool numeric = kNumericColumns.count(key) > 0;
    auto less = [&](const std::vector<std::string>& a, const std::vector<std::string>& b) {
        if (numeric) return numeric_key(a[col]) < numeric_key(b[col]);
        return opt.ignore_case ? upper(a[col]) < upper(b[col]) : a[col] < b[col];
    };
    if (opt.reverse)
        std::stable_sort(rows.begin(), rows.end(), [&](const auto& a, const auto& b) { return less(b, a); });
    else
        std::stable_sort(rows.begin(), rows.end(), less);
}

void write_table(const Options& opt, const Qubes& qubes, const std::vector<Qube*>& doms,
                 const std::vector<Column>& columns) {
    if (opt.raw_data) {
        for (Qube* q : doms) fmt::print("{}\n", tools::qvm::join(row_for(qubes, *q, columns), "|"));
        return;
    }
    std::vector<std::string> heads;
    for (const auto& c : columns) heads.push_back(c.head);
    std::vector<std::vector<std::string>> rows;
    if (opt.tree) {
        for (auto [depth, q] : network_tree(qubes, doms)) rows.push_back(row_for(qubes, *q, columns, depth));
    } else {
        for (Qube* q : doms) rows.push_back(row_for(qubes, *q, columns));
        sort_rows(opt, heads, rows);
    }
    rows.insert(rows.begin(), heads);
    fmt::print("{}", tools::qvm::format_table(rows));
}

std::vector<std::string> split_fields(const std::string& fields) {
    std::vector<std::string> out;
    size_t start = 0;
    for (;;) {
        size_t comma = fields.find(',', start);
        std::string f = fields.substr(start, comma - start);
        f.erase(0, f.find_first_not_of(" \t"));
        f.erase(f.find_last_not_of(" \t") + 1);
        out.push_back(f);
        if (comma == std::string::npos) return out;
        start = comma + 1;
    }
}

void check_choice(const ToolCli& cli, const std::string& display, const std::string& value,
                  const std::vector<std::string>& choices) {
    if (std::find(choices.begin(), choices.end(), value) != choices.end()) return;
    std::vector<std::string> quoted;
    for (const auto& c : choices) quoted.push_back(tools::qvm::py_repr(c));
    cli.usage_error("argument " + display + ": invalid choice: " + tools::qvm::py_repr(value) +
                    " (choose from " + tools::qvm::join(quoted, ", ") + ")");
}

struct FormatFlags {
    CLI::Option *format, *fields, *disk, *network, *kernel, *all, *vmname;
};

void check_arguments(const ToolCli& cli, Options& opt, const FormatFlags& f) {
    cli.check_exclusive({{f.format, "--format/-o"},
                         {f.fields, "--fields/-O"},
                         {f.disk, "--disk/-d"},
                         {f.network, "--network/-n"},
                         {f.kernel, "--kernel/-k"}});
    cli.check_exclusive({{f.all, "--all"}, {f.vmname, "VMNAME"}});
    std::vector<std::string> names;
    for (const auto& [n, cols] : formats()) names.push_back(n);
    if (f.format->count()) check_choice(cli, "--format/-o", opt.format, names);
    // Only given values are checked: the default "both" is no choice.
    for (const auto& [flag, value] :
         {std::pair{"--internal", &opt.internal}, {"--servicevm", &opt.servicevm}})
        if (cli.app.get_option(flag)->count()) check_choice(cli, flag, *value, {"y", "yes", "n", "no"});
}

int run(ToolCli& cli, Options& opt, const FormatFlags& flags, int argc, char** argv) {
    cli.parse(argc, argv);
    if (opt.help_formats) {
        fmt::print("{}", help_formats_text());
        return 0;
    }
    if (opt.help_columns) {
        fmt::print("{}", help_columns_text());
        return 0;
    }
    if (flags.disk->count()) opt.format = "disk";
    if (flags.network->count()) opt.format = "network";
    if (flags.kernel->count()) opt.format = "kernel";
    check_arguments(cli, opt, flags);
    if (opt.raw_list) {
        opt.raw_data = true;
        opt.fields = "name";
    }
    std::vector<Column> columns;
    for (const auto& name : opt.fields.empty() ? *find_format(opt.format) : split_fields(opt.fields))
        columns.push_back(column_for(name));

    Qubes qubes(cli.client);
    write_table(opt, qubes, choose_qubes(cli, opt, qubes), columns);
    return 0;
}

void add_options(ToolCli& cli, Options& opt, FormatFlags& f) {
    auto& app = cli.app;
    f.all = app.add_flag("--all", opt.all, "List all qubes, this is default.");
    app.add_option("--exclude", opt.exclude, "exclude the qube from --all")
        ->take_all()
        ->expected(1)
        ->allow_extra_args(false);
    f.format = app.add_option("-o,--format", opt.format, "preset format");
    f.fields =
        app.add_option("-O,--fields", opt.fields, "user specified format (see available columns below)");
    app.add_flag("-t,--tree", opt.tree, "sort domain list as network tree");
    app.add_flag("--raw-data", opt.raw_data,
                 "Display specify data of specified VMs. Intended for bash-parsing.");
    app.add_flag("--raw-list", opt.raw_list, "Same as --raw-data --fields=name");
    f.disk = app.add_flag("-d,--disk", opt.disk, "Same as --format=disk");
    f.network = app.add_flag("-n,--network", opt.network, "Same as --format=network");
    f.kernel = app.add_flag("-k,--kernel", opt.kernel, "Same as --format=kernel");
    app.add_flag("--help-formats", opt.help_formats,
                 "list all available formats with their definitions and exit");
    app.add_flag("--help-columns", opt.help_columns,
                 "list all available columns with short descriptions and exit");
    auto many = [&](const char* name, std::vector<std::string>& into, const char* help) {
        app.add_option(name, into, help)->expected(1, -1);
    };
    many("--class", opt.klass, "show only qubes of specific class(es)");
    many("--label", opt.label, "show only qubes with specific label(s)");
    many("--tags", opt.tags, "show only qubes having specific tag(s)");
    many("--exclude-tags", opt.exclude_tags, "exclude qubes having specific tag(s)");
    app.add_flag("--running", opt.running, "show running VMs");
    app.add_flag("--paused", opt.paused, "show paused VMs");
    app.add_flag("--halted", opt.halted, "show halted VMs");
    many("--template-source", opt.template_source, "filter results to the qubes based on the TEMPLATE");
    many("--netvm-is", opt.netvm_is, "filter results to the qubes connecting via NETVM");
    app.add_option("--internal", opt.internal, "show only internal qubes or option to hide them");
    app.add_option("--servicevm", opt.servicevm, "show only ServiceVMs or option to hide them");
    app.add_flag("--pending-update", opt.pending_update, "filter results to qubes pending for update");
    many("--features", opt.features, "filter results to qubes that matches all specified features");
    many("--prefs", opt.prefs, "filter results to qubes that matches all specified preferences");
    app.add_option("--sort", opt.sort, "sort based on provided column rather than NAME");
    app.add_flag("--reverse", opt.reverse, "reverse sort");
    app.add_flag("--ignore-case", opt.ignore_case, "ignore case distinctions when sorting");
    app.add_flag("--spinner,!--no-spinner", opt.spinner, "reenable spinner / disable spinner");
    f.vmname = app.add_option("VMNAME", opt.vmnames, "zero or more domain names");
}

}  // namespace

int main(int argc, char** argv) {
    ToolCli cli("List Qubes domains and their parameters.", "qvm-ls");
    Options opt;
    FormatFlags flags{};
    add_options(cli, opt, flags);
    cli.usage_optionals.insert(cli.usage_optionals.end(),
                               {"[--all]",
                                "[--exclude EXCLUDE]",
                                "[--format FORMAT]",
                                "[--fields FIELD,...]",
                                "[--tree]",
                                "[--raw-data]",
                                "[--raw-list]",
                                "[--disk]",
                                "[--network]",
                                "[--kernel]",
                                "[--help-formats]",
                                "[--help-columns]",
                                "[--class CLASS [CLASS ...]]",
                                "[--label LABEL [LABEL ...]]",
                                "[--tags TAG [TAG ...]]",
                                "[--exclude-tags TAG [TAG ...]]",
                                "[--running]",
                                "[--paused]",
                                "[--halted]",
                                "[--template-source TEMPLATE [TEMPLATE ...]]",
                                "[--netvm-is NETVM [NETVM ...]]",
                                "[--internal <y|n>]",
                                "[--servicevm <y|n>]",
                                "[--pending-update]",
                                "[--features FEATURE=VALUE [FEATURE=VALUE ...]]",
                                "[--prefs PREFERENCE=VALUE [PREFERENCE=VALUE ...]]",
                                "[--sort COLUMN]",
                                "[--reverse]",
                                "[--ignore-case]",
                                "[--spinner]",
                                "[--no-spinner]"});
    cli.usage_positionals = {"[VMNAME ...]"};
    return tools::qvm::run_tool(cli, [&] { return run(cli, opt, flags, argc, argv); });
}
