#include "admin/lifecycle.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <iterator>

#include "admin/qube_logs.hpp"
#include "admin/qube_mounts.hpp"
#include "admin/reaper.hpp"
#include "qrexec/service_config.hpp"

extern char** environ;  // passed on to the qrexec daemons

namespace aerie::admin {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

struct Lifecycle::Running {
    explicit Running(asio::io_context& io) : exit_watch(io), daemon_watch(io), ready_timer(io), kill_timer(io) {}
    pid_t init_pid = 0;
    pid_t daemon_pid = 0;
    asio::posix::stream_descriptor exit_watch;    // a pidfd of PID 1: readable when it exits
    asio::posix::stream_descriptor daemon_watch;  // a pidfd of the qrexec daemon
    asio::steady_timer ready_timer;
    asio::steady_timer kill_timer;
    bool stopping = false;
    Done starting;                // the start's caller, until the agent said hello
    std::vector<Done> on_halted;  // shutdown --wait callers
    uint64_t console_log = 0;     // its pipe in the log service: all in the file once drained
    uint64_t daemon_log = 0;      // the same for the qrexec daemon's output (its last line after it)
};

namespace {

// The runtime folders that are small tmpfs mounts of their own (qube_mounts.hpp).
constexpr const char* kQubeFolders[] = {"vchan", "qubesdb", "air"};

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

bool alive(pid_t pid) { return pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM); }

void write_text(const fs::path& path, const std::string& text) {
    std::ofstream out(path, std::ios::trunc);
    out << text;
}

pid_t read_pid(const fs::path& path) {
    std::ifstream in(path);
    pid_t pid = 0;
    in >> pid;
    return pid;
}

// The end of a log, on one line, for an error message.
std::string last_lines(const fs::path& path, size_t count) {
    std::ifstream in(path);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);)
        if (!line.empty()) lines.push_back(line);
    std::string out;
    for (size_t i = lines.size() > count ? lines.size() - count : 0; i < lines.size(); ++i)
        out += (out.empty() ? "" : " / ") + lines[i];
    return out;
}

long long mib_of(const Model& model, const Qube& qube, const char* property) {
    auto n = parse_int(model.value_text(&qube, property));
    return n && *n > 0 ? *n : 0;
}

ApiError not_running(const Qube& qube) {
    return qubes_error("QubesVMNotRunningError",
                       "Domain not running (either powered off or paused): '" + qube.name + "'");
}

}  // namespace

Lifecycle::Lifecycle(asio::io_context& io, Model& model, EventHub& events, backend::Backend& backend,
                     storage::FilePool& pool, LifecycleConfig config)
    : io_(io), model_(model), events_(events), backend_(backend), pool_(pool), config_(std::move(config)),
      logs_(io, config_.bin_dir / "aerie-logd", config_.log_dir), storage_(io) {
    fs::create_directories(config_.runtime_dir);
    fs::create_directories(config_.log_dir);
    fs::create_directories(config_.qrexec_socket_dir);
}

Lifecycle::~Lifecycle() = default;

// Must match the ns backend's user namespace mapping (backend.hpp).
uid_t Lifecycle::owner_uid(const Qube& qube) { return 0x10000000u + static_cast<uid_t>(qube.qid) * 65536u; }

void Lifecycle::publish(const Qube& qube, const std::string& event,
                        std::vector<std::pair<std::string, std::string>> kwargs) {
    events_.publish(qube.name, event, kwargs);
}

