// aeried: Aerie's admin daemon (the qubesd of Aerie). Keeps the qubes in its
// store, answers the Admin API on its socket and internal.* calls on the
// internal socket, and (with --rpc-dir) exposes the Admin API methods as
// dom0 qrexec services so that qubes reach them under policy.
#include <sys/stat.h>

#include <csignal>
#include <cstdlib>
#include <filesystem>

#include <algorithm>
#include <climits>
#include <unistd.h>

#include "admin/api.hpp"
#include "admin/disposables.hpp"
#include "admin/relays.hpp"
#include "admin/lifecycle.hpp"
#include "backend/host_budget.hpp"
#include "backend/ns/ns_backend.hpp"
#include "base/bounded_log.hpp"
#include "base/log_text.hpp"
#include "storage/pool.hpp"
#include "admin/model.hpp"
#include "admin/server.hpp"
#include "admin/store.hpp"
#include "air/host_uplink.hpp"
#include "air/remote_admin.hpp"
#include "cli_support.hpp"
#include "qrexec/service_config.hpp"

namespace fs = std::filesystem;
using namespace aerie::admin;

namespace {

// Lines often carry what a qube chose (names, reasons, peers' errors): one
// printable, bounded line each (the callers rate-limit per qube).
void log_line(const std::string& text) { fmt::print(stderr, "aeried: {}\n", aerie::base::log_safe(text, 1024)); }

struct Options {
    std::string state_dir = "/var/lib/aerie";
    std::string socket = "/var/run/qubesd.sock";
    std::string internal_socket = "/var/run/qubesd.internal.sock";
    std::string rpc_dir;
    std::string runtime_dir = "/run/aerie";
    std::string pool_dir;  // default <state-dir>/pool
    std::string qrexec_socket_dir = "/var/run/qubes";
    std::string policy_socket = "/run/qubes/policy.sock";
    std::vector<std::string> policy_dirs;  // empty: Qubes' /run/qubes/policy.d and /etc/qubes/policy.d
    std::string meminfo = "/proc/meminfo";
    std::string bin_dir;  // default: this program's folder
    std::string air_listen;  // ADDR:PORT where peer zones connect (Qubes Air)
    // The parent cgroup of all qubes; 0: from the host's size.
    uint64_t qubes_pids_max = 0;
    uint64_t qube_pids_max = 0;
    uint64_t qubes_memory_mib = 0;
    std::string log_file;    // empty: stderr
    uint64_t log_max_bytes = 8u << 20;
    uint64_t qube_log_max_bytes = 1u << 20;
};

std::string own_folder() {
    char self[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return ".";
    return fs::path(std::string(self, static_cast<size_t>(n))).parent_path().string();
}

// Volume folders of qubes the store does not know: a crash between making
// them and storing the qube, or between removing the record and them.
void remove_orphan_volumes(aerie::storage::FilePool& pool, const Model& model) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(pool.dir() / "vm", ec)) {
        std::string uuid = entry.path().filename().string();
        if (model.find("uuid:" + uuid)) continue;
        try {
            pool.remove(uuid);
            log_line("removed the volumes of an unknown qube " + uuid);
        } catch (const std::exception& e) {
            log_line("cannot remove the volumes of an unknown qube " + uuid + ": " + e.what());
        }
    }
}

// The admin qube must have a record before properties can be set on it.
void ensure_admin_vm_stored(Store& store, const StoredState& state) {
    for (const auto& qube : state.qubes)
        if (qube.klass == "AdminVM") return;
    Store::Transaction txn(store);
    txn.add_qube(StoredQube{std::string(kAdminVmUuid), 0, "dom0", "AdminVM", {}, {}, {}, {}});
    txn.commit();
}

