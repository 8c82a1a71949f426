#include "backend/ns/ns_backend.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <nlohmann/json.hpp>
#include <thread>

#include "backend/ns/launch.hpp"
#include "base/bounded_log.hpp"

namespace aerie::backend::ns {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

constexpr const char* kRecord = "qube.json";
constexpr auto kKillWait = 10s;

std::chrono::microseconds since(Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - t);
}

std::mutex& cgroup_mutex() {
    // Creating <own>/<group>/<qube> and removing an empty <own>/<group> race
    // with each other; one lock for every backend of the process.
    static std::mutex mu;
    return mu;
}

// PID 1's stdout/stderr when the caller gave no pipe: a log file gets a
// capped drainer (the qube never holds the file); a device (a developer's
// aerie-ns-run with /dev/stdout: its own terminal or pipe) is handed over as it is.
base::UniqueFd open_console(const QubeSpec& spec, const fs::path& runtime_dir) {
    fs::path console = spec.console_log.empty() ? runtime_dir / "console.log" : spec.console_log;
    struct stat st {};
    bool device = console.string().rfind("/dev/", 0) == 0;
    if (device || (::stat(console.c_str(), &st) == 0 && !S_ISREG(st.st_mode))) {
        base::UniqueFd fd(::open(console.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY));
        if (!fd) throw_errno("opening " + console.string(), errno);
        return fd;
    }
    base::LogCap cap;
    cap.bytes_per_second = 1u << 20;
    cap.burst_bytes = 4u << 20;
    return base::spawn_log_drainer(console, cap).input;
}

}  // namespace

struct NsBackend::Qube {
    std::mutex mu;
    std::string name;
    int qid = 0;
    pid_t pid = 0;
    uint64_t start_time = 0;
    bool our_child = false;
    bool starting = false;
    bool ended = false;
    std::optional<int> status;
    Fd pidfd;
    QubeCgroup cg;
    fs::path runtime_dir;
    fs::path link;  // <base>/<name> when the runtime folder lives elsewhere

    nlohmann::json record() const {
        nlohmann::json cgroups = nlohmann::json::object();
        for (const auto& [k, v] : cg.dirs()) cgroups[k] = v.string();
        return {{"name", name},
                {"qid", qid},
                {"init_pid", pid},
                {"start_time", start_time},
                {"uid_base", qube_uid_base(qid)},
                {"runtime_dir", runtime_dir.string()},
                {"cgroup_version", cg.version()},
                {"cgroups", cgroups}};
    }
    void save() const { write_file_atomic(runtime_dir / kRecord, record().dump(2) + "\n", 0600, false); }
};

NsBackend::NsBackend(NsOptions options)
    : opt_(std::move(options)),
      layout_(detect_cgroup_layout()),
      budget_(opt_.budget ? *opt_.budget : qubes_budget(read_host_facts())),
      seccomp_(build_seccomp_filter()),
      caps_(capability_plan()) {
    if (opt_.runtime_base.empty()) throw BackendError("ns backend: no runtime folder");
    if (!valid_qube_name(opt_.cgroup_group)) throw BackendError("ns backend: bad cgroup group name");
    if (opt_.pids_max) budget_.qube_pids_max = opt_.pids_max;
}

NsBackend::~NsBackend() = default;

std::shared_ptr<NsBackend::Qube> NsBackend::find(const std::string& name) {
    std::lock_guard lock(mu_);
    auto it = qubes_.find(name);
    return it == qubes_.end() ? nullptr : it->second;
}