void Lifecycle::start(Qube& qube, Done done) {
    if (qube.is_remote() && remote_lifecycle && remote_lifecycle(qube, "admin.vm.Start", done)) return;
    if (qube.is_admin() || qube.is_remote())
        return done(qubes_error("QubesException", qube.klass + " '" + qube.name + "' cannot be started"));
    if (!qube.is_halted()) return done(std::nullopt);  // as Qubes: starting a running qube is no error
    if (qube.qid > 0x7fff)
        return done(qubes_error("QubesException", "qid " + std::to_string(qube.qid) + " is too large to run"));
    if (qube.has_template()) {
        const Qube* tpl = model_.find(model_.value_text(&qube, "template"));
        if (!tpl) return done(qubes_error("QubesNoTemplateError", "Template for the domain '" + qube.name + "' not found"));
    }
    // As qubesd's admin.vm.Start: start(start_guid=True, mem_required=None).
    publish(qube, "domain-pre-start", {{"start_guid", "True"}, {"mem_required", "None"}});
    qube.power_state = "Transient";
    // A failed start is announced (domain-start-failed) before its answer,
    // and before the domain-stopped of a qube that had spawned.
    auto announced = std::make_shared<bool>(false);
    done = [this, name = qube.name, announced, done = std::move(done)](std::optional<ApiError> error) {
        if (error && !*announced)
            if (const Qube* failed = model_.find(name))
                publish(*failed, "domain-start-failed", {{"reason", error->what()}});
        done(std::move(error));
    };
    // The volumes are made ready on a storage thread (a start may wait for
    // the revision its last stop keeps, mount images, make fresh layers):
    // meanwhile the loop answers everyone else.
    const std::string name = qube.name, uuid = qube.uuid, klass = qube.klass;
    const std::vector<std::string> chain = model_.template_chain(qube);
    const uid_t owner = owner_uid(qube);
    auto volumes = std::make_shared<storage::StartedVolumes>();
    storage_.run(
        uuid,
        [this, volumes, uuid, klass, chain, owner] { *volumes = pool_.start(uuid, klass, chain, owner); },
        [this, name, volumes, announced, done = std::move(done)](std::exception_ptr error) mutable {
            Qube* found = model_.find(name);
            std::string failed;
            try {
                if (error) std::rethrow_exception(error);
                if (!found) throw std::runtime_error("the qube was removed while starting");
                launch(*found, *volumes);
            } catch (const std::exception& e) {
                failed = e.what();
            }
            if (!failed.empty()) {
                // Answered once the qube is Halted again, as qubesd does.
                auto error_reply = qubes_error("QubesException", "Start failed: " + failed);
                if (Qube* announcing = model_.find(name))
                    publish(*announcing, "domain-start-failed", {{"reason", error_reply.what()}});
                *announced = true;
                return finish_stop(name, false, [done = std::move(done), error_reply](std::optional<ApiError>) {
                    done(error_reply);
                });
            }
            auto timeout = std::chrono::seconds(std::max<long long>(1, mib_of(model_, *found, "qrexec_timeout")));
            running_.at(name)->starting = std::move(done);
            wait_ready(name, std::chrono::steady_clock::now() + timeout);
        });
}