// One symlink per method: a qrexec call of admin.X to dom0 connects to the
// socket, which receives qubesd's header "admin.X+ARG SOURCE name dom0\0".
// The imports, whose data does not pass through the socket, are a program
// (aerie-volume-import, called by the method's name).
void publish_rpc_services(const std::string& dir, const std::string& socket,
                          const std::vector<std::string>& methods, const fs::path& bin_dir) {
    fs::create_directories(dir);
    auto link = [&](const std::string& name, const fs::path& to) {
        std::error_code ec;
        fs::remove(fs::path(dir) / name, ec);
        fs::create_symlink(fs::absolute(to), fs::path(dir) / name);
    };
    for (const auto& method : methods) link(method, socket);
    for (const char* method : {"admin.vm.volume.Import", "admin.vm.volume.ImportWithSize"})
        link(method, bin_dir / "aerie-volume-import");
}

}  // namespace

int main(int argc, char** argv) {
    Options options;
    CLI::App app{"Aerie admin daemon", "aeried"};
    app.add_option("--state-dir", options.state_dir, "Folder of the persistent store")->capture_default_str();
    app.add_option("--socket", options.socket, "Admin API socket")->capture_default_str();
    app.add_option("--internal-socket", options.internal_socket, "Internal API socket")->capture_default_str();
    app.add_option("--rpc-dir", options.rpc_dir, "Publish admin.* as dom0 qrexec services here");
    app.add_option("--runtime-dir", options.runtime_dir, "Runtime folder of running qubes")->capture_default_str();
    app.add_option("--pool-dir", options.pool_dir, "Volume pool folder (default: STATE_DIR/pool)");
    app.add_option("--qrexec-socket-dir", options.qrexec_socket_dir, "Sockets of the qubes' qrexec daemons")
        ->capture_default_str();
    app.add_option("--policy-socket", options.policy_socket, "The qrexec policy daemon's socket")
        ->capture_default_str();
    app.add_option("--policy-dir", options.policy_dirs,
                   "qrexec policy folder that filters what management qubes list and hear in admin.vm.List and "
                   "admin.Events (repeatable; default: /run/qubes/policy.d and /etc/qubes/policy.d)")
        ->allow_extra_args(false);
    app.add_option("--qubes-pids-max", options.qubes_pids_max,
                   "Processes and threads of all qubes together (default: the host's limit less a reserve)");
    app.add_option("--qube-pids-max", options.qube_pids_max,
                   "Processes and threads of one qube (default: an eighth of --qubes-pids-max)");
    app.add_option("--qubes-memory-max", options.qubes_memory_mib,
                   "Memory of all qubes together, MiB (default: the host's memory less a reserve)");
    app.add_option("--meminfo", options.meminfo,
                   "Where free memory is read for preloading disposables (MemAvailable)")
        ->capture_default_str();
    app.add_option("--bin-dir", options.bin_dir, "Aerie's programs (default: this program's folder)");
    app.add_option("--air-listen", options.air_listen,
                   "Qubes Air: accept peer zones' connections on ADDR:PORT (IPv6: [ADDR]:PORT)");
    app.add_option("--log-file", options.log_file,
                   "Write the log to this file, capped (one rotated copy FILE.1), instead of stderr");
    app.add_option("--log-max-bytes", options.log_max_bytes, "Cap of the log file")->capture_default_str();
    app.add_option("--qube-log-max-bytes", options.qube_log_max_bytes,
                   "Cap of each qube's console and qrexec daemon log")
        ->capture_default_str();
    if (int rc = aerie::tools::parse_args(app, argc, argv); rc >= 0) return rc;
    if (!options.log_file.empty()) {
        try {
            aerie::base::redirect_output_to_log(options.log_file, {options.log_max_bytes});
        } catch (const std::exception& e) {
            log_line(e.what());
            return 1;
        }
    }

    std::signal(SIGPIPE, SIG_IGN);
    // The qrexec daemons (our children) find the published admin.* services
    // as dom0's, before the usual folders.
    if (!options.rpc_dir.empty() && !std::getenv("QREXEC_SERVICE_PATH"))
        ::setenv("QREXEC_SERVICE_PATH", (options.rpc_dir + ":" + aerie::qrexec::kDefaultServicePath).c_str(), 1);
    try {
        fs::create_directories(options.state_dir);
        ::chmod(options.state_dir.c_str(), 0700);
        fs::path db = fs::path(options.state_dir) / "qubes.db";
        Store store(db);
        // Checked before anything is written: a damaged store is left as found.
        if (std::string problem = store.check_integrity(); !problem.empty())
            throw StoreError(db.string() + ": integrity check failed: " + problem);
        ensure_admin_vm_stored(store, store.load());

        Model model;
        model.load(store.load());
        const auto host = aerie::backend::read_host_facts();
        model.set_size_defaults(aerie::backend::qube_size_defaults(host));
        EventHub events;
        AdminApi api(model, store, events);
        api.log = log_line;

        aerie::storage::FilePool pool(options.pool_dir.empty() ? fs::path(options.state_dir) / "pool"
                                                               : fs::path(options.pool_dir));
        remove_orphan_volumes(pool, model);
        aerie::backend::ns::NsOptions ns;
        ns.runtime_base = fs::path(options.runtime_dir) / "backend";
        // Cgroups are named per daemon: two aerieds (tests, demos) may each run a qube "work".
        if (fs::path(options.runtime_dir) != fs::path("/run/aerie"))
            ns.cgroup_group = fmt::format("aerie-{:08x}", std::hash<std::string>{}(fs::absolute(options.runtime_dir).string()) & 0xffffffffu);
        auto budget = aerie::backend::qubes_budget(host);
        if (options.qubes_pids_max) {
            budget.pids_max = options.qubes_pids_max;
            budget.qube_pids_max = std::clamp<uint64_t>(budget.pids_max / 8, 1, 16384);
        }
        if (options.qube_pids_max) budget.qube_pids_max = options.qube_pids_max;
        if (options.qubes_memory_mib) budget.memory_bytes = options.qubes_memory_mib << 20;
        ns.budget = budget;
        aerie::backend::ns::NsBackend backend(ns);
        asio::io_context io(1);
        LifecycleConfig lifecycle_config{fs::path(options.runtime_dir) / "qubes",
                                         options.bin_dir.empty() ? own_folder() : options.bin_dir,
                                         options.qrexec_socket_dir, options.policy_socket,
                                         fs::path(options.runtime_dir) / "log", options.internal_socket,
                                         options.socket, options.qube_log_max_bytes};
        Lifecycle lifecycle(io, model, events, backend, pool, lifecycle_config);
        api.set_storage(&pool);
        api.set_lifecycle(&lifecycle);
        api.set_event_loop(io);
        api.set_admin_policy(std::make_shared<aerie::admin::AdminPolicy>(options.policy_dirs));
        lifecycle.adopt();
        DisposablesConfig disposables_config{options.meminfo, lifecycle_config.bin_dir, options.qrexec_socket_dir};
        Disposables disposables(io, api.registry(), events, lifecycle, disposables_config);
        api.set_disposables(&disposables);
        disposables.recover();
        Relays relays(io, api.registry(), events, lifecycle);
        relays.sync();
        aerie::air::HostUplink uplink(io, api.registry(), events, lifecycle,
                                      {lifecycle_config.bin_dir, options.qrexec_socket_dir, lifecycle_config.log_dir,
                                       options.air_listen});
        uplink.sync();
        aerie::air::RemoteAdmin remote_admin(io, api.registry(), events, lifecycle, {lifecycle_config.bin_dir, options.qrexec_socket_dir});
        remote_admin.start();

        ApiServer server(io, options.socket, [&](const ApiRequest& r) { return api.handle(r); }, &events, 0660);
        ApiServer internal(io, options.internal_socket, [&](const ApiRequest& r) { return api.handle_internal(r); },
                           nullptr, 0660);
        if (!options.rpc_dir.empty())
            publish_rpc_services(options.rpc_dir, options.socket, api.method_names(),
                                 lifecycle_config.bin_dir);

        asio::signal_set signals(io, SIGINT, SIGTERM);
        signals.async_wait([&](const asio::error_code&, int) {
            server.close();
            internal.close();
            io.stop();
        });
        log_line(fmt::format("{} qubes, store {}, listening on {}", model.size(),
                             (fs::path(options.state_dir) / "qubes.db").string(), options.socket));
        io.run();
    } catch (const std::exception& e) {
        log_line(std::string("error: ") + e.what());
        return 1;
    }
    return 0;
}
