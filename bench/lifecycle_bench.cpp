// Lifecycle benchmarks: aeried from this build on a fresh state directory,
// a TemplateVM made from the host (qvm-template create-from-host), AppVMs on
// it, all driven over aeried's raw Admin API socket:
//  - start: the admin.vm.Start round trip, which is answered once the qube's
//    qrexec agent has said hello (p50/p99 over 30 first starts of AppVMs),
//    and beside it the floor it stands on, a process spawned and reaped
//    (measured between the starts): start_per_spawn is the start in those;
//  - shutdown: the admin.vm.Shutdown+wait round trip of those (p50);
//  - idle qubes: AppVMs started one after the other and left idle until 200
//    run at once (or the first start that fails);
//  - idle overhead per qube: memory before minus after those starts,
//    divided by their number, seen two ways: the host's MemAvailable (all
//    of it, but disturbed by whatever else the host does) and the usage of
//    the memory cgroup aeried runs in, with its qrexec daemons and the
//    qubes' cgroups below it (undisturbed; misses kernel memory charged to
//    no cgroup); the larger is reported. The qubes' own cgroup memory
//    (admin.vm.CurrentState mem=) and the proportional set size of their
//    host-side qrexec daemons are printed beside it, as is a breakdown of
//    where a start's time goes (a few more starts, watched by polling the
//    files each step leaves).
// Needs root (skipped otherwise). Figures go to --json-out=PATH, else
// $AERIE_BENCH_DIR/lifecycle.json, else lifecycle.json next to this
// executable (build/bench).
#include <fcntl.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "admin_socket.hpp"
#include "bench_process.hpp"

extern char** environ;

namespace {

using namespace aerie::bench;


constexpr int kStartSamples = 30;
constexpr int kBreakdownSamples = 8;
constexpr int kIdleTarget = 200;
constexpr int kOverheadAt = 20;           // also shown: the overhead with this many idle qubes
constexpr double kIdlePhaseLimitS = 100;  // the idle phase stops here, whatever the count

std::string root_dir;  // for the cleanup in die()
pid_t daemon_pid = 0;
void cleanup();

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "bench_lifecycle: %s\n", what.c_str());
    cleanup();
    std::exit(1);
}

pid_t spawn(const std::vector<std::string>& argv, const std::string& log,
            const std::vector<std::string>& extra_env = {}) {
    std::string error;
    pid_t pid = spawn_logged(argv, log, extra_env, error);
    if (pid < 0) die(error);
    return pid;
}

std::string must(const std::string& socket_path, const std::string& request) {
    std::string reply = call(socket_path, request);
    if (!success(reply))
        die("no success reply to " + request.substr(0, request.find('\0')) + ": " + shown(reply));
    return reply.substr(2);
}

long long meminfo_kib(const std::string& key) {
    std::ifstream in("/proc/meminfo");
    for (std::string line; std::getline(in, line);)
        if (line.rfind(key + ":", 0) == 0) return std::atoll(line.c_str() + key.size() + 1);
    return 0;
}