// Compartment and qrexec daemon on the started volumes; the agent's hello
// comes later.
void Lifecycle::launch(Qube& qube, const storage::StartedVolumes& volumes) {
    fs::path runtime = qube_runtime(qube.name);
    for (const char* folder : kQubeFolders) unmount_qube_folder(runtime / folder);  // left by a daemon killed meanwhile
    fs::remove_all(runtime);
    fs::create_directories(runtime / "vchan");
    mount_qube_folder(runtime / "vchan", owner_uid(qube));
    // The qube's agent listens there as the qube's root.
    if (::chown((runtime / "vchan").c_str(), owner_uid(qube), owner_uid(qube)) != 0)
        throw std::runtime_error("chown " + (runtime / "vchan").string() + ": " + std::strerror(errno));
    ::chmod((runtime / "vchan").c_str(), 0700);
    // QubesDB, and Qubes Air's folder where the host's uplink socket for a
    // relay appears (docs/air.md): small tmpfs folders of the host's, which
    // the qube sees read-only and whose mount root shows "/" inside. Bound
    // plain, not through an overlay: the host changes them while the qube
    // runs, and a socket in an overlay's lower layer cannot be connected to.
    QubesDb db(runtime / "qubesdb");
    for (const fs::path& dir : {db.dir(), runtime / "air"}) {
        fs::create_directories(dir);
        mount_qube_folder(dir, 0, 0755);
    }
    for (const auto& hook : on_launch) hook(qube, db);

    backend::QubeSpec spec;
    spec.name = qube.name;
    spec.uuid = qube.uuid;
    spec.qid = qube.qid;
    spec.root = volumes.root;
    if (volumes.host_usr)
        for (auto& mount : storage::host_template_mounts()) spec.mounts.push_back(mount);
    // What the qube can write is mounted from descriptors opened beneath
    // trusted parents (qube_mounts.hpp); Aerie's binaries are a host path.
    for (auto& mount : private_volume_mounts(qube.name, volumes.private_dir, owner_uid(qube)))
        spec.mounts.push_back(std::move(mount));
    spec.mounts.push_back({config_.bin_dir, "/run/aerie/bin", true});
    spec.mounts.push_back(runtime_folder_mount(runtime, "vchan", "/run/qubes-vchan", false));
    for (auto [folder, target] : {std::pair{"qubesdb", kQubesDbMountPoint}, std::pair{"air", "/run/aerie-air"}}) {
        backend::BindMount shown = runtime_folder_mount(runtime, folder, target, true);
        shown.plain = true;
        spec.mounts.push_back(std::move(shown));
    }
    spec.memory_mib = static_cast<uint64_t>(mib_of(model_, qube, "memory"));
    spec.maxmem_mib = static_cast<uint64_t>(std::max(mib_of(model_, qube, "maxmem"), mib_of(model_, qube, "memory")));
    spec.vcpus = static_cast<int>(std::max<long long>(1, mib_of(model_, qube, "vcpus")));
    spec.hostname = qube.name;
    spec.init_argv = {"/run/aerie/bin/aerie-qube-init", "/run/aerie/bin/qrexec-agent"};
    spec.env = {
        {"PATH", "/run/aerie/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
        {"VCHAN_SOCKET_DIR", "/run/qubes-vchan"},
        {"VCHAN_DOMAIN", std::to_string(qube.qid)},
        {"HOME", "/root"},
        {"QUBES_NAME", qube.name},
        // The services Aerie ships (src/services, qubesair.*) and their
        // rpc-config come last: a qube's own win.
        {"QREXEC_SERVICE_PATH", std::string(qrexec::kDefaultServicePath) + ":/run/aerie/bin/qubes-rpc"},
        {"QUBES_RPC_CONFIG_PATH", std::string(qrexec::kDefaultRpcConfigPath) + ":/run/aerie/bin/rpc-config"},
    };
    // A pipe: the qube never holds the log file (docs/security.md, "Logs").
    LogDrains::Pipe console = logs_.open(qube_log_name(qube.name, "console"), console_log_cap(config_.log_max_bytes));
    spec.console_fd = console.input.get();

    auto running = std::make_unique<Running>(io_);
    running->console_log = console.id;
    // The daemon first: it loads while the qube is made, and is woken when
    // the agent's socket appears.
    spawn_qrexec_daemon(qube, *running);
    publish(qube, "domain-pre-spawn", {{"start_guid", "True"}});
    backend::RunningQube started;
    try {
        started = backend_.start(spec);
    } catch (...) {
        ::kill(running->daemon_pid, SIGKILL);
        throw;
    }
    running->init_pid = started.init_pid;
    write_text(runtime / "init.pid", std::to_string(started.init_pid));
    running_[qube.name] = std::move(running);
    watch_exit(qube.name);
    // What qubesd fires once libvirt made the domain (paused) and it resumes it.
    for (const char* property : {"xid", "stubdom_xid", "start_time"})
        publish(qube, std::string("property-reset:") + property, {{"name", property}});
    publish(qube, "domain-spawn", {{"start_guid", "True"}});
    publish(qube, "domain-pre-unpaused");
    publish(qube, "domain-unpaused");
}

// Only the qrexec daemon we started for this qube: the pid file could name a
// reused pid, so its command line must show the qube's name.
void Lifecycle::kill_orphan_qrexec_daemon(const std::string& name) {
    pid_t pid = read_pid(qube_runtime(name) / "qrexec-daemon.pid");
    if (pid <= 0) return;
    std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::vector<std::string> args;
    for (size_t start = 0; start < cmdline.size();) {
        size_t end = cmdline.find('\0', start);
        if (end == std::string::npos) end = cmdline.size();
        args.push_back(cmdline.substr(start, end - start));
        start = end + 1;
    }
    bool ours = !args.empty() && args[0].size() >= 13 &&
                args[0].compare(args[0].size() - 13, 13, "qrexec-daemon") == 0 &&
                std::find(args.begin(), args.end(), name) != args.end();
    if (ours) ::kill(pid, SIGKILL);
}

void Lifecycle::spawn_qrexec_daemon(const Qube& qube, Running& running) {
    fs::path runtime = qube_runtime(qube.name);
    std::string program = (config_.bin_dir / "qrexec-daemon").string();
    std::vector<std::string> args = {program,
                                     "--direct",
                                     "--socket-dir=" + config_.qrexec_socket_dir.string(),
                                     "--policy-socket=" + config_.policy_socket,
                                     "--uuid=" + qube.uuid,
                                     std::to_string(qube.qid),
                                     qube.name,
                                     model_.value_text(&qube, "default_user")};
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
        std::string_view var(*e);
        if (var.rfind("VCHAN_", 0) != 0 && var.rfind("QREXEC_STARTUP_TIMEOUT=", 0) != 0 &&
            var.rfind("QUBESD_INTERNAL_SOCKET=", 0) != 0 && var.rfind("QUBESD_SOCKET=", 0) != 0)
            env.emplace_back(var);
    }
    env.push_back("VCHAN_SOCKET_DIR=" + (runtime / "vchan").string());
    env.push_back("QREXEC_STARTUP_TIMEOUT=" + model_.value_text(&qube, "qrexec_timeout"));
    if (!config_.internal_socket.empty()) env.push_back("QUBESD_INTERNAL_SOCKET=" + config_.internal_socket);
    if (!config_.admin_socket.empty()) env.push_back("QUBESD_SOCKET=" + config_.admin_socket);

    // Its stdout and stderr (and its children's) go to the log service.
    LogDrains::Pipe log = logs_.open(qube_log_name(qube.name, "qrexec-daemon"), {config_.log_max_bytes});
    // Its own session: a restart of the admin daemon does not take it down.
    base::DetachedChild daemon = base::spawn_detached(args, env, log.input.get());
    const pid_t pid = daemon.pid;
    reap_when_ended(io_, std::move(daemon));
    running.daemon_pid = pid;
    running.daemon_log = log.id;
    write_text(runtime / "qrexec-daemon.pid", std::to_string(pid));
    watch_qrexec_daemon(qube.name, running);
}

