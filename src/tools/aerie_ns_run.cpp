// aerie-ns-run: the ns backend from a shell, for tests and experiments.
//
//   aerie-ns-run [--runtime-base DIR] [--cgroup-group NAME] COMMAND ...
//     template DIR [--owner-qid Q]      build a host template root at DIR
//     run   QUBE-OPTIONS -- CMD [ARG...] start a qube whose init runs CMD, wait
//                                       for it to end, clean up; exit with its status
//     start QUBE-OPTIONS -- CMD [ARG...] start it and leave it running
//     shutdown NAME [--timeout-ms N] | kill NAME | pause NAME | unpause NAME
//     state NAME | stats NAME | cleanup NAME | adopt
//
// QUBE-OPTIONS: --name N --qid Q --root DIR [--host-usr] [--bind SRC:DST[:rw]]...
//   [--memory MiB] [--maxmem MiB] [--vcpus N] [--hostname H] [--root-ro]
//   [--env KEY=VALUE]... [--console FILE] [--runtime-dir DIR] [--no-init]
//   [--timing] [--timeout-ms N] (run: kill the qube after N ms)
//
// Unless --no-init, PID 1 is aerie-qube-init (from this program's folder,
// bound at /run/aerie/init) running CMD; with --no-init, CMD itself is PID 1.
// Every command first adopts the qubes running under the runtime folder, as
// a restarted daemon would.
#include <fmt/core.h>
#include <poll.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "backend/ns/ns_backend.hpp"
#include "storage/host_template.hpp"

namespace fs = std::filesystem;
using namespace aerie;

