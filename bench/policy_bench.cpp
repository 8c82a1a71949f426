// Policy engine benchmarks: evaluation against policies of 10, 1,000 and
// 10,000 rules, a 10,000-rule policy for a single service, and loading
// (reading and parsing) 10,000 rules.
//
// The figures are the medians of several Google Benchmark repetitions. They
// are printed and written as a flat JSON object (figure name -> number, unit
// as the name's suffix) to --json-out=PATH, else $AERIE_BENCH_DIR/policy.json,
// else bench/policy.json relative to the working directory.

#include <benchmark/benchmark.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "policy/evaluate.hpp"
#include "policy/files.hpp"
#include "policy/loader.hpp"
#include "policy/policy.hpp"
#include "policy/system_info.hpp"

namespace {

namespace ap = aerie::policy;

constexpr int kQubes = 10000;
constexpr int kServices = 100;
constexpr int kRepetitions = 5;
constexpr double kMinTime = 0.2;  // seconds per repetition

std::string qube_name(int i) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "vm-%05d", i);
    return buf;
}

std::string service_name(int i) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "aerie.Service%03d", i);
    return buf;
}

std::string fake_uuid(int i) {
    char buf[40];
    std::snprintf(buf, sizeof buf, "%08x-0000-4000-8000-%012x",
                  0x5eed0000u + static_cast<unsigned>(i), static_cast<unsigned>(i) * 2654435761u);
    return buf;
}

// dom0, a template, a disposable template and kQubes app qubes. Every app
// qube carries a group tag; a few also carry "work".
ap::SystemInfo make_system() {
    ap::SystemInfo system;
    ap::Domain tpl;
    tpl.name = "fedora-40";
    tpl.type = "TemplateVM";
    tpl.uuid = fake_uuid(kQubes + 1);
    system.add(tpl);
    ap::Domain dvm;
    dvm.name = "default-dvm";
    dvm.type = "AppVM";
    dvm.uuid = fake_uuid(kQubes + 2);
    dvm.template_for_dispvms = true;
    system.add(dvm);
    for (int i = 0; i < kQubes; ++i) {
        ap::Domain d;
        d.name = qube_name(i);
        d.type = "AppVM";
        d.uuid = fake_uuid(i);
        d.power_state = i % 3 ? "Running" : "Halted";
        d.default_dispvm = "default-dvm";
        d.tags.push_back("grp-" + std::to_string(i % 50));
        if (i % 997 == 1) d.tags.emplace_back("work");
        d.label = "blue";
        system.add(std::move(d));
    }
    return system;
}

// The qube every request comes from (tagged "work"), and the one it calls.
const std::string kRequestSource = qube_name(1);
const std::string kRequestTarget = qube_name(2);

// `rules` rules spread round-robin over min(kServices, rules) services. The
// last rule of each service allows "@tag:work" to call any qube; the earlier
// ones are a mix that a request from kRequestSource to kRequestTarget without
// argument does not match: argument-specific rules, other literal sources,
// other tags and other targets.
std::string make_policy_text(int rules) {
    const int services = std::min(kServices, rules);
    std::string out = "# generated: " + std::to_string(rules) + " rules\n";
    for (int i = 0; i < rules; ++i) {
        const int s = i % services;
        const int j = i / services;
        const bool last = i + services >= rules;
        const std::string svc = service_name(s);
        if (last) {
            out += svc + " * @tag:work @anyvm allow\n";
            continue;
        }
        switch (j % 5) {
            case 0:
                out += svc + " +arg-" + std::to_string(j) + " @anyvm @anyvm allow\n";
                break;
            case 1:
                out +=
                    svc + " * " + qube_name(100 + (i * 7919) % (kQubes - 100)) + " @anyvm allow\n";
                break;
            case 2:
                out += svc + " * @tag:team-" + std::to_string(j) + " @anyvm deny\n";
                break;
            case 3:
                out +=
                    svc + " * @anyvm " + qube_name(100 + i % (kQubes - 100)) + " allow user=user\n";
                break;
            case 4:
                out += svc + " * @anyvm @type:TemplateVM ask default_target=fedora-40\n";
                break;
        }
    }
    return out;
}

// `rules` rules for one service that differ only in their source: mostly
// literal qube names, one in ten a tag nobody has; the last names the
// requesting qube.
const std::string kSameService = "aerie.SameService";
const std::string kSameServiceSource = qube_name(kQubes - 1);