void Lifecycle::watch_qrexec_daemon(const std::string& name, Running& running) {
    asio::error_code ignored;
    running.daemon_watch.close(ignored);
    pid_t pid = running.daemon_pid;
    int fd = pid > 0 ? pidfd_open(pid) : -1;
    if (fd < 0) {
        asio::post(io_, [this, name, pid] { qrexec_daemon_exited(name, pid); });
        return;
    }
    running.daemon_watch.assign(fd);
    running.daemon_watch.async_wait(asio::posix::stream_descriptor::wait_read,
                                    [this, name, pid](const asio::error_code& ec) {
                                        if (ec != asio::error::operation_aborted) qrexec_daemon_exited(name, pid);
                                    });
}

// The daemon gave up on the agent (qrexec_timeout passed without it), or was
// killed: no caller could reach the qube any more, so it is stopped (the
// daemon's log says it crashed); during a start, the start fails.
void Lifecycle::qrexec_daemon_exited(const std::string& name, pid_t pid) {
    auto it = running_.find(name);
    if (it == running_.end() || it->second->daemon_pid != pid || it->second->stopping) return;
    Running& running = *it->second;
    running.daemon_pid = 0;
    // Its last line is in its log once the log service copied it (at most 2 s).
    logs_.when_drained(running.daemon_log, 2s, [this, name] { qrexec_daemon_gone(name); });
}

void Lifecycle::qrexec_daemon_gone(const std::string& name) {
    auto it = running_.find(name);
    if (it == running_.end() || it->second->stopping) return;
    Running& running = *it->second;
    fs::path log = qube_log(name, "qrexec-daemon");
    std::string tail = last_lines(log, 1);
    std::fprintf(stderr, "aeried: the qrexec daemon of %s exited (%s): stopping the qube\n", name.c_str(),
                 tail.c_str());
    Done starting = std::move(running.starting);
    running.starting = nullptr;
    if (starting) running.stopping = true;
    try {
        backend_.kill(name);
    } catch (const std::exception&) {
    }
    if (!starting) return;
    const Qube* qube = model_.find(name);
    long long seconds = qube ? mib_of(model_, *qube, "qrexec_timeout") : 0;
    if (tail.find("cannot connect to qrexec agent for") != std::string::npos)
        return starting(qubes_error("QubesException",
                                    fmt::format("Cannot connect to qrexec agent for {} seconds, see {} for details",
                                                seconds, qube_log(name, "console").string())));
    starting(qubes_error("QubesException", "Start failed: the qrexec daemon of '" + name + "' exited: " + tail));
}