namespace {

struct QubeArgs {
    std::string name;
    int qid = 1;
    std::string root;
    bool host_usr = false;
    std::vector<std::string> binds;
    uint64_t memory = 400, maxmem = 4000;
    int vcpus = 2;
    std::string hostname, console, runtime_dir;
    bool root_ro = false, no_init = false, timing = false;
    std::vector<std::string> env;
    std::vector<std::string> command;
    long timeout_ms = 0;
};

void add_qube_options(CLI::App* app, QubeArgs& a) {
    app->add_option("--name", a.name, "qube name")->required();
    app->add_option("--qid", a.qid, "qube id (picks its uid range)");
    app->add_option("--root", a.root, "root folder")->required();
    app->add_flag("--host-usr", a.host_usr, "bind the host's /usr read-only (host template)");
    app->add_option("--bind", a.binds, "SRC:DST[:rw] bind mount (read-only unless :rw)")
        ->allow_extra_args(false);
    app->add_option("--memory", a.memory, "soft memory limit, MiB");
    app->add_option("--maxmem", a.maxmem, "hard memory limit, MiB");
    app->add_option("--vcpus", a.vcpus, "CPU bandwidth, CPUs");
    app->add_option("--hostname", a.hostname);
    app->add_flag("--root-ro", a.root_ro, "mount the root read-only");
    app->add_option("--env", a.env, "KEY=VALUE for PID 1")->allow_extra_args(false);
    app->add_option("--console", a.console, "PID 1's stdout/stderr (run: this program's stdout)");
    app->add_option("--runtime-dir", a.runtime_dir);
    app->add_flag("--no-init", a.no_init, "run CMD as PID 1 itself");
    app->add_flag("--timing", a.timing, "print start timings on stderr");
    app->add_option("--timeout-ms", a.timeout_ms, "run: kill the qube after this long");
    app->add_option("command", a.command, "what to run")->required();
}

backend::QubeSpec make_spec(const QubeArgs& a, bool console_stdout) {
    backend::QubeSpec spec;
    spec.name = a.name;
    spec.qid = a.qid;
    spec.root = a.root;
    spec.root_read_only = a.root_ro;
    spec.memory_mib = a.memory;
    spec.maxmem_mib = a.maxmem;
    spec.vcpus = a.vcpus;
    spec.hostname = a.hostname;
    spec.runtime_dir = a.runtime_dir;
    spec.console_log = !a.console.empty() ? fs::path(a.console) : console_stdout ? "/dev/stdout" : fs::path();
    if (a.host_usr)
        for (auto& m : storage::host_template_mounts()) spec.mounts.push_back(m);
    for (const auto& b : a.binds) {
        backend::BindMount m;
        size_t c1 = b.find(':');
        if (c1 == std::string::npos) throw CLI::ValidationError("--bind", "SRC:DST[:rw]");
        size_t c2 = b.find(':', c1 + 1);
        m.source = b.substr(0, c1);
        m.target = b.substr(c1 + 1, c2 == std::string::npos ? std::string::npos : c2 - c1 - 1);
        m.read_only = !(c2 != std::string::npos && b.substr(c2 + 1) == "rw");
        spec.mounts.push_back(m);
    }
    for (const auto& e : a.env) {
        size_t eq = e.find('=');
        if (eq == std::string::npos) throw CLI::ValidationError("--env", "KEY=VALUE");
        spec.env[e.substr(0, eq)] = e.substr(eq + 1);
    }
    if (a.no_init) {
        spec.init_argv = a.command;
    } else {
        fs::path self = fs::read_symlink("/proc/self/exe").parent_path();
        spec.mounts.push_back({self / "aerie-qube-init", "/run/aerie/init", true});
        spec.init_argv = {"/run/aerie/init", "--"};
        for (const auto& c : a.command) spec.init_argv.push_back(c);
    }
    return spec;
}

void print_timings(backend::ns::NsBackend& b) {
    auto t = b.last_start_timings();
    fmt::print(stderr, "start_ms={:.3f} cgroups_ms={:.3f} prepare_ms={:.3f} setup_ms={:.3f}\n",
               t.total.count() / 1000.0, t.cgroups.count() / 1000.0, t.prepare.count() / 1000.0,
               t.setup.count() / 1000.0);
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Run qubes with Aerie's ns backend"};
    app.require_subcommand(1);
    backend::ns::NsOptions opt;
    std::string base = opt.runtime_base.string();
    app.add_option("--runtime-base", base, "runtime folder of the qubes");
    app.add_option("--cgroup-group", opt.cgroup_group, "cgroup folder under this process's own");

    std::string template_dir;
    int owner_qid = -1;
    auto* tmpl = app.add_subcommand("template", "build a host template root");
    tmpl->add_option("dir", template_dir)->required();
    tmpl->add_option("--owner-qid", owner_qid, "hand the template's files to this qube's uid range");

    QubeArgs run_args, start_args;
    auto* run = app.add_subcommand("run", "run a command in a new qube, wait, clean up");
    add_qube_options(run, run_args);
    auto* start = app.add_subcommand("start", "start a qube and leave it running");
    add_qube_options(start, start_args);

    std::string name;
    long timeout_ms = 5000;
    auto* shutdown = app.add_subcommand("shutdown", "stop a qube (SIGTERM to PID 1, then kill)");
    shutdown->add_option("name", name)->required();
    shutdown->add_option("--timeout-ms", timeout_ms);
    std::vector<CLI::App*> by_name;
    for (const char* c : {"kill", "pause", "unpause", "state", "stats", "cleanup"}) {
        auto* sub = app.add_subcommand(c);
        sub->add_option("name", name)->required();
        by_name.push_back(sub);
    }
    auto* adopt = app.add_subcommand("adopt", "list the running qubes");
    CLI11_PARSE(app, argc, argv);

    try {
        if (*tmpl) {
            storage::HostTemplateOptions o;
            if (owner_qid >= 0) o.owner_base = backend::qube_uid_base(owner_qid);
            auto t0 = std::chrono::steady_clock::now();
            storage::create_host_template(template_dir, o);
            fmt::print(
                "template built in {:.1f} ms\n",
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
            return 0;
        }
        opt.runtime_base = base;
        backend::ns::NsBackend b(opt);
        auto running = b.adopt();
        if (*adopt) {
            for (const auto& q : running) fmt::print("{} {}\n", q.name, q.init_pid);
            return 0;
        }
        if (*run) {
            auto spec = make_spec(run_args, true);
            auto q = b.start(spec);
            if (run_args.timing) print_timings(b);
            pollfd p{b.exit_fd(q.name), POLLIN, 0};
            int rc = ::poll(&p, 1, run_args.timeout_ms > 0 ? static_cast<int>(run_args.timeout_ms) : -1);
            if (rc == 0) {
                fmt::print(stderr, "aerie-ns-run: {} timed out; killing it\n", q.name);
                b.kill(q.name);
                return 124;
            }
            auto status = b.exit_status(q.name);
            auto t0 = std::chrono::steady_clock::now();
            b.cleanup(q.name);
            if (run_args.timing)
                fmt::print(
                    stderr, "cleanup_ms={:.3f}\n",
                    std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
            return status.value_or(0);
        }
        if (*start) {
            auto spec = make_spec(start_args, false);
            auto q = b.start(spec);
            if (start_args.timing) print_timings(b);
            fmt::print("{}\n", q.init_pid);
            return 0;
        }
        if (*shutdown) {
            auto t0 = std::chrono::steady_clock::now();
            b.shutdown(name, std::chrono::milliseconds(timeout_ms));
            fmt::print(
                "shutdown_ms={:.3f}\n",
                std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
            return 0;
        }
        std::string cmd;
        for (auto* sub : by_name)
            if (*sub) cmd = sub->get_name();
        if (cmd == "kill") b.kill(name);
        if (cmd == "pause") b.pause(name);
        if (cmd == "unpause") b.unpause(name);
        if (cmd == "cleanup") b.cleanup(name);
        if (cmd == "state") fmt::print("{}\n", backend::to_string(b.state(name)));
        if (cmd == "stats") {
            auto s = b.stats(name);
            fmt::print("memory_bytes={} cpu_usec={} processes={}\n", s.memory_bytes, s.cpu_usec, s.processes);
        }
        return 0;
    } catch (const std::exception& e) {
        fmt::print(stderr, "aerie-ns-run: {}\n", e.what());
        return 1;
    }
}
