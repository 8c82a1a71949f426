// qrexec-policy-graph: a Graphviz DOT graph of which qube may call which
// service in which qube, evaluated from the policy and a system info file.
#include <set>

#include "policy/evaluate.hpp"
#include "tools/cli_support.hpp"

using namespace aerie;

namespace {

bool selected(const std::vector<std::string>& filter, const std::string& value) {
    return filter.empty() || std::find(filter.begin(), filter.end(), value) != filter.end();
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Graph the qrexec policy", "qrexec-policy-graph"};
    bool include_ask = false, full_output = false, skip_labels = false;
    std::vector<std::string> sources, targets, services, policy_dirs;
    std::string system_info_path, output;
    app.add_flag("--include-ask", include_ask, "Include calls the policy would ask about");
    app.add_flag("--full-output", full_output, "Label edges with SERVICE+ARGUMENT and the rule");
    app.add_flag("--skip-labels", skip_labels, "No service labels; one edge per pair of qubes");
    app.add_option("--source", sources, "Only calls from these qubes")->expected(1, 1 << 20);
    app.add_option("--target", targets, "Only calls to these qubes")->expected(1, 1 << 20);
    app.add_option("--service", services, "Only these services")->expected(1, 1 << 20);
    app.add_option("--policy-dir", policy_dirs, "Policy directory (repeatable)")->allow_extra_args(false);
    app.add_option("--system-info", system_info_path, "System info JSON file")->required();
    app.add_option("--output", output, "Write to this file instead of standard output");
    if (int rc = tools::parse_args(app, argc, argv); rc >= 0) return rc;

    policy::SystemInfo system;
    policy::Policy pol;
    try {
        system = tools::load_system_info_file(system_info_path);
        pol = tools::load_policy_dirs(policy_dirs);
    } catch (const std::exception& e) {
        fmt::print(stderr, "qrexec-policy-graph: {}\n", e.what());
        return 1;
    }

    // Every SERVICE+ARGUMENT the policy names (a "*" argument is the plain call).
    std::set<std::pair<std::string, std::string>> calls;
    for (const auto& rule : pol.rules()) {
        if (!rule.service) continue;
        if (!services.empty() && !selected(services, *rule.service) &&
            !selected(services, *rule.service + rule.argument.value_or("+")))
            continue;
        calls.emplace(*rule.service, rule.argument.value_or("+"));
    }

    std::vector<std::string> all_targets;
    for (const auto& [name, d] : system.domains()) {
        all_targets.push_back(name);
        if (d.template_for_dispvms) all_targets.push_back("@dispvm:" + name);
    }
    all_targets.push_back("@dispvm");

    std::string dot = "digraph g {\n";
    std::set<std::string> seen;
    for (const auto& [service, argument] : calls) {
        for (const auto& [source, _] : system.domains()) {
            if (!selected(sources, source)) continue;
            for (const auto& target : all_targets) {
                policy::Request request{service, argument, source, target, std::nullopt};
                auto decision = policy::evaluate(pol, system, request);
                const char* color = nullptr;
                std::string shown;
                if (decision.verdict == policy::Verdict::Allow) {
                    color = "red";
                    shown = decision.service ? target : decision.target;
                } else if (decision.verdict == policy::Verdict::Ask && include_ask) {
                    // Only what the user could actually pick for this request.
                    shown = policy::assumed_ask_choice(system, decision);
                    const auto& choices = decision.ask_targets;
                    if (std::find(choices.begin(), choices.end(), shown) == choices.end()) continue;
                    color = "orange";
                } else {
                    continue;
                }
                if (!selected(targets, shown)) continue;
                std::string label = skip_labels ? "" : service;
                if (full_output && !skip_labels)
                    label = service + argument + " (" + decision.rule->location() + ")";
                std::string line = fmt::format("  \"{}\" -> \"{}\" [label=\"{}\" color={}];\n",
                                               source, shown, label, color);
                if (seen.insert(line).second) dot += line;
            }
        }
    }
    dot += "}\n";

    if (output.empty()) {
        std::fputs(dot.c_str(), stdout);
    } else {
        std::FILE* f = std::fopen(output.c_str(), "w");
        if (!f) {
            fmt::print(stderr, "qrexec-policy-graph: cannot write {}\n", output);
            return 1;
        }
        std::fputs(dot.c_str(), f);
        std::fclose(f);
    }
    return 0;
}