// The qrexec daemon makes its qrexec.<name> and qrexec.uuid:<uuid> links once
// the agent said hello.
void Lifecycle::wait_ready(const std::string& name, std::chrono::steady_clock::time_point deadline) {
    auto it = running_.find(name);
    if (it == running_.end() || !it->second->starting) return;
    Running& running = *it->second;
    std::error_code ec;
    // The daemon links qrexec.uuid:UUID last (after qrexec.NAME): both are there.
    const Qube* starting = model_.find(name);
    std::string link = starting ? "qrexec.uuid:" + starting->uuid : "qrexec." + name;
    if (fs::exists(config_.qrexec_socket_dir / link, ec)) {
        Qube* qube = model_.find(name);
        if (qube) {
            qube->power_state = "Running";
            publish(*qube, "domain-start", {{"start_guid", "True"}});
        }
        Done done = std::move(running.starting);
        running.starting = nullptr;
        return done(std::nullopt);
    }
    if (std::chrono::steady_clock::now() >= deadline) {
        Qube* qube = model_.find(name);
        long long seconds = qube ? mib_of(model_, *qube, "qrexec_timeout") : 0;
        Done done = std::move(running.starting);
        running.starting = nullptr;
        running.stopping = true;
        try {
            backend_.kill(name);
        } catch (const std::exception&) {
        }
        return done(qubes_error("QubesException",
                                fmt::format("Cannot connect to qrexec agent for {} seconds, see {} for details",
                                            seconds, qube_log(name, "console").string())));
    }
    running.ready_timer.expires_after(1ms);
    running.ready_timer.async_wait([this, name, deadline](const asio::error_code& e) {
        if (e != asio::error::operation_aborted) wait_ready(name, deadline);
    });
}

void Lifecycle::watch_exit(const std::string& name) {
    Running& running = *running_.at(name);
    // The backend's own exit descriptor when it has one (it is PID 1's
    // parent and reaps it); a pidfd otherwise (an adopted qube).
    int owned = backend_.exit_fd(name);
    int fd = owned >= 0 ? ::fcntl(owned, F_DUPFD_CLOEXEC, 0) : pidfd_open(running.init_pid);
    if (fd < 0) {
        // Already gone.
        asio::post(io_, [this, name] { finish_stop(name, true); });
        return;
    }
    running.exit_watch.assign(fd);
    arm_exit_watch(name, running);
}

// PID 1 is over only when its pidfd says so: a wake-up that is not its exit
// (an error of the wait) is logged and the watch goes on, so a live qube is
// never taken for halted.
void Lifecycle::arm_exit_watch(const std::string& name, Running& running) {
    running.exit_watch.async_wait(
        asio::posix::stream_descriptor::wait_read, [this, name](const asio::error_code& ec) {
            if (ec == asio::error::operation_aborted) return;
            auto it = running_.find(name);
            if (it == running_.end()) return;
            Running& r = *it->second;
            pollfd p{r.exit_watch.native_handle(), POLLIN, 0};
            if (::poll(&p, 1, 0) != 1) {
                std::fprintf(stderr, "aeried: %s: its exit watch woke (%s) while PID 1 runs: watching on\n",
                             name.c_str(), ec ? ec.message().c_str() : "no error");
                return arm_exit_watch(name, r);
            }
            finish_stop(name, !r.stopping);
        });
}

