#include "air/remote_admin.hpp"

#include "admin/qube_command.hpp"
#include "admin/wire.hpp"
#include "air/zone.hpp"

namespace aerie::air {

using admin::ApiError;
using admin::Qube;

namespace {

// "power_state=Running mem=..." -> "Running"; "" when absent.
std::string power_state_of(const std::string& body) {
    size_t at = body.find("power_state=");
    if (at == std::string::npos) return {};
    size_t begin = at + 12, end = body.find_first_of(" \n", begin);
    std::string state = body.substr(begin, end == std::string::npos ? std::string::npos : end - begin);
    static const char* known[] = {"Halted", "Transient", "Running", "Paused", "Suspended", "Halting", "Dying",
                                  "Crashed", "NA"};
    for (const char* k : known)
        if (state == k) return state;
    return {};
}

}  // namespace

RemoteAdmin::RemoteAdmin(asio::io_context& io, admin::Registry& registry, admin::EventHub& events,
                         admin::Lifecycle& lifecycle, RemoteAdminConfig config)
    : io_(io), registry_(registry), model_(registry.model()), events_(events), lifecycle_(lifecycle), config_(std::move(config)), timer_(io) {}

RemoteAdmin::~RemoteAdmin() {
    *alive_ = false;
    lifecycle_.remote_lifecycle = nullptr;
}

bool RemoteAdmin::paired(const admin::Model& model, const Qube& qube) {
    if (!qube.is_remote() || !qube.features.count(std::string(kZoneFeature))) return false;
    auto relay = model.value_text(&qube, "relayvm");
    auto transport = model.value_text(&qube, "transport_rpc");
    return !relay.empty() && !transport.empty() && model.find(relay) != nullptr;
}

void RemoteAdmin::start() {
    lifecycle_.remote_lifecycle = [this](Qube& qube, const std::string& method, admin::Lifecycle::Done& done) {
        return take_lifecycle(qube, method, done);
    };
    poll();
}

void RemoteAdmin::call(const Qube& remote, const std::string& method, Reply reply) {
    std::string relay = model_.value_text(&remote, "relayvm");
    const Qube* relay_qube = model_.find(relay);
    if (!relay_qube || relay_qube->is_halted())
        return reply(admin::qubes_error("QubesVMNotStartedError",
                                        "The relay of '" + remote.name + "' (" + relay + ") does not run"),
                     {});
    admin::QubeCommand command{config_.bin_dir, config_.qrexec_socket_dir, relay,
                               "DEFAULT:QUBESRPC " + model_.value_text(&remote, "transport_rpc") + "+" +
                                   remote.name + "+" + method + " dom0",
                               config_.call_timeout};
    std::string name = remote.name;
    admin::run_in_qube(io_, std::move(command), [reply = std::move(reply), name, method](admin::QubeCommandResult r) {
        auto failed = [&](const std::string& why) {
            reply(admin::qubes_error("QubesException", "Remote " + method + " of '" + name + "': " + why), {});
        };
        if (!r.error.empty()) return failed(r.error);
        if (r.timed_out) return failed("no answer from the other host");
        std::string error;
        auto parsed = admin::parse_reply(r.output, &error);
        if (!parsed) return failed(r.exit_code == 0 ? "bad reply: " + error
                                                    : "refused or unreachable (exit code " +
                                                          std::to_string(r.exit_code) + ")");
        if (parsed->kind == admin::ApiReply::Kind::Exception)
            return reply(admin::qubes_error(parsed->exc_type, parsed->message), {});
        reply(std::nullopt, parsed->body);
    });
}

bool RemoteAdmin::take_lifecycle(Qube& qube, const std::string& method, admin::Lifecycle::Done& done) {
    if (!paired(model_, qube)) return false;
    // As Qubes: starting a running qube is no error (and costs nothing here).
    if (method == "admin.vm.Start" && qube.power_state == "Running") {
        done(std::nullopt);
        return true;
    }
    std::string name = qube.name;
    call(qube, method, [this, alive = alive_, name, done = std::move(done)](std::optional<ApiError> error, std::string) {
        if (*alive) {
            quiet_until_.erase(name);
            refresh(name);
        }
        done(std::move(error));
    });
    return true;
}

void RemoteAdmin::poll() {
    for (const Qube* q : model_.qubes_by_name())
        if (paired(model_, *q)) refresh(q->name);
    timer_.expires_after(config_.poll_interval);
    timer_.async_wait([this, alive = alive_](const asio::error_code& ec) {
        if (!ec && *alive) poll();
    });
}

// A forwarded Start/Shutdown/Kill reads the state again at once.
void RemoteAdmin::refresh(const std::string& name) {
    Qube* q = model_.find(name);
    if (!q || !paired(model_, *q) || polling_[name]) return;
    const Qube* relay = model_.find(model_.value_text(q, "relayvm"));
    if (!relay || relay->is_halted()) return;  // last known state stands
    auto now = std::chrono::steady_clock::now();
    if (auto it = quiet_until_.find(name); it != quiet_until_.end() && now < it->second) return;
    polling_[name] = true;
    call(*q, "admin.vm.CurrentState", [this, alive = alive_, name](std::optional<ApiError> error, std::string body) {
        if (!*alive) return;
        polling_.erase(name);
        Qube* remote = model_.find(name);
        if (!remote || !remote->is_remote()) return;
        std::string state = error ? "" : power_state_of(body);
        if (state.empty() && !quiet_until_.count(name))
            registry_.log("air: the power state of " + name + " cannot be read: " +
                          (error ? std::string(error->what()) : "no power_state in the reply"));
        std::string was = remote->power_state;
        remote->power_state = state.empty() ? "NA" : state;
        if (was != "Running" && state == "Running") events_.publish(name, "domain-start", {});
        if (was != "Halted" && state == "Halted")
            events_.publish(name, "domain-shutdown", {{"reason", "shutdown"}});
        if (state.empty())
            quiet_until_[name] = std::chrono::steady_clock::now() + 3 * config_.poll_interval;
        else
            quiet_until_.erase(name);
    });
}

}  // namespace aerie::air