std::string make_same_service_text(int rules) {
    std::string out;
    for (int i = 0; i < rules; ++i) {
        std::string source = i == rules - 1 ? kSameServiceSource
                             : i % 10 == 5  ? "@tag:team-" + std::to_string(i)
                                            : qube_name(i % (kQubes - 1));
        out += kSameService + " * " + source + " @anyvm allow\n";
    }
    return out;
}

ap::Policy parse(const std::string& text) {
    ap::MemoryFiles files;
    return ap::load_policy_text(files, "/etc/qubes/policy.d/50-bench.policy", text);
}

// The rule index that a request must end on: the last rule of the service.
const ap::Rule* last_rule_of(const ap::Policy& policy, const std::string& service) {
    const ap::Rule* found = nullptr;
    for (const auto& rule : policy.rules())
        if (rule.service && *rule.service == service) found = &rule;
    return found;
}

[[noreturn]] void fail(const std::string& what) {
    std::cerr << "bench_policy: " << what << "\n";
    std::exit(2);
}

struct EvalCase {
    ap::Policy policy;
    ap::Request request;
};

// Checks that the request is allowed by the last rule of its service, so the
// figure measures a walk through every candidate rule of that service.
void check_case(const EvalCase& c, const ap::SystemInfo& system, const std::string& name) {
    auto decision = ap::evaluate(c.policy, system, c.request);
    const ap::Rule* want = last_rule_of(c.policy, c.request.service);
    if (decision.verdict != ap::Verdict::Allow || decision.rule != want || !want)
        fail(name + ": the request is not allowed by the last rule of its service (" +
             decision.reason + ")");
}

EvalCase make_case(std::string text, const std::string& service, const std::string& source) {
    EvalCase c{parse(text), ap::Request::from_service_and_arg(service, source, kRequestTarget)};
    return c;
}

// A figure: the benchmark's name, and the unit of its key's suffix.
struct Figure {
    std::string key;
    benchmark::TimeUnit unit;
};

class CollectingReporter : public benchmark::ConsoleReporter {
  public:
    CollectingReporter() : ConsoleReporter(isatty(STDOUT_FILENO) ? OO_ColorTabular : OO_Tabular) {}

    void ReportRuns(const std::vector<Run>& runs) override {
        for (const auto& run : runs) {
            if (run.error_occurred) {
                errors_.push_back(run.benchmark_name() + ": " + run.error_message);
                continue;
            }
            // With repetitions only the median counts; a single run counts as is.
            bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
            bool single = run.run_type == Run::RT_Iteration && run.repetitions <= 1;
            if (!median && !single) continue;
            double seconds =
                run.GetAdjustedRealTime() / benchmark::GetTimeUnitMultiplier(run.time_unit);
            seconds_[run.run_name.function_name] = seconds;
        }
        ConsoleReporter::ReportRuns(runs);
    }
    const std::map<std::string, double>& seconds() const { return seconds_; }
    const std::vector<std::string>& errors() const { return errors_; }

  private:
    std::map<std::string, double> seconds_;
    std::vector<std::string> errors_;
};

std::string json_path(int* argc, char** argv) {
    std::string path;
    int out = 1;
    for (int i = 1; i < *argc; ++i) {
        std::string_view arg = argv[i];
        if (arg.substr(0, 11) == "--json-out=") {
            path = std::string(arg.substr(11));
            continue;
        }
        argv[out++] = argv[i];
    }
    *argc = out;
    argv[out] = nullptr;
    if (!path.empty()) return path;
    if (const char* dir = std::getenv("AERIE_BENCH_DIR"); dir && *dir)
        return (std::filesystem::path(dir) / "policy.json").string();
    return "bench/policy.json";
}

}  // namespace

