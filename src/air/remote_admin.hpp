// Qubes Air beyond Qubes: the lifecycle of a paired RemoteVM (one made by
// `qvm-air pair`: feature air-zone, a relay and a transport) is the remote
// qube's. Start, Shutdown and Kill become the same Admin API call on the
// other host, made through the relay's transport as this host's dom0 (known
// there as <zone>-dom0: the other host's policy decides, e.g.
// `admin.vm.Start * a-dom0 vault allow target=dom0`). Its power state is the
// remote qube's as last read with admin.vm.CurrentState, every few seconds
// while the relay runs ("NA" when it cannot be read); qvm-ls shows it.
// A RemoteVM made by hand stays exactly as in Qubes (always Running, no
// lifecycle).
#pragma once

#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <string>

#include "admin/lifecycle.hpp"
#include "admin/model.hpp"
#include "admin/registry.hpp"
#include "admin/server.hpp"

namespace aerie::air {

struct RemoteAdminConfig {
    std::filesystem::path bin_dir;            // qrexec-client
    std::filesystem::path qrexec_socket_dir;
    std::chrono::milliseconds poll_interval{3000};
    std::chrono::milliseconds call_timeout{30000};
};

class RemoteAdmin {
public:
    RemoteAdmin(asio::io_context& io, admin::Registry& registry, admin::EventHub& events, admin::Lifecycle& lifecycle,
                RemoteAdminConfig config);
    ~RemoteAdmin();

    static bool paired(const admin::Model& model, const admin::Qube& qube);

    // Polls the power states; installs the lifecycle hook.
    void start();

private:
    using Reply = std::function<void(std::optional<admin::ApiError>, std::string body)>;
    // METHOD[+ARG] about `remote`, run on the other host as its dom0 would.
    void call(const admin::Qube& remote, const std::string& method, Reply reply);
    bool take_lifecycle(admin::Qube& qube, const std::string& method, admin::Lifecycle::Done& done);
    void poll();
    void refresh(const std::string& name);

    asio::io_context& io_;
    admin::Registry& registry_;
    admin::Model& model_;
    admin::EventHub& events_;
    admin::Lifecycle& lifecycle_;
    RemoteAdminConfig config_;
    asio::steady_timer timer_;
    std::map<std::string, bool> polling_;  // a CurrentState call is out
    // After a failed read, the next one waits longer (an unreachable host, or
    // a policy that does not share the state, is not asked every few
    // seconds); the first failure of a streak is logged.
    std::map<std::string, std::chrono::steady_clock::time_point> quiet_until_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace aerie::air
