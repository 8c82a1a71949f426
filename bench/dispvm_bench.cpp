// Disposable benchmarks: aeried and qrexec-policy-daemon from this build on a
// fresh state directory; a TemplateVM made from the host with a trivial
// service (test.Trivial: prints the qube's name), a disposable template on
// it, and a running caller qube whose policy lets it call @dispvm. Each call
// is made as the caller makes it: qrexec-client-vm talking to the caller's
// qrexec agent (through the caller's /run, seen from the host), so the whole
// path is timed: trigger, policy, admin.vm.CreateDisposable, the start (cold)
// or the unpause (preloaded), the service, its output.
//  - running: the same call to a running AppVM, for reference: what any
//    qrexec call costs here (client, policy, service);
//  - cold: 100 sequential calls without preloading;
//  - preloaded: 100 sequential calls with preload-dispvm-max=4, each made
//    once the queue is full again (preload-dispvm-delay 0.5 s);
//  - concurrent: 10 calls at once, 4 preloads queued;
//  - for every call: time to the service's output (the figure) and to its
//    end; cleanup: from the call's end to the disposable's domain-delete
//    event (it is killed and removed by then: volumes, cgroups, mounts).
// Needs root (skipped otherwise). Figures go to --json-out=PATH, else
// $AERIE_BENCH_DIR/dispvm.json, else dispvm.json next to this executable.
#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <map>
#include <mutex>
#include <thread>

#include "admin/client.hpp"
#include "admin_socket.hpp"
#include "bench_process.hpp"

namespace {

using namespace aerie::bench;

constexpr int kSequential = 100;
constexpr int kWarmup = 3;
constexpr int kConcurrent = 10;
constexpr int kPreloads = 4;

std::string root_dir;
std::vector<pid_t> daemons;
std::vector<std::string> logs;  // shown when the benchmark fails

std::string admin_socket;  // to stop the qubes before aeried
std::string dvm_name;      // whose preloading stops first

void preload_max_zero() {
    if (!dvm_name.empty()) call(admin_socket, encode("admin.vm.feature.Set+preload-dispvm-max", dvm_name, "0"));
}

// Every qube that runs is killed (and its disposables removed) before the
// daemons stop: aeried leaves running qubes running when it exits.
void stop_qubes() {
    if (admin_socket.empty()) return;
    preload_max_zero();
    auto t0 = Clock::now();
    for (;;) {
        std::string list = call(admin_socket, encode("admin.vm.List", "dom0"));
        if (!success(list)) return;
        std::istringstream lines(list.substr(2));
        bool any = false;
        for (std::string line; std::getline(lines, line);) {
            if (line.find(" state=Halted ") != std::string::npos || line.find(" class=AdminVM ") != std::string::npos)
                continue;
            any = true;
            call(admin_socket, encode("admin.vm.Kill", line.substr(0, line.find(' '))));
        }
        if (!any || ms_since(t0) > 20000) return;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

void cleanup() {
    stop_qubes();
    for (pid_t pid : daemons) {
        ::kill(pid, SIGTERM);
        ::waitpid(pid, nullptr, 0);
    }
    daemons.clear();
    if (!root_dir.empty() && !remove_world(root_dir))
        std::fprintf(stderr, "bench_dispvm: mounts left under %s; not removed\n", root_dir.c_str());
}

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "bench_dispvm: %s\n", what.c_str());
    for (const auto& log : logs) {
        std::string text = read_text(log);
        if (text.size() > 3000) text = "..." + text.substr(text.size() - 3000);
        std::fprintf(stderr, "--- %s\n%s", log.c_str(), text.c_str());
    }
    cleanup();
    std::exit(1);
}

pid_t spawn(const std::vector<std::string>& argv, const std::string& log, const std::vector<std::string>& env = {}) {
    std::string error;
    pid_t pid = spawn_logged(argv, log, env, error);
    if (pid < 0) die(error);
    return pid;
}

void run_tool(const std::vector<std::string>& argv, const std::string& log, const std::vector<std::string>& env) {
    pid_t pid = spawn(argv, log, env);
    int status = 0;
    ::waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die(argv[0] + " failed:\n" + read_text(log));
}

std::string must(const std::string& sock, const std::string& request) {
    std::string reply = call(sock, request);
    if (!success(reply)) die("no success reply to " + request.substr(0, request.find('\0')) + ": " + shown(reply));
    return reply.substr(2);
}

// The domain-delete events of an admin.Events stream (the client library's
// reader), with the times they arrived.
class DeleteWatch {
public:
    explicit DeleteWatch(const std::string& sock) : stream_(sock, "dom0") {
        thread_ = std::thread([this] { read_events(); });
    }
    ~DeleteWatch() {
        stop_ = true;
        thread_.join();
    }
    // When `name` was deleted; waits up to 10 s.
    std::optional<Clock::time_point> deleted(const std::string& name) {
        std::unique_lock lock(mutex_);
        cv_.wait_for(lock, std::chrono::seconds(10), [&] { return deleted_.count(name) > 0; });
        auto it = deleted_.find(name);
        return it == deleted_.end() ? std::nullopt : std::optional(it->second);
    }

private:
    void read_events() {
        try {
            while (!stop_) {
                auto event = stream_.next(Clock::now() + std::chrono::milliseconds(100));
                if (!event || event->name != "domain-delete") continue;
                auto now = Clock::now();
                for (const auto& [key, value] : event->kwargs)
                    if (key == "vm") {
                        std::lock_guard lock(mutex_);
                        deleted_[value] = now;
                        cv_.notify_all();
                    }
            }
        } catch (const aerie::admin::AdminError&) {
            // the daemon went away: nothing more to record
        }
    }

