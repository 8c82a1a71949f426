// qvm-shutdown: shuts qubes down (admin.vm.Shutdown, with "force" for
// --force and --all), as Qubes' qvm-shutdown does.
//
// Without --wait a failure is logged ("NAME: Shutdown error: MESSAGE") and
// the tool goes on. With --wait it follows the qubes on an admin.Events
// stream until each has sent domain-shutdown (or is found halted when the
// stream starts); those still running after --timeout seconds (default 60)
// are killed (admin.vm.Kill). A qube whose shutdown request failed is tried
// again in the next round (as many rounds as qubes). At the end every qube
// must be halted (a DispVM may be gone), else "Failed to shut down: A, B"
// with the number of them as exit code. When the daemon offers no event
// stream, the power states are polled every second instead, as qubesadmin
// does without its events module. --dry-run sends no shutdown and no kill,
// and only waits (with --wait).
#include <poll.h>

#include <chrono>
#include <cmath>

#include "tools/qvm_support.hpp"

using namespace aerie;
using tools::qvm::ToolCli;
using Clock = std::chrono::steady_clock;

namespace {

struct Options {
    tools::qvm::VmNames vms;
    bool wait = false, force = false, dry_run = false;
    std::optional<std::string> timeout;  // default 60
};

// Python's str() of the timeout: argparse converts a given --timeout with
// float(), but leaves the default (60) an int.
std::string timeout_text(double value, bool is_float) {
    if (!is_float) return fmt::format("{}", static_cast<long long>(value));
    if (std::floor(value) == value && std::fabs(value) < 1e16) return fmt::format("{:.1f}", value);
    return fmt::format("{}", value);
}

// argparse's type=float: Python's float() of the text.
double parse_timeout(const ToolCli& cli, const std::string& text) {
    try {
        size_t used = 0;
        double value = std::stod(text, &used);
        if (used == text.size() && !text.empty()) return value;
    } catch (const std::exception&) {
    }
    cli.usage_error("argument --timeout: invalid float value: " + tools::qvm::py_repr(text));
}

bool halted_or_gone(const admin::AdminClient& client, const admin::QubeInfo& q) {
    std::string state = client.power_state(q.name);
    return state == "Halted" || (q.klass == "DispVM" && state == "NA");
}

// qubesadmin.events.utils.wait_for_domain_shutdown() under a timeout: true
// when all of them are down before the deadline. nullopt when the daemon
// offers no event stream.
std::optional<bool> wait_by_events(const admin::AdminClient& client, std::set<std::string> vms,
                                   Clock::time_point deadline) {
    std::optional<admin::EventStream> stream;
    try {
        stream.emplace(client.events());
        while (!vms.empty()) {
            auto event = stream->next(deadline);
            if (!event) return false;
            if (event->name == "connection-established") {
                // Halted, or gone already (a disposable removes itself on shutdown).
                for (auto it = vms.begin(); it != vms.end();) {
                    std::string state = client.power_state(*it);
                    it = state == "Halted" || state == "NA" ? vms.erase(it) : std::next(it);
                }
            } else if (event->name == "domain-shutdown") {
                vms.erase(event->subject);
            }
        }
        return true;
    } catch (const admin::AdminError& e) {
        // No stream at all: the caller polls instead. A stream that broke
        // off is an error as upstream's would be.
        if (!stream || e.is_access_error()) return std::nullopt;
        throw;
    }
}

// The polling fallback: power states every second, "Waiting for shutdown"
// logged each time; true when none is left running.
bool wait_by_polling(const ToolCli& cli, std::vector<admin::QubeInfo> vms, double timeout, bool is_float) {
    std::sort(vms.begin(), vms.end(), [](const auto& a, const auto& b) { return a.name < b.name; });
    while (timeout >= 0) {
        std::erase_if(vms, [&](const admin::QubeInfo& q) { return halted_or_gone(cli.client, q); });
        if (vms.empty()) return true;
        std::vector<std::string> names;
        for (const auto& q : vms) names.push_back(q.name);
        cli.log_info("app", "Waiting for shutdown (" + timeout_text(timeout, is_float) + "): " + tools::qvm::join(names, ", "));
        ::poll(nullptr, 0, 1000);
        timeout -= 1;
    }
    return vms.empty();
}

void kill_all(const ToolCli& cli, const std::vector<std::string>& names) {
    for (const auto& name : names) {
        try {
            cli.client.kill(name);
        } catch (const admin::AdminError& e) {
            // Already shut down, or a disposable already removed.
            if (e.is_instance_of("QubesVMNotStartedError") || e.is_instance_of("QubesVMNotFoundError")) continue;
            cli.runtime_error(e.what());
        }
    }
}

int run(ToolCli& cli, Options& opt, int argc, char** argv) {
    cli.parse(argc, argv);
    tools::qvm::check_vm_names(cli, opt.vms);
    double timeout = opt.timeout ? parse_timeout(cli, *opt.timeout) : 60;
    auto domains = tools::qvm::chosen_qubes(cli, opt.vms, cli.client.list_qubes());
    // A remote qube runs elsewhere: --all means the qubes of this host.
    if (opt.vms.all) std::erase_if(domains, [](const admin::QubeInfo& q) { return q.klass == "RemoteVM"; });
    bool force = opt.force || opt.vms.all;

    std::set<std::string> remaining;
    for (const auto& q : domains) remaining.insert(q.name);
    for (size_t round = 0; round < domains.size(); ++round) {
        std::set<std::string> this_round = remaining;
        if (this_round.empty()) break;
        remaining.clear();
        if (!opt.dry_run) {
            for (const auto& name : this_round) {
                try {
                    cli.client.shutdown(name, force);
                } catch (const admin::AdminError& e) {
                    if (e.is_instance_of("QubesVMNotStartedError") || e.is_instance_of("QubesVMNotFoundError"))
                        continue;
                    if (!opt.wait)
                        cli.log_error(name, std::string("Shutdown error: ") + e.what());
                    else
                        remaining.insert(name);
                }
            }
        }
        if (!opt.wait) return 0;
        for (const auto& name : remaining) this_round.erase(name);
        if (this_round.empty()) break;  // no request went through: no use trying again

        auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(std::max(0.0, timeout)));
        std::optional<bool> done = wait_by_events(cli.client, this_round, deadline);
        if (!done) {
            std::vector<admin::QubeInfo> vms;
            for (const auto& q : domains)
                if (this_round.count(q.name)) vms.push_back(q);
            bool all_down = wait_by_polling(cli, vms, timeout, opt.timeout.has_value());
            if (!all_down && !opt.dry_run) {
                std::vector<std::string> left;
                for (const auto& q : vms)
                    if (!halted_or_gone(cli.client, q)) left.push_back(q.name);
                if (!left.empty()) cli.log_info("app", "Killing remaining qubes: " + tools::qvm::join(left, ", "));
                kill_all(cli, left);
            }
        } else if (!*done && !opt.dry_run) {
            kill_all(cli, {this_round.begin(), this_round.end()});
        }
    }

    std::vector<std::string> failed;
    for (const auto& q : domains)
        if (!halted_or_gone(cli.client, q)) failed.push_back(q.name);
    if (!failed.empty())
        cli.runtime_error("Failed to shut down: " + tools::qvm::join(failed, ", "), static_cast<int>(failed.size()));
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    ToolCli cli("Shutdown a qube", "qvm-shutdown");
    Options opt;
    tools::qvm::add_vm_names(cli, opt.vms);
    cli.app.add_flag("--wait", opt.wait, "wait for the VMs to shut down");
    cli.app.add_option("--timeout", opt.timeout, "timeout after which domains are killed when using --wait (default: 60)");
    cli.app.add_flag("--force", opt.force, "force shutdown regardless of connected domains; use with caution");
    cli.app.add_flag("--dry-run", opt.dry_run, "don't really shutdown or kill the domains; useful with --wait");
    cli.usage_optionals.insert(cli.usage_optionals.end(),
                               {"[--wait]", "[--timeout TIMEOUT]", "[--force]", "[--dry-run]"});
    cli.usage_positionals = {"[VMNAME ...]"};
    return tools::qvm::run_tool(cli, [&] { return run(cli, opt, argc, argv); });
}