std::shared_ptr<NsBackend::Qube> NsBackend::load_record(const fs::path& dir) {
    auto text = try_read_file(dir / kRecord);
    if (!text) return nullptr;
    auto j = nlohmann::json::parse(*text, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return nullptr;
    auto q = std::make_shared<Qube>();
    try {
        q->name = j.at("name").get<std::string>();
        q->qid = j.at("qid").get<int>();
        q->pid = j.at("init_pid").get<pid_t>();
        q->start_time = j.at("start_time").get<uint64_t>();
        std::map<std::string, fs::path> dirs;
        for (const auto& [k, v] : j.at("cgroups").items()) dirs[k] = v.get<std::string>();
        q->cg = QubeCgroup::from_dirs(j.at("cgroup_version").get<int>(), std::move(dirs));
    } catch (const nlohmann::json::exception&) {
        return nullptr;
    }
    if (!valid_qube_name(q->name)) return nullptr;
    std::error_code ec;
    fs::path link = opt_.runtime_base / q->name;
    if (fs::is_symlink(link, ec)) q->link = link;
    q->runtime_dir = fs::canonical(dir, ec);
    if (ec) q->runtime_dir = dir;
    // Alive only if the pid still names the process we started: same start time.
    auto st = read_proc_stat(q->pid);
    if (q->pid > 0 && st && st->state != 'Z' && st->start_time == q->start_time) {
        q->pidfd.reset(sys_pidfd_open(q->pid));
        auto again = read_proc_stat(q->pid);
        if (q->pidfd && again && again->start_time == q->start_time) {
            q->our_child = again->ppid == ::getpid();
            return q;
        }
    }
    q->pidfd.reset();
    q->ended = true;
    // Our own dead child (a backend of this process started it): reap it.
    if (q->pid > 0 && st && st->state == 'Z' && st->ppid == ::getpid()) {
        int status = 0;
        if (::waitpid(q->pid, &status, WNOHANG) == q->pid)
            q->status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    return q;
}

bool NsBackend::reap(Qube& q, std::chrono::milliseconds wait) {
    if (q.ended) return true;
    if (!q.pidfd) {
        auto st = read_proc_stat(q.pid);
        if (st && st->state != 'Z' && st->start_time == q.start_time) return false;
    } else {
        pollfd p{q.pidfd.get(), POLLIN, 0};
        auto deadline = Clock::now() + wait;
        for (;;) {
            auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
            int rc = ::poll(&p, 1, static_cast<int>(std::max<int64_t>(0, left.count())));
            if (rc > 0) break;
            if (rc < 0 && errno == EINTR) continue;
            return false;
        }
    }
    if (q.our_child) {
        int st = 0;
        pid_t r;
        do r = ::waitpid(q.pid, &st, 0);
        while (r < 0 && errno == EINTR);
        if (r == q.pid) q.status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    }
    q.ended = true;
    return true;
}

RunningQube NsBackend::start(const QubeSpec& spec) {
    auto t0 = Clock::now();
    if (!valid_qube_name(spec.name)) throw BackendError("bad qube name: " + spec.name);
    if (spec.qid < 0 || spec.qid > kMaxQid)
        throw BackendError("qid out of range: " + std::to_string(spec.qid));
    if (spec.init_argv.empty()) throw BackendError("no init to start in " + spec.name);
    if (!fs::is_directory(spec.root))
        throw BackendError("root of " + spec.name + " is not a folder: " + spec.root.string());

    auto q = std::make_shared<Qube>();
    q->name = spec.name;
    q->qid = spec.qid;
    q->starting = true;
    q->runtime_dir = spec.runtime_dir.empty() ? opt_.runtime_base / spec.name : spec.runtime_dir;
    for (;;) {
        std::shared_ptr<Qube> old;
        {
            std::lock_guard lock(mu_);
            auto it = qubes_.find(spec.name);
            if (it != qubes_.end()) {
                old = it->second;
            } else if (auto rec = load_record(opt_.runtime_base / spec.name)) {
                old = rec;
                qubes_[spec.name] = rec;
            } else {
                for (const auto& [name, other] : qubes_)
                    if (other->qid == spec.qid && !other->ended)
                        throw BackendError("qid " + std::to_string(spec.qid) + " is in use by " + name);
                qubes_[spec.name] = q;
                break;
            }
        }
        std::lock_guard lock(old->mu);
        if (old->starting) throw BackendError(spec.name + " is being started");
        if (!reap(*old, 0ms)) throw BackendError(spec.name + " is already running");
        kill_locked(*old);
        cleanup_locked(*old);
    }

    std::lock_guard qlock(q->mu);
    auto forget = [&] {
        std::lock_guard lock(mu_);
        auto it = qubes_.find(spec.name);
        if (it != qubes_.end() && it->second == q) qubes_.erase(it);
    };
    StartTimings t;
    try {
        std::error_code ec;
        fs::create_directories(opt_.runtime_base);
        fs::create_directories(q->runtime_dir);
        ::chmod(q->runtime_dir.c_str(), 0700);
        fs::path link = opt_.runtime_base / spec.name;
        if (fs::absolute(q->runtime_dir).lexically_normal() != fs::absolute(link).lexically_normal()) {
            fs::remove(link, ec);
            fs::create_directory_symlink(fs::absolute(q->runtime_dir), link);
            q->link = link;
        }

        auto tc = Clock::now();
        CgroupLimits limits;
        limits.memory_bytes = spec.memory_mib << 20;
        limits.maxmem_bytes = spec.maxmem_mib << 20;
        limits.vcpus = spec.vcpus;
        limits.pids_max = budget_.qube_pids_max;
        {
            std::lock_guard lock(cgroup_mutex());
            q->cg = QubeCgroup::create(layout_, opt_.cgroup_group, spec.name, limits, budget_);
        }
        // A record before the clone: if the daemon dies in between, the next
        // one finds the cgroup (and whatever got into it) and cleans up.
        q->save();
        t.cgroups = since(tc);

        base::UniqueFd own_console;
        if (spec.console_fd < 0) own_console = open_console(spec, q->runtime_dir);

        LaunchRequest req;
        req.root = spec.root;
        req.root_read_only = spec.root_read_only;
        req.mounts = spec.mounts;
        req.hostname = spec.hostname.empty() ? spec.name : spec.hostname;
        req.argv = spec.init_argv;
        bool has_path = false;
        for (const auto& [k, v] : spec.env) {
            req.env.push_back(k + "=" + v);
            has_path = has_path || k == "PATH";
        }
        if (!has_path) req.env.push_back("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
        req.id_base = qube_uid_base(spec.qid);
        req.id_count = kQubeIdsPerQube;
        req.console_fd = spec.console_fd >= 0 ? spec.console_fd : own_console.get();
        req.seccomp = &seccomp_;
        req.caps = &caps_;
        req.attach = [&](pid_t pid) { q->cg.join(pid); };
        Launched l = launch(req);
        t.prepare = l.prepare;
        t.setup = l.setup;

        q->pid = l.pid;
        q->pidfd = std::move(l.pidfd);
        q->our_child = true;
        auto st = read_proc_stat(l.pid);
        q->start_time = st ? st->start_time : 0;
        q->starting = false;
        q->save();
    } catch (...) {
        q->starting = false;
        if (q->pid > 0) {
            ::kill(q->pid, SIGKILL);
            reap(*q, 5000ms);
        }
        q->ended = true;
        try {
            kill_locked(*q);
            cleanup_locked(*q);
        } catch (...) {
        }
        forget();
        try {
            throw;
        } catch (const BackendError&) {
            throw;
        } catch (const std::exception& e) {  // e.g. std::filesystem errors
            throw BackendError("starting " + spec.name + ": " + e.what());
        }
    }
    t.total = since(t0);
    {
        std::lock_guard lock(mu_);
        timings_ = t;
    }
    return RunningQube{spec.name, q->pid};
}

void NsBackend::kill_locked(Qube& q) {
    if (!q.ended && q.pidfd) sys_pidfd_send_signal(q.pidfd.get(), SIGKILL);
    if (q.cg.empty()) {
        reap(q, kKillWait);
        return;
    }
    q.cg.kill_all();
    if (!reap(q, kKillWait)) throw BackendError("PID 1 of " + q.name + " did not die");
    // PID 1's end kills the rest of its PID namespace; wait until the cgroup
    // is empty (and kill whatever still shows up in it).
    auto deadline = Clock::now() + kKillWait;
    for (int round = 0;; ++round) {
        if (q.cg.procs().empty()) return;
        if (Clock::now() > deadline) throw BackendError("processes of " + q.name + " survive SIGKILL");
        if (round % 50 == 49) q.cg.kill_all();
        std::this_thread::sleep_for(200us);
    }
}

void NsBackend::cleanup_locked(Qube& q) {
    if (!q.cg.empty()) {
        std::lock_guard lock(cgroup_mutex());
        if (!q.cg.remove(2000ms)) throw BackendError("the cgroups of " + q.name + " stay busy");
    }
    q.pidfd.reset();
    std::error_code ec;
    fs::remove_all(q.runtime_dir, ec);
    if (!q.link.empty()) fs::remove(q.link, ec);
    std::lock_guard lock(mu_);
    auto it = qubes_.find(q.name);
    if (it != qubes_.end() && it->second.get() == &q) qubes_.erase(it);
}

void NsBackend::shutdown(const std::string& name, std::chrono::milliseconds timeout) {
    auto q = find(name);
    if (!q) throw BackendError(name + " is not running");
    std::lock_guard lock(q->mu);
    if (!reap(*q, 0ms)) {
        // A frozen PID 1 cannot handle its SIGTERM.
        if (q->cg.can_freeze() && q->cg.frozen()) q->cg.freeze(false, 5000ms);
        sys_pidfd_send_signal(q->pidfd.get(), SIGTERM);
        reap(*q, timeout);
    }
    kill_locked(*q);
    cleanup_locked(*q);
}

void NsBackend::kill(const std::string& name) {
    auto q = find(name);
    if (!q) throw BackendError(name + " is not running");
    std::lock_guard lock(q->mu);
    kill_locked(*q);
    cleanup_locked(*q);
}

void NsBackend::pause(const std::string& name) {
    auto q = find(name);
    if (!q) throw BackendError(name + " is not running");
    std::lock_guard lock(q->mu);
    if (reap(*q, 0ms)) throw BackendError(name + " is not running");
    q->cg.freeze(true, 5000ms);
}

void NsBackend::unpause(const std::string& name) {
    auto q = find(name);
    if (!q) throw BackendError(name + " is not running");
    std::lock_guard lock(q->mu);
    if (reap(*q, 0ms)) throw BackendError(name + " is not running");
    q->cg.freeze(false, 5000ms);
}

PowerState NsBackend::state(const std::string& name) {
    auto q = find(name);
    if (!q) return PowerState::Halted;
    std::lock_guard lock(q->mu);
    if (q->starting) return PowerState::Running;
    if (!reap(*q, 0ms))
        return q->cg.can_freeze() && q->cg.frozen() ? PowerState::Paused : PowerState::Running;
    return q->status && *q->status != 0 ? PowerState::Crashed : PowerState::Halted;
}

QubeStats NsBackend::stats(const std::string& name) {
    auto q = find(name);
    if (!q) throw BackendError(name + " is not running");
    std::lock_guard lock(q->mu);
    QubeStats s;
    s.memory_bytes = q->cg.memory_bytes();
    s.cpu_usec = q->cg.cpu_usec();
    s.processes = q->cg.process_count();
    return s;
}

std::vector<RunningQube> NsBackend::adopt() {
    std::vector<std::shared_ptr<Qube>> dead;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(opt_.runtime_base, ec)) {
        std::string name = entry.path().filename().string();
        if (!valid_qube_name(name) || !fs::exists(entry.path() / kRecord, ec)) continue;
        std::lock_guard lock(mu_);
        if (qubes_.count(name)) continue;
        auto q = load_record(entry.path());
        if (!q || q->name != name) continue;
        qubes_[name] = q;
        if (q->ended) dead.push_back(q);
    }
    for (const auto& q : dead) {
        std::lock_guard lock(q->mu);
        try {
            kill_locked(*q);
            cleanup_locked(*q);
        } catch (const BackendError&) {
            // Left in the table: a later cleanup() may succeed.
        }
    }
    std::vector<RunningQube> out;
    std::lock_guard lock(mu_);
    for (const auto& [name, q] : qubes_)
        if (!q->ended && !q->starting) out.push_back(RunningQube{name, q->pid});
    return out;
}

void NsBackend::cleanup(const std::string& name) {
    auto q = find(name);
    if (!q) {
        std::lock_guard lock(mu_);
        q = load_record(opt_.runtime_base / name);
        if (!q) return;
        if (!qubes_.count(name)) qubes_[name] = q;
        q = qubes_[name];
    }
    std::lock_guard lock(q->mu);
    if (!reap(*q, 0ms)) throw BackendError(name + " is still running");
    kill_locked(*q);
    cleanup_locked(*q);
}

int NsBackend::exit_fd(const std::string& name) {
    auto q = find(name);
    return q ? q->pidfd.get() : -1;
}

std::optional<int> NsBackend::exit_status(const std::string& name) {
    auto q = find(name);
    if (!q) return std::nullopt;
    std::lock_guard lock(q->mu);
    reap(*q, 0ms);
    return q->status;
}

StartTimings NsBackend::last_start_timings() const {
    std::lock_guard lock(mu_);
    return timings_;
}

std::map<std::string, fs::path> NsBackend::cgroup_dirs(const std::string& name) {
    auto q = find(name);
    if (!q) return {};
    std::lock_guard lock(q->mu);
    return q->cg.dirs();
}

}  // namespace aerie::backend::ns
