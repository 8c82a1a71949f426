// Qubes that run: starting one prepares its volumes (storage), makes its
// compartment (a backend), starts its qrexec daemon on the host and waits
// until the qube's agent has said hello; stopping undoes all of it. Power
// states and the domain-* events follow Qubes. Everything runs on the admin
// daemon's event loop except the storage work of a start or stop (on
// StorageWorker threads, per qube in order) and a shutdown's waiting.
#pragma once

#include <asio.hpp>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "admin/api_error.hpp"
#include "admin/model.hpp"
#include "admin/qubesdb.hpp"
#include "admin/server.hpp"
#include "admin/log_drains.hpp"
#include "admin/storage_worker.hpp"
#include "backend/backend.hpp"
#include "storage/host_template.hpp"
#include "storage/pool.hpp"

namespace aerie::admin {

struct LifecycleConfig {
    std::filesystem::path runtime_dir;        // per-qube runtime folders (vchan sockets, records, logs)
    std::filesystem::path bin_dir;            // Aerie's binaries, shown inside qubes at /run/aerie/bin
    std::filesystem::path qrexec_socket_dir;  // qrexec.<name> sockets of the qrexec daemons
    std::string policy_socket;                // for the qrexec daemons
    std::filesystem::path log_dir;            // consoles and qrexec daemon logs; they outlive a run
    std::string internal_socket;              // ours, for the qrexec daemons' autostarts
    std::string admin_socket;                 // ours, for the qrexec daemons' disposables
    uint64_t log_max_bytes = 1u << 20;        // cap of each log in log_dir (one rotated copy besides)
};

class Lifecycle {
public:
    // nullopt: success; else the error to answer with.
    using Done = std::function<void(std::optional<ApiError>)>;

    Lifecycle(asio::io_context& io, Model& model, EventHub& events, backend::Backend& backend,
              storage::FilePool& pool, LifecycleConfig config);
    ~Lifecycle();

    void start(Qube& qube, Done done);
    // The threads of the pool's work, per qube in order (other long volume
    // work joins the queue of its qube's starts and stops).
    StorageWorker& storage_worker() { return storage_; }
    // wait: answer once halted; force: kill after shutdown_timeout.
    void shutdown(Qube& qube, bool wait, bool force, Done done);
    void kill(Qube& qube, Done done);
    void pause(Qube& qube);
    void unpause(Qube& qube);
    // Zero for a qube that does not run.
    backend::QubeStats stats(const Qube& qube);

    // At daemon start: qubes still running are adopted, leftovers cleaned.
    void adopt();

    // Deletes the logs of a removed qube (its console, qrexec daemon, air serve; rotated copies too).
    void remove_logs(const std::string& name);
    // The host uid the qube's root maps to (its private volume's owner).
    static uid_t owner_uid(const Qube& qube);

    // The QubesDB of a qube that runs (or is starting), else nullopt.
    std::optional<QubesDb> qubesdb(const std::string& name) const;
    // Called at every start, with the qube's fresh QubesDB, before the qube
    // runs: what it must find there from its first moment. Each part of the
    // daemon that needs it adds its own hook (relays, the Air uplink).
    std::vector<std::function<void(const Qube&, const QubesDb&)>> on_launch;
    // Start, shutdown and kill of a RemoteVM: Qubes' errors, unless this hook
    // takes the call (returns true, having taken `done`): a paired RemoteVM's
    // lifecycle is the remote qube's (src/air/remote_admin.*). `method` is
    // the Admin API call with its argument ("admin.vm.Shutdown+force").
    std::function<bool(Qube&, const std::string& method, Done& done)> remote_lifecycle;

private:
    struct Running;
    void launch(Qube& qube, const storage::StartedVolumes& volumes);
    void wait_ready(const std::string& name, std::chrono::steady_clock::time_point deadline);
    void watch_exit(const std::string& name);
    void arm_exit_watch(const std::string& name, Running& running);
    // `after` (if any) is called once the qube is Halted (its volumes released).
    void finish_stop(const std::string& name, bool crashed, Done after = {});
    // The part of a stop after the volumes' (runtime files, Halted, waiters).
    void complete_stop(const std::string& name, bool crashed, std::vector<Done> waiters);
    void spawn_qrexec_daemon(const Qube& qube, Running& running);
    // A qube's qrexec daemon exits only when its agent is gone for good (or
    // it was killed): the qube is then stopped, never left "Running" with no
    // way in.
    void watch_qrexec_daemon(const std::string& name, Running& running);
    void qrexec_daemon_exited(const std::string& name, pid_t pid);
    void qrexec_daemon_gone(const std::string& name);
    void kill_orphan_qrexec_daemon(const std::string& name);
    void publish(const Qube& qube, const std::string& event,
                 std::vector<std::pair<std::string, std::string>> kwargs = {});
    std::filesystem::path qube_runtime(const std::string& name) const { return config_.runtime_dir / name; }
    // <log dir>/<name>.<kind>.log (kind: console, qrexec-daemon).
    std::filesystem::path qube_log(const std::string& name, const std::string& kind) const {
        return config_.log_dir / qube_log_name(name, kind);
    }
    static std::string qube_log_name(const std::string& name, const std::string& kind) {
        return name + "." + kind + ".log";
    }

    asio::io_context& io_;
    Model& model_;
    EventHub& events_;
    backend::Backend& backend_;
    storage::FilePool& pool_;
    LifecycleConfig config_;
    std::map<std::string, std::unique_ptr<Running>> running_;
    LogDrains logs_;  // the consoles' and qrexec daemons' log pipes
    // Declared last, so destroyed first: it waits for queued storage work.
    StorageWorker storage_;
};

}  // namespace aerie::admin