int main(int argc, char** argv) {
    const std::string out_path = json_path(&argc, argv);
    benchmark::Initialize(&argc, argv);
    if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

    const ap::SystemInfo system = make_system();

    // Evaluation cases. The requested service sits in the middle of the set.
    const std::string mid_service = service_name(kServices / 2);
    auto eval10 = std::make_shared<EvalCase>(
        make_case(make_policy_text(10), service_name(7), kRequestSource));
    auto eval1k =
        std::make_shared<EvalCase>(make_case(make_policy_text(1000), mid_service, kRequestSource));
    auto eval10k =
        std::make_shared<EvalCase>(make_case(make_policy_text(10000), mid_service, kRequestSource));
    auto same = std::make_shared<EvalCase>(
        make_case(make_same_service_text(10000), kSameService, kSameServiceSource));
    if (eval10->policy.size() != 10 || eval1k->policy.size() != 1000 ||
        eval10k->policy.size() != 10000 || same->policy.size() != 10000)
        fail("generated policies have the wrong number of rules");
    check_case(*eval10, system, "eval_10");
    check_case(*eval1k, system, "eval_1k");
    check_case(*eval10k, system, "eval_10k");
    check_case(*same, system, "eval_10k_same_service");

    // Load case: the 10,000-rule text split into ten files of a policy
    // directory, loaded through the file interface as the daemon does.
    auto files = std::make_shared<ap::MemoryFiles>();
    {
        std::string text = make_policy_text(10000);
        std::vector<std::string> parts(10);
        size_t line = 0;
        for (size_t pos = text.find('\n') + 1; pos < text.size(); ++line) {  // skip the header line
            size_t end = text.find('\n', pos);
            parts[line * parts.size() / 10000].append(text, pos, end + 1 - pos);
            pos = end + 1;
        }
        for (size_t k = 0; k < parts.size(); ++k)
            files->add_file("/etc/qubes/policy.d/" + std::to_string(10 + k) + "-bench.policy",
                            std::move(parts[k]));
    }
    ap::LoadOptions load_options;
    load_options.dirs = {"/etc/qubes/policy.d"};
    load_options.compat_dir = "/etc/qubes-rpc/policy";
    {
        ap::Policy loaded = ap::load_policy(*files, load_options);
        if (loaded.size() != 10000)
            fail("load: expected 10000 rules, got " + std::to_string(loaded.size()));
        check_case(EvalCase{std::move(loaded), eval10k->request}, system, "load_10k");
    }

    std::vector<Figure> figures;
    auto eval_bench = [&](const std::string& key, std::shared_ptr<EvalCase> c) {
        benchmark::RegisterBenchmark(key.c_str(),
                                     [c, &system](benchmark::State& state) {
                                         for (auto _ : state) {
                                             auto decision =
                                                 ap::evaluate(c->policy, system, c->request);
                                             benchmark::DoNotOptimize(decision);
                                         }
                                     })
            ->Unit(benchmark::kMicrosecond)
            ->MinTime(kMinTime)
            ->Repetitions(kRepetitions)
            ->ReportAggregatesOnly(true);
        figures.push_back({key, benchmark::kMicrosecond});
    };
    eval_bench("eval_10", eval10);
    eval_bench("eval_1k", eval1k);
    eval_bench("eval_10k", eval10k);
    eval_bench("eval_10k_same_service", same);

    benchmark::RegisterBenchmark("load_10k",
                                 [files, &load_options](benchmark::State& state) {
                                     for (auto _ : state) {
                                         ap::Policy policy = ap::load_policy(*files, load_options);
                                         benchmark::DoNotOptimize(policy);
                                     }
                                 })
        ->Unit(benchmark::kMillisecond)
        ->MinTime(kMinTime)
        ->Repetitions(kRepetitions)
        ->ReportAggregatesOnly(true);
    figures.push_back({"load_10k", benchmark::kMillisecond});

    CollectingReporter reporter;
    benchmark::RunSpecifiedBenchmarks(&reporter);
    benchmark::Shutdown();

    for (const auto& e : reporter.errors()) std::cerr << "bench_policy: " << e << "\n";

    std::string json = "{";
    bool complete = true;
    for (const auto& f : figures) {
        auto it = reporter.seconds().find(f.key);
        if (it == reporter.seconds().end()) {
            complete = false;
            continue;
        }
        char value[64];
        std::snprintf(value, sizeof value, "%.3f",
                      it->second * benchmark::GetTimeUnitMultiplier(f.unit));
        if (json.size() > 1) json += ", ";
        json += "\"" + f.key + "_" + benchmark::GetTimeUnitString(f.unit) + "\": " + value;
    }
    json += "}";
    std::cout << json << std::endl;

    if (!complete) {
        std::cerr << "bench_policy: not every figure was measured; " << out_path
                  << " not written\n";
        return reporter.errors().empty() ? 0 : 1;
    }
    std::error_code ec;
    auto parent = std::filesystem::path(out_path).parent_path();
    if (!parent.empty()) std::filesystem::create_directories(parent, ec);
    std::ofstream out(out_path);
    out << json << "\n";
    out.close();
    if (!out) {
        std::cerr << "bench_policy: cannot write " << out_path << "\n";
        return 1;
    }
    return reporter.errors().empty() ? 0 : 1;
}
