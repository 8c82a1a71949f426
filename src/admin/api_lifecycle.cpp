// admin.vm.{Start,Shutdown,Kill,Pause,Unpause,CurrentState}.
#include "admin/api_call.hpp"
#include "admin/lifecycle.hpp"

namespace aerie::admin {

namespace {

// qubesd's shutdown and kill of a halted qube: QubesVMNotStartedError.
std::optional<ApiError> not_started(const Qube& qube) {
    if (!qube.is_halted() || qube.is_remote()) return std::nullopt;
    return qubes_error("QubesVMNotStartedError", "Domain is powered off: '" + qube.name + "'");
}

// The answer a lifecycle operation gives when it ends.
ApiResponse outcome(const std::optional<ApiError>& error) {
    if (!error) return ApiResponse::reply(encode_success(""));
    if (error->silent) return ApiResponse::close();
    return ApiResponse::reply(encode_exception(error->type, error->what()));
}

}  // namespace

void AdminApi::set_lifecycle(Lifecycle* lifecycle) {
    lifecycle_ = lifecycle;
    registry_.remove_logs = [lifecycle](const std::string& name) { lifecycle->remove_logs(name); };
    using P = Payload;
    using A = Arg;
    methods_["admin.vm.Start"] = {&AdminApi::vm_start, P::None, A::None};
    methods_["admin.vm.Shutdown"] = {&AdminApi::vm_shutdown, P::None, A::Optional};
    methods_["admin.vm.Kill"] = {&AdminApi::vm_kill, P::None, A::None};
    methods_["admin.vm.Pause"] = {&AdminApi::vm_pause, P::None, A::None};
    methods_["admin.vm.Unpause"] = {&AdminApi::vm_unpause, P::None, A::None};
    methods_["admin.vm.CurrentState"] = {&AdminApi::vm_current_state, P::None, A::None};
    methods_["admin.vm.Suspend"] = {&AdminApi::vm_suspend, P::None, A::None};
    methods_["admin.vm.Resume"] = {&AdminApi::vm_resume, P::None, A::None};
    // Qubes' start_time: when the qube last started (lost over a restart of
    // the daemon: None until its next start).
    events_.observe([this](std::string_view subject, std::string_view event, const EventHub::Kwargs&) {
        if (event != "domain-spawn" && event != "domain-shutdown") return;
        if (Qube* qube = model_.find(subject))
            qube->start_time =
                event == "domain-spawn"
                    ? std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
                          .count()
                    : 0;
    });
    // What a qrexec daemon asks for when the policy lets a call start its target.
    internal_methods_["internal.vm.Start"] = {&AdminApi::vm_autostart, P::None, A::None};
}

std::string AdminApi::vm_start(Call& call) {
    std::string name = call.dest->name;
    call.later = [this, name](ApiResponse::Completion done) {
        Qube* qube = model_.find(name);
        if (!qube) return done(outcome(qubes_error("QubesVMNotFoundError", "No such domain: '" + name + "'")));
        lifecycle_->start(*qube, [done](std::optional<ApiError> error) { done(outcome(error)); });
    };
    return {};
}

// The qrexec daemon's autostart. A RemoteVM is started (on its host, where
// paired) only when known to be halted: a call to one whose state is not
// known goes ahead without the cost of a remote start, and its host's own
// policy decides whether its leg starts it.
std::string AdminApi::vm_autostart(Call& call) {
    if (call.dest->is_remote() && call.dest->power_state != "Halted") return {};
    return vm_start(call);
}

std::string AdminApi::vm_shutdown(Call& call) {
    bool force = false, wait = false;
    if (!call.arg().empty()) {
        size_t pos = 0;
        const std::string& arg = call.arg();
        while (pos <= arg.size()) {
            size_t end = std::min(arg.find('+', pos), arg.size());
            std::string word = arg.substr(pos, end - pos);
            Call::enforce(word == "force" || word == "wait", "unknown shutdown option '" + word + "'");
            (word == "force" ? force : wait) = true;
            pos = end + 1;
        }
    }
    std::string name = call.dest->name;
    call.later = [this, name, force, wait](ApiResponse::Completion done) {
        Qube* qube = model_.find(name);
        if (!qube) return done(outcome(qubes_error("QubesVMNotFoundError", "No such domain: '" + name + "'")));
        if (auto error = not_started(*qube)) return done(outcome(error));
        lifecycle_->shutdown(*qube, wait, force, [done](std::optional<ApiError> error) { done(outcome(error)); });
    };
    return {};
}

std::string AdminApi::vm_kill(Call& call) {
    std::string name = call.dest->name;
    call.later = [this, name](ApiResponse::Completion done) {
        Qube* qube = model_.find(name);
        if (!qube) return done(outcome(qubes_error("QubesVMNotFoundError", "No such domain: '" + name + "'")));
        if (auto error = not_started(*qube)) return done(outcome(error));
        lifecycle_->kill(*qube, [done](std::optional<ApiError> error) { done(outcome(error)); });
    };
    return {};
}

std::string AdminApi::vm_pause(Call& call) {
    lifecycle_->pause(*call.dest);
    return {};
}

std::string AdminApi::vm_unpause(Call& call) {
    lifecycle_->unpause(*call.dest);
    return {};
}

// Aerie has no suspend to RAM: a suspend pauses, as Qubes does for a qube
// whose system cannot suspend; a resume unpauses.
std::string AdminApi::vm_suspend(Call& call) {
    Qube& qube = *call.dest;
    if (qube.power_state == "Paused") return {};
    if (qube.power_state != "Running")
        throw qubes_error("QubesVMNotRunningError",
                          "Domain not running (either powered off or paused): '" + qube.name + "'");
    lifecycle_->pause(qube);
    return {};
}

std::string AdminApi::vm_resume(Call& call) {
    lifecycle_->unpause(*call.dest);
    return {};
}

std::string AdminApi::vm_current_state(Call& call) {
    backend::QubeStats stats = lifecycle_->stats(*call.dest);
    std::string maxmem = call.dest->is_admin() ? "0" : model_.value_text(call.dest, "maxmem");
    return "mem=" + std::to_string(stats.memory_bytes / 1024) + " mem_static_max=" +
           std::to_string((maxmem.empty() ? 0 : std::stoll(maxmem)) * 1024) +
           " cputime=" + std::to_string(stats.cpu_usec * 1000) + " power_state=" + call.dest->power_state;
}

}  // namespace aerie::admin