    aerie::admin::EventStream stream_;
    std::atomic<bool> stop_{false};
    std::thread thread_;
    std::mutex mutex_;
    std::condition_variable cv_;
    std::map<std::string, Clock::time_point> deleted_;
};

struct CallTimes {
    double output_ms = 0, end_ms = 0, cleanup_ms = 0;
    std::string disposable;
};

// One call to `target` (normally @dispvm) from the caller, as the caller
// makes it; `watch`: wait for the disposable's removal.
CallTimes call_dispvm(const fs::path& client, const std::string& agent_socket, DeleteWatch* watch,
                      const std::string& target = "@dispvm") {
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) die("pipe");
    std::vector<std::string> args = {client.string(), "--agent-socket=" + agent_socket, target, "test.Trivial"};
    std::vector<char*> argv = argv_of(args);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    auto t0 = Clock::now();
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    ::close(out[1]);
    if (rc != 0) die("cannot start qrexec-client-vm");
    CallTimes t;
    std::string text;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(out[0], buf, sizeof buf);
        if (n <= 0) break;
        if (text.empty()) t.output_ms = ms_since(t0);
        text.append(buf, static_cast<size_t>(n));
    }
    ::close(out[0]);
    int status = 0;
    ::waitpid(pid, &status, 0);
    auto ended = Clock::now();
    t.end_ms = ms_since(t0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || text.empty())
        die("the call to @dispvm failed (exit " + std::to_string(WIFEXITED(status) ? WEXITSTATUS(status) : -1) +
            "): " + text);
    t.disposable = text.substr(0, text.find('\n'));
    if (!watch) return t;
    auto gone = watch->deleted(t.disposable);
    if (!gone) die(t.disposable + " was not removed within 10 s of its call's end");
    t.cleanup_ms = std::chrono::duration<double, std::milli>(*gone - ended).count();
    return t;
}

std::vector<std::string> queue(const std::string& sock, const std::string& dvm) {
    std::string reply = call(sock, encode("admin.vm.feature.Get+preload-dispvm", dvm));
    std::vector<std::string> names;
    if (!success(reply)) return names;
    std::istringstream words(reply.substr(2));
    for (std::string w; words >> w;) names.push_back(w);
    return names;
}