// The median of a few samples, 50 ms apart: MemAvailable moves with every
// allocation on the host.
long long mem_available_kib() {
    std::vector<double> s;
    for (int i = 0; i < 7; ++i) {
        s.push_back(static_cast<double>(meminfo_kib("MemAvailable")));
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return static_cast<long long>(percentile(s, 0.5));
}

long long pss_kib(pid_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
    for (std::string line; std::getline(in, line);)
        if (line.rfind("Pss:", 0) == 0) return std::atoll(line.c_str() + 4);
    return 0;
}

// The memory charged to this process's own memory cgroup, in KiB: aeried
// runs there (a child of ours), and so do the qrexec daemons it spawns, and
// the qubes' cgroups are below it (<own>/aerie/<qube>), so its usage counts
// all of them (hierarchically) and nothing of the host's other cgroups.
// 0 when there is no memory controller to read.
long long own_cgroup_memory_kib() {
    std::string own_v1, own_v2;
    bool have_v2 = false;
    {
        std::ifstream in("/proc/self/cgroup");
        for (std::string line; std::getline(in, line);) {
            size_t a = line.find(':'), b = line.find(':', a + 1);
            if (a == std::string::npos || b == std::string::npos) continue;
            std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
            std::istringstream list(controllers);
            for (std::string c; std::getline(list, c, ',');)
                if (c == "memory") own_v1 = path;
            if (controllers.empty()) own_v2 = path, have_v2 = true;
        }
    }
    std::ifstream in("/proc/self/mountinfo");
    for (std::string line; std::getline(in, line);) {
        std::istringstream fields(line);
        std::vector<std::string> f;
        for (std::string x; fields >> x;) f.push_back(x);
        auto dash = std::find(f.begin(), f.end(), "-");
        if (dash == f.end() || dash + 3 >= f.end() || f.size() < 5) continue;
        const std::string &fstype = *(dash + 1), &options = *(dash + 3), &root = f[3], &point = f[4];
        auto join = [&](const std::string& path) {
            std::string rel = path.rfind(root, 0) == 0 ? path.substr(root.size()) : path;
            return fs::path(point) / fs::path(rel).relative_path();
        };
        fs::path file;
        if (fstype == "cgroup" && !own_v1.empty() &&
            ("," + options + ",").find(",memory,") != std::string::npos)
            file = join(own_v1) / "memory.usage_in_bytes";
        else if (fstype == "cgroup2" && have_v2 && own_v1.empty())
            file = join(own_v2) / "memory.current";
        if (file.empty()) continue;
        std::string text = read_text(file);
        if (!text.empty()) return std::atoll(text.c_str()) / 1024;
    }
    return 0;
}

// The qrexec daemons of halted qubes that outlive them (each retries its
// agent for qrexec_timeout seconds before it gives up): killed, counted.
int kill_lingering_daemons(const std::string& root, const std::vector<std::string>& halted) {
    int n = 0;
    for (auto& [pid, cmdline] : processes_naming(root)) {
        if (cmdline.find("qrexec-daemon") == std::string::npos) continue;
        for (const auto& name : halted)
            if (cmdline.find(" " + name + " ") != std::string::npos) {
                ::kill(pid, SIGKILL);
                ++n;
                break;
            }
    }
    return n;
}

void cleanup() {
    if (daemon_pid > 0) {
        ::kill(daemon_pid, SIGTERM);
        ::waitpid(daemon_pid, nullptr, 0);
        daemon_pid = 0;
    }
    if (root_dir.empty()) return;
    if (!remove_world(root_dir))
        std::fprintf(stderr, "bench_lifecycle: mounts left under %s; not removed\n", root_dir.c_str());
}

std::map<std::string, std::string> current_state(const std::string& sock, const std::string& name) {
    std::map<std::string, std::string> out;
    std::istringstream words(must(sock, encode("admin.vm.CurrentState", name)));
    for (std::string w; words >> w;)
        if (auto eq = w.find('='); eq != std::string::npos) out[w.substr(0, eq)] = w.substr(eq + 1);
    return out;
}

// How many qubes admin.vm.List shows in `state`.
int count_in_state(const std::string& sock, const std::string& state) {
    std::string body = must(sock, encode("admin.vm.List", "dom0"));
    int n = 0;
    size_t pos = 0;
    std::string needle = " state=" + state + " ";
    while ((pos = body.find(needle, pos)) != std::string::npos) ++n, ++pos;
    return n;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    if (::geteuid() != 0) {
        std::fprintf(stderr,
                     "bench_lifecycle: needs root (namespaces, cgroups, id-mapped mounts); skipped\n");
        return 0;
    }
    auto bench_t0 = Clock::now();
    fs::path bin = self_dir().parent_path() / "bin";
    std::string root = fs::temp_directory_path() / ("aerie-bench-lifecycle-" + std::to_string(::getpid()));
    fs::remove_all(root);
    fs::create_directories(root);
    ::chmod(root.c_str(), 0755);
    root_dir = root;
    std::string sock = root + "/qubesd.sock", log = root + "/aeried.log", qubes_dir = root + "/qubes";
    std::string runtime = root + "/run";
    daemon_pid = spawn({(bin / "aeried").string(), "--state-dir", root + "/state", "--socket", sock,
                        "--internal-socket", root + "/qubesd.internal.sock", "--runtime-dir", runtime,
                        "--qrexec-socket-dir", qubes_dir, "--policy-socket", root + "/policy.sock"},
                       log);
    std::string list_request = encode("admin.vm.List", "dom0");
    for (int i = 0; !success(call(sock, list_request)); ++i) {
        int status;
        if (i > 1000 || ::waitpid(daemon_pid, &status, WNOHANG) == daemon_pid) {
            daemon_pid = 0;
            die("aeried did not come up:\n" + read_text(log));
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }

    // Names unique to this run: qubes' cgroup folders are shared host-wide.
    std::string prefix = "b" + std::to_string(::getpid() % 100000) + "-";
    std::string tpl = prefix + "tpl";
    pid_t tool = spawn({(bin / "qvm-template").string(), "create-from-host", tpl}, root + "/qvm-template.log",
                       {"QUBESD_SOCKET=" + sock});
    int status = 0;
    ::waitpid(tool, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        die("qvm-template failed:\n" + read_text(root + "/qvm-template.log"));

    const int total = kStartSamples + 2 + kBreakdownSamples + kIdleTarget;
    std::vector<std::string> names;
    for (int i = 0; i < total; ++i) {
        char name[32];
        std::snprintf(name, sizeof name, "%s%03d", prefix.c_str(), i);
        names.push_back(name);
        must(sock, encode("admin.vm.Create.AppVM+" + tpl, "dom0", "name=" + names.back() + " label=red"));
    }
    size_t next = 0;

    // --- start and shutdown ---------------------------------------------------------------------
    // Each sample a qube started for the first time; a qube started again
    // within qrexec_timeout could meet its previous qrexec daemon, which is
    // still trying to reach the agent of that run.
    std::vector<double> start_ms, shutdown_ms;
    std::vector<double> spawn_ms;  // the floor, measured between the starts
    std::vector<std::string> halted;
    for (int i = 0; i < kStartSamples + 2; ++i) {
        const std::string& name = names[next++];
        auto t0 = Clock::now();
        std::string reply = call(sock, encode("admin.vm.Start", name));
        double ms = ms_since(t0);
        if (!success(reply)) die("admin.vm.Start " + name + ": " + shown(reply) + "\n" + read_text(log));
        t0 = Clock::now();
        must(sock, encode("admin.vm.Shutdown+wait", name));
        double down = ms_since(t0);
        halted.push_back(name);
        if (i < 2) continue;  // warm-up
        start_ms.push_back(ms);
        shutdown_ms.push_back(down);
        for (int k = 0; k < 3; ++k) spawn_ms.push_back(spawn_floor_sample_ms());
    }
    std::fprintf(stderr,
                 "bench_lifecycle: start p50 %.1f ms p99 %.1f ms; shutdown+wait p50 %.1f ms; floor (a process "
                 "spawned and reaped) p50 %.2f ms, a start is %.1f of them; starts (ms):",
                 percentile(start_ms, 0.5), percentile(start_ms, 0.99), percentile(shutdown_ms, 0.5),
                 percentile(spawn_ms, 0.5), percentile(start_ms, 0.5) / percentile(spawn_ms, 0.5));
    {
        std::vector<double> sorted = start_ms;
        std::sort(sorted.begin(), sorted.end());
        for (double v : sorted) std::fprintf(stderr, " %.0f", v);
        std::fprintf(stderr, "\n");
    }

    // --- where a start's time goes -----------------------------------------------------------------
    // Marks polled from a thread (which costs the starts some CPU), in the
    // order a start passes them: the pool's run state (its volumes are
    // mounted), the qube's runtime folder (the launch began),
    // qrexec-daemon.pid (the host daemon is spawned, before the qube so that
    // it loads meanwhile), the backend's record (its cgroups are made),
    // init.pid (the backend returned: PID 1 runs in its namespaces), the
    // agent's vchan socket (the agent listens), qrexec.NAME (the daemon has
    // the agent's hello), and the reply.
    {
        const char* labels[] = {"volumes mounted", "launch began",  "qrexec daemon spawned", "cgroups made",
                                "PID 1 runs",      "agent listens", "daemon has hello",      "reply"};
        constexpr size_t kMarks = 8;
        std::vector<std::vector<double>> marks(kMarks);
        for (int i = 0; i < kBreakdownSamples; ++i) {
            const std::string& name = names[next++];
            auto value = [&](const char* property) {
                std::string body = must(sock, encode(std::string("admin.vm.property.Get+") + property, name));
                return body.substr(body.rfind(' ') + 1);
            };
            std::string qid = value("qid"), uuid = value("uuid");
            fs::path dir = fs::path(runtime) / "qubes" / name;
            // (path, must have content)
            std::vector<std::pair<fs::path, bool>> paths = {
                {fs::path(root) / "state" / "pool" / "run" / uuid / "state", true},
                {dir / "vchan", false},
                {dir / "qrexec-daemon.pid", true},
                {fs::path(runtime) / "backend" / name / "qube.json", true},
                {dir / "init.pid", true},
                {dir / "vchan" / ("vchan." + qid + ".0.512.sock"), false},
                {fs::path(qubes_dir) / ("qrexec." + name), false}};
            std::vector<double> seen(paths.size(), -1);
            std::atomic<bool> done{false};
            auto t0 = Clock::now();
            std::thread poller([&] {
                while (!done.load()) {
                    for (size_t k = 0; k < paths.size(); ++k) {
                        struct stat st;
                        if (seen[k] < 0 && ::lstat(paths[k].first.c_str(), &st) == 0 &&
                            (!paths[k].second || st.st_size > 0))
                            seen[k] = ms_since(t0);
                    }
                    std::this_thread::sleep_for(std::chrono::microseconds(200));
                }
            });
            std::string reply = call(sock, encode("admin.vm.Start", name));
            double total_ms = ms_since(t0);
            done = true;
            poller.join();
            if (!success(reply)) die("admin.vm.Start " + name + ": " + shown(reply));
            must(sock, encode("admin.vm.Shutdown+wait", name));
            halted.push_back(name);
            for (size_t k = 0; k < paths.size(); ++k) marks[k].push_back(seen[k]);
            marks[kMarks - 1].push_back(total_ms);
        }
        std::fprintf(stderr,
                     "bench_lifecycle: a start's steps, median ms since the request (%d starts, polled):\n",
                     kBreakdownSamples);
        double prev = 0;
        for (size_t k = 0; k < kMarks; ++k) {
            double at = percentile(marks[k], 0.5);
            std::fprintf(stderr, "  %-22s at %6.1f  (+%.1f)\n", labels[k], at, at - prev);
            prev = at;
        }
    }

    // --- idle qubes and their memory --------------------------------------------------------------
    int lingering = kill_lingering_daemons(root, halted);
    if (lingering > 0)
        std::fprintf(
            stderr,
            "bench_lifecycle: %d qrexec daemons of halted qubes were still running (killed before the "
            "memory figures)\n",
            lingering);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
    long long avail_before = mem_available_kib();
    long long cgroup_before = own_cgroup_memory_kib();
    long long aeried_pss_before = pss_kib(daemon_pid);
    std::vector<std::string> running;
    std::string stop_reason = "reached " + std::to_string(kIdleTarget);
    double overhead_at_n = -1, cgroup_at_n = -1;
    std::vector<double> idle_start_ms;
    auto idle_t0 = Clock::now();
    while (static_cast<int>(running.size()) < kIdleTarget && next < names.size()) {
        const std::string& name = names[next++];
        auto t0 = Clock::now();
        std::string reply = call(sock, encode("admin.vm.Start", name));
        idle_start_ms.push_back(ms_since(t0));
        if (!success(reply)) {
            stop_reason = "start " + std::to_string(running.size() + 1) + " failed: " + shown(reply);
            std::string text = read_text(log);
            std::fprintf(stderr, "bench_lifecycle: the end of aeried's log:\n%s\n",
                         text.substr(text.size() > 2000 ? text.size() - 2000 : 0).c_str());
            break;
        }
        running.push_back(name);
        if (static_cast<int>(running.size()) == kOverheadAt) {
            std::this_thread::sleep_for(std::chrono::milliseconds(500));
            overhead_at_n = std::max(static_cast<double>(avail_before - mem_available_kib()),
                                     static_cast<double>(own_cgroup_memory_kib() - cgroup_before)) /
                            1024.0 / kOverheadAt;
            long long kib = 0;
            for (const auto& n : running) kib += std::atoll(current_state(sock, n)["mem"].c_str());
            cgroup_at_n = static_cast<double>(kib) / 1024.0 / kOverheadAt;
        }
        if (ms_since(idle_t0) / 1000 > kIdlePhaseLimitS) {
            stop_reason = "time limit of the idle phase";
            break;
        }
    }
    int idle_count = static_cast<int>(running.size());
    // Idle for a moment, then measured.
    std::this_thread::sleep_for(std::chrono::seconds(1));
    int running_now = count_in_state(sock, "Running");
    long long avail_after = mem_available_kib();
    long long cgroup_after = own_cgroup_memory_kib();
    // Two views of one figure: the host's MemAvailable sees all of it (also
    // kernel memory charged to no cgroup) but moves with everything else the
    // host does meanwhile; our own cgroup sees only what aeried, its daemons
    // and the qubes are charged, undisturbed. The larger is reported.
    double avail_mib = idle_count ? static_cast<double>(avail_before - avail_after) / 1024.0 / idle_count : 0;
    double charged_mib =
        idle_count ? static_cast<double>(cgroup_after - cgroup_before) / 1024.0 / idle_count : 0;
    double overhead_mib = std::max(avail_mib, charged_mib);
    long long cgroup_kib = 0, daemons_pss = 0;
    int daemons = 0;
    for (const auto& n : running) {
        cgroup_kib += std::atoll(current_state(sock, n)["mem"].c_str());
        pid_t dpid = std::atoi(read_text(fs::path(runtime) / "qubes" / n / "qrexec-daemon.pid").c_str());
        if (dpid > 0) {
            daemons_pss += pss_kib(dpid);
            ++daemons;
        }
    }
    long long aeried_pss_after = pss_kib(daemon_pid);
    std::fprintf(
        stderr,
        "bench_lifecycle: %d idle qubes at once (%s; admin.vm.List shows %d Running); starts in this "
        "phase p50 %.1f ms, last %.1f ms\n",
        idle_count, stop_reason.c_str(), running_now - 1 /* dom0 */, percentile(idle_start_ms, 0.5),
        idle_start_ms.empty() ? 0.0 : idle_start_ms.back());
    if (idle_count)
        std::fprintf(stderr,
                     "bench_lifecycle: per idle qube: MemAvailable drop %.2f MiB; charged to aeried's memory "
                     "cgroup and "
                     "below %.2f MiB (larger of the two with %d qubes: %.2f MiB); of which its own cgroup "
                     "%.2f MiB (with %d: %.2f), "
                     "its host qrexec daemon's PSS %.2f MiB; aeried's PSS %+.3f MiB\n",
                     avail_mib, charged_mib, kOverheadAt, overhead_at_n,
                     static_cast<double>(cgroup_kib) / 1024.0 / idle_count, kOverheadAt, cgroup_at_n,
                     daemons ? static_cast<double>(daemons_pss) / 1024.0 / daemons : 0.0,
                     static_cast<double>(aeried_pss_after - aeried_pss_before) / 1024.0 / idle_count);

    // --- everything down ----------------------------------------------------------------------------
    auto down_t0 = Clock::now();
    for (const auto& n : running) {
        std::string reply = call(sock, encode("admin.vm.Shutdown", n));
        if (!success(reply))
            std::fprintf(stderr, "bench_lifecycle: shutdown %s: %s\n", n.c_str(), shown(reply).c_str());
        halted.push_back(n);
    }
    while (count_in_state(sock, "Halted") < total + 1) {  // the AppVMs and their template
        if (ms_since(down_t0) > 120000) die("qubes still running 120 s after their shutdown");
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    std::fprintf(stderr, "bench_lifecycle: %d qubes shut down in %.1f s\n", idle_count,
                 ms_since(down_t0) / 1000);
    lingering = kill_lingering_daemons(root, halted);
    if (lingering > 0)
        std::fprintf(stderr, "bench_lifecycle: %d qrexec daemons of halted qubes still running (killed)\n",
                     lingering);
    ::kill(daemon_pid, SIGTERM);
    ::waitpid(daemon_pid, nullptr, 0);
    daemon_pid = 0;
    auto left_mounts = mounts_under(root);
    auto left_procs = processes_naming(root);
    if (!left_mounts.empty() || !left_procs.empty())
        std::fprintf(stderr, "bench_lifecycle: left behind: %zu mounts, %zu processes\n", left_mounts.size(),
                     left_procs.size());
    cleanup();

    char json[512];
    std::snprintf(json, sizeof json,
                  "{\"start_p50_ms\": %.2f, \"start_p99_ms\": %.2f, \"shutdown_p50_ms\": %.2f, "
                  "\"spawn_floor_p50_ms\": %.3f, \"start_per_spawn\": %.2f, "
                  "\"idle_overhead_mib\": %.2f, \"idle_qubes_count\": %d}\n",
                  percentile(start_ms, 0.5), percentile(start_ms, 0.99), percentile(shutdown_ms, 0.5),
                  percentile(spawn_ms, 0.5), percentile(start_ms, 0.5) / percentile(spawn_ms, 0.5), overhead_mib,
                  idle_count);
    std::fputs(json, stdout);
    std::fprintf(stderr, "bench_lifecycle: %.0f s in all; load average %s", ms_since(bench_t0) / 1000,
                 read_text("/proc/loadavg").c_str());
    std::string out = json_out_path(argc, argv, "lifecycle");
    std::error_code ec;
    fs::create_directories(fs::path(out).parent_path().empty() ? "." : fs::path(out).parent_path(), ec);
    std::ofstream(out) << json;
    return 0;
}
