// admin.vm.CreateDisposable.
#include "admin/api_call.hpp"
#include "admin/disposables.hpp"
#include "admin/dispvm_rules.hpp"

namespace aerie::admin {

void AdminApi::set_disposables(Disposables* disposables) {
    disposables_ = disposables;
    methods_["admin.vm.CreateDisposable"] = {&AdminApi::vm_create_disposable, Payload::Optional, Arg::Optional};
}

// Argument "" or "preload"; payload "" (answer: the new qube's name) or
// "uuid" (answer: uuid:UUID). DEST dom0: the caller's default_dispvm.
std::string AdminApi::vm_create_disposable(Call& call) {
    Call::enforce(call.arg().empty() || call.arg() == "preload", "invalid argument");
    if (call.payload() != "" && call.payload() != "uuid")
        throw value_error("Invalid payload for admin.vm.CreateDisposable: expected the empty string or 'uuid'");
    bool by_uuid = call.payload() == "uuid";
    std::string tpl = call.dest_is_dom0() ? model_.value_text(call.src, "default_dispvm") : call.dest->name;
    if (tpl.empty()) throw qubes_error("QubesException", "No default disposable template for " + call.src->name);
    if (const Qube* t = model_.find(tpl); !t || !is_disposable_template(model_, *t))
        throw qubes_error("QubesException", std::string(kNotADisposableTemplate));
    if (call.arg() == "preload") {
        disposables_->start_preloading(tpl, "autostart was requested");
        return {};
    }
    std::string creator = call.src->name;
    call.later = [this, tpl, creator, by_uuid](ApiResponse::Completion done) {
        disposables_->create(tpl, creator, [this, done, by_uuid](std::optional<ApiError> error, const std::string& name) {
            if (error) {
                if (error->silent) return done(ApiResponse::close());
                return done(ApiResponse::reply(encode_exception(error->type, error->what())));
            }
            const Qube* disp = model_.find(name);
            std::string body = by_uuid && disp ? "uuid:" + disp->uuid : name;
            done(ApiResponse::reply(encode_success(body)));
        });
    };
    return {};
}

}  // namespace aerie::admin