// Until `count` preloads are queued, each paused and complete.
void wait_full(const std::string& sock, const std::string& dvm, size_t count, const std::string& log) {
    auto t0 = Clock::now();
    for (;;) {
        auto names = queue(sock, dvm);
        bool full = names.size() == count;
        for (const auto& name : names) {
            if (!full) break;
            std::string state = must(sock, encode("admin.vm.CurrentState", name));
            std::string completed = call(sock, encode("admin.vm.feature.Get+preload-dispvm-completed", name));
            full = state.find("power_state=Paused") != std::string::npos && completed == std::string("0\0" "1", 3);
        }
        if (full) return;
        if (ms_since(t0) > 30000) die("the preload queue did not fill up:\n" + read_text(log));
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
}

void summary(const char* what, const std::vector<CallTimes>& calls) {
    std::vector<double> out, end, clean;
    for (const auto& c : calls) out.push_back(c.output_ms), end.push_back(c.end_ms), clean.push_back(c.cleanup_ms);
    std::fprintf(stderr,
                 "bench_dispvm: %-10s output p50 %6.2f ms p99 %6.2f ms; call end p50 %6.2f ms; cleanup p50 %6.2f ms "
                 "p99 %6.2f ms (%zu calls)\n",
                 what, percentile(out, 0.5), percentile(out, 0.99), percentile(end, 0.5), percentile(clean, 0.5),
                 percentile(clean, 0.99), calls.size());
}

std::vector<double> outputs(const std::vector<CallTimes>& calls) {
    std::vector<double> v;
    for (const auto& c : calls) v.push_back(c.output_ms);
    return v;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    if (::geteuid() != 0) {
        std::fprintf(stderr, "bench_dispvm: needs root (namespaces, cgroups, id-mapped mounts); skipped\n");
        return 0;
    }
    auto bench_t0 = Clock::now();
    fs::path bin = self_dir().parent_path() / "bin";
    std::string root = fs::temp_directory_path() / ("aerie-bench-dispvm-" + std::to_string(::getpid()));
    fs::remove_all(root);
    fs::create_directories(root + "/policy");
    ::chmod(root.c_str(), 0755);
    root_dir = root;
    std::string sock = root + "/qubesd.sock", internal = root + "/qubesd.internal.sock", log = root + "/aeried.log";
    std::string qubes_dir = root + "/qubes", policy_socket = root + "/policy.sock";
    std::string prefix = "b" + std::to_string(::getpid() % 100000) + "-";
    std::string tpl = prefix + "tpl", dvm = prefix + "dvm", caller = prefix + "caller";
    admin_socket = sock;
    dvm_name = dvm;
    {
        std::ofstream policy(root + "/policy/30-bench.policy");
        policy << "test.Trivial * " << caller << " @dispvm allow\n";
        policy << "test.Trivial * " << caller << " " << prefix << "target allow\n";
    }
    daemons.push_back(spawn({(bin / "aeried").string(), "--state-dir", root + "/state", "--socket", sock,
                             "--internal-socket", internal, "--runtime-dir", root + "/run", "--qrexec-socket-dir",
                             qubes_dir, "--policy-socket", policy_socket},
                            log));
    for (int i = 0; !success(call(sock, encode("admin.vm.List", "dom0"))); ++i) {
        if (i > 1000) die("aeried did not come up:\n" + read_text(log));
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    daemons.push_back(spawn({(bin / "qrexec-policy-daemon").string(), "--socket", policy_socket, "--path",
                             root + "/policy", "--internal-socket", internal},
                            root + "/policy-daemon.log"));
    std::vector<std::string> env = {"QUBESD_SOCKET=" + sock, "QREXEC_SOCKET_DIR=" + qubes_dir};
    std::string tools_log = root + "/tools.log";
    run_tool({(bin / "qvm-template").string(), "create-from-host", tpl}, tools_log, env);
    // The service, written into the template's root from inside the
    // template (its root is a volume image; a shell builtin read: no program
    // started but the service itself).
    run_tool({(bin / "qvm-run").string(), "--pass-io", "--no-filter-escape-chars", "-u", "root", tpl,
              "mkdir -p /etc/qubes-rpc && printf '%s\\n' '#!/bin/sh' 'read name < /proc/sys/kernel/hostname' "
              "'echo \"$name\"' > /etc/qubes-rpc/test.Trivial && chmod 755 /etc/qubes-rpc/test.Trivial"},
             tools_log, env);
    run_tool({(bin / "qvm-shutdown").string(), "--wait", tpl}, tools_log, env);
    must(sock, encode("admin.vm.Create.AppVM+" + tpl, "dom0", "name=" + dvm + " label=red"));
    must(sock, encode("admin.vm.property.Set+template_for_dispvms", dvm, "True"));
    must(sock, encode("admin.vm.Create.AppVM+" + tpl, "dom0", "name=" + caller + " label=blue"));
    must(sock, encode("admin.vm.property.Set+default_dispvm", caller, dvm));
    must(sock, encode("admin.vm.Start", caller));
    std::string target = prefix + "target";
    must(sock, encode("admin.vm.Create.AppVM+" + tpl, "dom0", "name=" + target + " label=green"));
    must(sock, encode("admin.vm.Start", target));
    pid_t caller_init =
        std::atoi(read_text(fs::path(root) / "run/qubes" / caller / "init.pid").c_str());
    logs = {log, root + "/policy-daemon.log", root + "/run/log/" + caller + ".qrexec-daemon.log"};
    std::string agent_socket = "/proc/" + std::to_string(caller_init) + "/root/run/qubes/qrexec-agent";
    fs::path client = bin / "qrexec-client-vm";
    DeleteWatch watch(sock);

    // --- the same call to a running qube: what any qrexec call costs ------------------------------
    std::vector<CallTimes> plain;
    for (int i = 0; i < kSequential + kWarmup; ++i) {
        CallTimes t = call_dispvm(client, agent_socket, nullptr, target);
        if (i >= kWarmup) plain.push_back(t);
    }
    summary("running", plain);

    // --- cold ------------------------------------------------------------------------------------
    std::vector<CallTimes> cold;
    for (int i = 0; i < kSequential + kWarmup; ++i) {
        CallTimes t = call_dispvm(client, agent_socket, &watch);
        if (i >= kWarmup) cold.push_back(t);
    }
    summary("cold", cold);

    // --- preloaded ---------------------------------------------------------------------------------
    // Refilled half a second after each use: soon, but not in the way of
    // the call being measured (a start is work on the same two cores).
    must(sock, encode("admin.vm.feature.Set+preload-dispvm-delay", dvm, "0.5"));
    must(sock, encode("admin.vm.feature.Set+preload-dispvm-max", dvm, std::to_string(kPreloads)));
    std::vector<CallTimes> preloaded;
    for (int i = 0; i < kSequential + kWarmup; ++i) {
        wait_full(sock, dvm, kPreloads, log);
        auto expected = queue(sock, dvm).front();
        CallTimes t = call_dispvm(client, agent_socket, &watch);
        if (t.disposable != expected) die("the call did not get the first preload: " + t.disposable);
        if (i >= kWarmup) preloaded.push_back(t);
    }
    summary("preloaded", preloaded);

    // --- concurrent ----------------------------------------------------------------------------------
    wait_full(sock, dvm, kPreloads, log);
    std::vector<CallTimes> concurrent(kConcurrent);
    {
        std::vector<std::thread> threads;
        for (int i = 0; i < kConcurrent; ++i)
            threads.emplace_back([&, i] { concurrent[i] = call_dispvm(client, agent_socket, &watch); });
        for (auto& t : threads) t.join();
    }
    summary("concurrent", concurrent);

    double cold_p50 = percentile(outputs(cold), 0.5), pre_p50 = percentile(outputs(preloaded), 0.5);
    std::vector<double> cleanups;
    for (const auto* set : {&cold, &preloaded})
        for (const auto& c : *set) cleanups.push_back(c.cleanup_ms);
    std::string out_path = json_out_path(argc, argv, "dispvm");
    std::ofstream json(out_path);
    json.setf(std::ios::fixed);
    json.precision(2);
    json << "{\"cold_p50_ms\": " << cold_p50 << ", \"cold_p99_ms\": " << percentile(outputs(cold), 0.99)
         << ", \"preloaded_p50_ms\": " << pre_p50 << ", \"preloaded_p99_ms\": " << percentile(outputs(preloaded), 0.99)
         << ", \"speedup_x\": " << (pre_p50 > 0 ? cold_p50 / pre_p50 : 0)
         << ", \"cleanup_p50_ms\": " << percentile(cleanups, 0.5)
         << ", \"concurrent10_p50_ms\": " << percentile(outputs(concurrent), 0.5)
         << ", \"running_qube_call_p50_ms\": " << percentile(outputs(plain), 0.5) << "}\n";
    json.close();
    std::fprintf(stderr, "bench_dispvm: %.0f s in all\n", ms_since(bench_t0) / 1000);
    std::printf("%s", read_text(out_path).c_str());

    cleanup();
    return 0;
}
