// aeried: Aerie's admin daemon (the qubesd of Aerie). Keeps the qubes in its
// store, answers the Admin API on its socket and internal.* calls on the
// internal socket, and (with --rpc-dir) exposes the Admin API methods as
// dom0 qrexec services so that qubes reach them under policy.
#include <sys/stat.h>

#include <csignal>
#include <filesystem>

#include "admin/api.hpp"
#include "admin/model.hpp"
#include "admin/server.hpp"
#include "admin/store.hpp"
#include "cli_support.hpp"

namespace fs = std::filesystem;
using namespace aerie::admin;

namespace {

struct Options {
    std::string state_dir = "/var/lib/aerie";
    std::string socket = "/var/run/qubesd.sock";
    std::string internal_socket = "/var/run/qubesd.internal.sock";
    std::string rpc_dir;
};

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
void publish_rpc_services(const std::string& dir, const std::string& socket, const std::vector<std::string>& methods) {
    fs::create_directories(dir);
    for (const auto& method : methods) {
        fs::path link = fs::path(dir) / method;
        std::error_code ec;
        fs::remove(link, ec);
        fs::create_symlink(fs::absolute(socket), link);
    }
}

void log_line(const std::string& text) { fmt::print(stderr, "aeried: {}\n", text); }

}  // namespace

int main(int argc, char** argv) {
    Options options;
    CLI::App app{"Aerie admin daemon", "aeried"};
    app.add_option("--state-dir", options.state_dir, "Folder of the persistent store")->capture_default_str();
    app.add_option("--socket", options.socket, "Admin API socket")->capture_default_str();
    app.add_option("--internal-socket", options.internal_socket, "Internal API socket")->capture_default_str();
    app.add_option("--rpc-dir", options.rpc_dir, "Publish admin.* as dom0 qrexec services here");
    if (int rc = aerie::tools::parse_args(app, argc, argv); rc >= 0) return rc;

    std::signal(SIGPIPE, SIG_IGN);
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
        EventHub events;
        AdminApi api(model, store, events);
        api.log = log_line;

        asio::io_context io(1);
        ApiServer server(io, options.socket, [&](const ApiRequest& r) { return api.handle(r); }, &events, 0660);
        ApiServer internal(io, options.internal_socket, [&](const ApiRequest& r) { return api.handle_internal(r); },
                           nullptr, 0660);
        if (!options.rpc_dir.empty()) publish_rpc_services(options.rpc_dir, options.socket, api.method_names());

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