// PID 1 is gone (or the start failed): take down what is left and report.
void Lifecycle::finish_stop(const std::string& name, bool crashed, Done after) {
    std::unique_ptr<Running> running;
    if (auto it = running_.find(name); it != running_.end()) {
        running = std::move(it->second);
        running_.erase(it);
    } else {
        // Found dead at a daemon start: its qrexec daemon may still wait for it.
        kill_orphan_qrexec_daemon(name);
    }
    std::vector<Done> waiters;
    if (running) {
        running->ready_timer.cancel();
        running->kill_timer.cancel();
        asio::error_code ec;
        running->exit_watch.close(ec);
        // The qube's agent is gone for good: its daemon would only wait for it.
        if (running->daemon_pid > 0) ::kill(running->daemon_pid, SIGKILL);
        waiters = std::move(running->on_halted);
        if (running->starting) {
            // PID 1 ended before the agent said hello: the start failed. Its
            // last words are in the console log once the log service copied them.
            auto starting = std::move(running->starting);
            const uint64_t console = running->console_log;
            waiters.push_back([this, starting, name, console](std::optional<ApiError>) {
                logs_.when_drained(console, 2s, [this, starting, name] {
                    std::string log = last_lines(qube_log(name, "console"), 5);
                    starting(qubes_error("QubesException", "Start failed: the qube '" + name +
                                                               "' stopped before its qrexec agent started" +
                                                               (log.empty() ? std::string() : ": " + log)));
                });
            });
        }
    }
    if (after) waiters.push_back(std::move(after));
    try {
        backend_.cleanup(name);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "aeried: cleanup of %s: %s\n", name.c_str(), e.what());
    }
    Qube* qube = model_.find(name);
    if (!qube) return complete_stop(name, crashed, std::move(waiters));
    if (!running) {
        // Found dead at a daemon start, before any request is served: its
        // volumes are released in line, so it is wholly Halted from the first
        // request on.
        try {
            pool_.stop(qube->uuid);
        } catch (const std::exception& e) {
            std::fprintf(stderr, "aeried: stopping the volumes of %s: %s\n", name.c_str(), e.what());
        }
        return complete_stop(name, crashed, std::move(waiters));
    }
    // The volumes are unmounted (and the revision queued) on a storage
    // thread; the qube is Halted once that is done.
    const std::string uuid = qube->uuid;
    storage_.run(
        uuid, [this, uuid] { pool_.stop(uuid); },
        [this, name, crashed, waiters = std::move(waiters)](std::exception_ptr error) mutable {
            if (error) {
                try {
                    std::rethrow_exception(error);
                } catch (const std::exception& e) {
                    std::fprintf(stderr, "aeried: stopping the volumes of %s: %s\n", name.c_str(), e.what());
                }
            }
            complete_stop(name, crashed, std::move(waiters));
        });
}

void Lifecycle::complete_stop(const std::string& name, bool crashed, std::vector<Done> waiters) {
    Qube* qube = model_.find(name);
    std::error_code ec;
    for (const char* folder : kQubeFolders) unmount_qube_folder(qube_runtime(name) / folder);
    fs::remove_all(qube_runtime(name), ec);
    for (const char* link : {"qrexec.", "qrexec.uuid:"}) {
        std::string suffix = std::string(link) == "qrexec." ? name : (qube ? qube->uuid : std::string());
        if (!suffix.empty()) fs::remove(config_.qrexec_socket_dir / (link + suffix), ec);
    }
    if (qube) fs::remove(config_.qrexec_socket_dir / ("qrexec." + std::to_string(qube->qid)), ec);
    if (qube && qube->power_state != "Halted") {
        qube->power_state = "Halted";
        // As qubesd: domain-stopped, whose handler resets the run's
        // properties, then domain-shutdown (a crash is only in the log).
        if (crashed) std::fprintf(stderr, "aeried: %s crashed\n", name.c_str());
        publish(*qube, "domain-stopped");
        for (const char* property : {"xid", "stubdom_xid", "start_time"})
            publish(*qube, std::string("property-reset:") + property, {{"name", property}});
        publish(*qube, "domain-shutdown");
    }
    for (auto& done : waiters) done(std::nullopt);
}

void Lifecycle::remove_logs(const std::string& name) { remove_qube_logs(config_.log_dir, name); }

void Lifecycle::shutdown(Qube& qube, bool wait, bool force, Done done) {
    std::string flags = force && wait ? "+force+wait" : force ? "+force" : wait ? "+wait" : "";
    if (qube.is_remote() && remote_lifecycle && remote_lifecycle(qube, "admin.vm.Shutdown" + flags, done)) return;
    auto it = running_.find(qube.name);
    if (qube.is_halted() || it == running_.end())
        return done(qubes_error("QubesVMNotStartedError", "Domain is powered off: '" + qube.name + "'"));
    Running& running = *it->second;
    publish(qube, "domain-pre-shutdown", {{"force", force ? "True" : "False"}});
    // As qubesd: a paused qube is shut down only by force (a preload aside).
    if (qube.power_state == "Paused" && !force && model_.value_text(&qube, "is_preload") != "True") {
        ApiError error = not_running(qube);
        publish(qube, "domain-shutdown-failed", {{"reason", error.what()}});
        return done(error);
    }
    running.stopping = true;
    if (qube.power_state == "Paused") backend_.unpause(qube.name);
    qube.power_state = "Halting";
    ::kill(running.init_pid, SIGTERM);
    // After shutdown_timeout the rest is killed (Qubes: force or not, a qube
    // that does not stop is not left half-stopped).
    auto timeout = std::chrono::seconds(std::max<long long>(1, mib_of(model_, qube, "shutdown_timeout")));
    std::string name = qube.name;
    running.kill_timer.expires_after(timeout);
    running.kill_timer.async_wait([this, name](const asio::error_code& ec) {
        if (ec) return;
        try {
            backend_.kill(name);
        } catch (const std::exception&) {
        }
    });
    if (wait)
        running.on_halted.push_back(std::move(done));
    else
        done(std::nullopt);
}

void Lifecycle::kill(Qube& qube, Done done) {
    if (qube.is_remote() && remote_lifecycle && remote_lifecycle(qube, "admin.vm.Kill", done)) return;
    auto it = running_.find(qube.name);
    if (qube.is_halted() || it == running_.end()) return done(not_running(qube));
    it->second->stopping = true;
    try {
        backend_.kill(qube.name);
    } catch (const std::exception& e) {
        return done(qubes_error("QubesException", std::string("Kill failed: ") + e.what()));
    }
    it->second->on_halted.push_back(std::move(done));
}

void Lifecycle::pause(Qube& qube) {
    if (qube.power_state != "Running") throw not_running(qube);
    publish(qube, "domain-pre-paused");
    backend_.pause(qube.name);
    qube.power_state = "Paused";
    publish(qube, "domain-paused");
}

void Lifecycle::unpause(Qube& qube) {
    if (qube.power_state != "Paused")
        throw qubes_error("QubesVMNotPausedError", "Domain is not paused: '" + qube.name + "'");
    publish(qube, "domain-pre-unpaused");
    backend_.unpause(qube.name);
    qube.power_state = "Running";
    publish(qube, "domain-unpaused");
}

std::optional<QubesDb> Lifecycle::qubesdb(const std::string& name) const {
    if (!running_.count(name)) return std::nullopt;
    return QubesDb(qube_runtime(name) / "qubesdb");
}

backend::QubeStats Lifecycle::stats(const Qube& qube) {
    if (!running_.count(qube.name)) return {};
    try {
        return backend_.stats(qube.name);
    } catch (const std::exception&) {
        return {};
    }
}

void Lifecycle::adopt() {
    std::vector<backend::RunningQube> found;
    try {
        found = backend_.adopt();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "aeried: looking for running qubes: %s\n", e.what());
    }
    for (const auto& r : found) {
        Qube* qube = model_.find(r.name);
        if (!qube || qube->is_admin() || qube->is_remote()) {
            // A qube the store does not know (removed meanwhile): stop it.
            try {
                backend_.kill(r.name);
                backend_.cleanup(r.name);
            } catch (const std::exception&) {
            }
            continue;
        }
        auto running = std::make_unique<Running>(io_);
        running->init_pid = r.init_pid;
        fs::path runtime = qube_runtime(r.name);
        pid_t daemon = read_pid(runtime / "qrexec-daemon.pid");
        running->daemon_pid = alive(daemon) ? daemon : 0;
        running_[r.name] = std::move(running);
        if (!running_[r.name]->daemon_pid)
            spawn_qrexec_daemon(*qube, *running_[r.name]);
        else
            watch_qrexec_daemon(r.name, *running_[r.name]);
        qube->power_state = backend_.state(r.name) == backend::PowerState::Paused ? "Paused" : "Running";
        watch_exit(r.name);
    }
    // Halted qubes keep nothing: leftovers of ones that died meanwhile go.
    for (const Qube* q : model_.qubes_by_name()) {
        if (running_.count(q->name) || q->is_admin() || q->is_remote()) continue;
        std::error_code ec;
        if (!fs::exists(qube_runtime(q->name), ec)) continue;
        finish_stop(q->name, false);
    }
}

}  // namespace aerie::admin
