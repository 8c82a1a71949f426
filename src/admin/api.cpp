#include "admin/api.hpp"

#include "admin/api_call.hpp"

#include <fmt/format.h>

namespace aerie::admin {

namespace {

bool is_ascii(std::string_view text) {
    for (unsigned char c : text)
        if (c >= 0x80) return false;
    return true;
}

// 8-4-4-4-12 lowercase hex digits, as qubesd's decode_vm checks.
bool is_uuid_text(std::string_view text) {
    if (text.size() != 36) return false;
    for (size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    }
    return true;
}

}  // namespace

AdminApi::AdminApi(Model& model, Store& store, EventHub& events)
    : model_(model), store_(store), events_(events), registry_(model, store, events) {
    registry_.log = [this](const std::string& line) { log(line); };
    using P = Payload;
    using A = Arg;
    methods_ = {
        {"admin.vmclass.List", {&AdminApi::vmclass_list, P::None, A::None}},
        {"admin.vm.List", {&AdminApi::vm_list, P::None, A::None}},
        {"admin.vm.Remove", {&AdminApi::vm_remove, P::None, A::None}},
        {"admin.Events", {&AdminApi::events, P::None, A::None}},
        {"admin.label.List", {&AdminApi::label_list, P::None, A::None}},
        {"admin.label.Get", {&AdminApi::label_get, P::None, A::Required}},
        {"admin.label.Index", {&AdminApi::label_index, P::None, A::Required}},
        {"admin.label.Create", {&AdminApi::label_create, P::Required, A::Required}},
        {"admin.label.Remove", {&AdminApi::label_remove, P::None, A::Required}},
        {"admin.vm.feature.List", {&AdminApi::feature_list, P::None, A::None}},
        {"admin.vm.feature.Get", {&AdminApi::feature_get, P::None, A::Required}},
        {"admin.vm.feature.CheckWithTemplate", {&AdminApi::feature_check, P::None, A::Required}},
        {"admin.vm.feature.CheckWithNetvm", {&AdminApi::feature_check, P::None, A::Required}},
        {"admin.vm.feature.CheckWithAdminVM", {&AdminApi::feature_check, P::None, A::Required}},
        {"admin.vm.feature.CheckWithTemplateAndAdminVM", {&AdminApi::feature_check, P::None, A::Required}},
        {"admin.vm.feature.Set", {&AdminApi::feature_set, P::Optional, A::Required}},
        {"admin.vm.feature.Remove", {&AdminApi::feature_remove, P::None, A::Required}},
        {"admin.vm.tag.List", {&AdminApi::tag_list, P::None, A::None}},
        {"admin.vm.tag.Get", {&AdminApi::tag_get, P::None, A::Optional}},
        {"admin.vm.tag.Set", {&AdminApi::tag_set, P::None, A::Optional}},
        {"admin.vm.tag.Remove", {&AdminApi::tag_remove, P::None, A::Optional}},
        {"admin.vm.notes.Get", {&AdminApi::notes_get, P::None, A::None}},
        {"admin.vm.notes.Set", {&AdminApi::notes_set, P::Optional, A::None}},
        {"admin.vm.firewall.Get", {&AdminApi::firewall_get, P::None, A::None}},
        {"admin.vm.firewall.Set", {&AdminApi::firewall_set, P::Optional, A::None}},
        {"admin.vm.firewall.Reload", {&AdminApi::firewall_reload, P::None, A::None}},
    };
    for (std::string holder : {"admin.vm.property.", "admin.property."}) {
        methods_[holder + "List"] = {&AdminApi::property_list, P::None, A::None};
        methods_[holder + "Get"] = {&AdminApi::property_get, P::None, A::Optional};
        methods_[holder + "GetAll"] = {&AdminApi::property_get_all, P::None, A::None};
        methods_[holder + "GetDefault"] = {&AdminApi::property_get_default, P::None, A::Optional};
        methods_[holder + "Help"] = {&AdminApi::property_help, P::None, A::Optional};
        methods_[holder + "Set"] = {&AdminApi::property_set, P::Optional, A::Optional};
        methods_[holder + "Reset"] = {&AdminApi::property_reset, P::None, A::Optional};
    }
    for (std::string_view klass : kQubeClasses) {
        methods_["admin.vm.Create." + std::string(klass)] = {&AdminApi::vm_create, P::Optional, A::Optional};
        methods_["admin.vm.CreateInPool." + std::string(klass)] = {&AdminApi::vm_create, P::Optional, A::Optional};
    }
    add_device_methods();
    internal_methods_ = {
        {"internal.GetSystemInfo", {&AdminApi::system_info, P::None, A::None}},
    };
}

std::vector<std::string> AdminApi::method_names() const {
    std::vector<std::string> names;
    for (const auto& [name, method] : methods_) names.push_back(name);
    return names;
}

ApiResponse AdminApi::handle(const ApiRequest& request) { return dispatch(request, methods_); }

ApiResponse AdminApi::handle_internal(const ApiRequest& request) { return dispatch(request, internal_methods_); }

ApiResponse AdminApi::dispatch(const ApiRequest& request, const std::map<std::string, Method, std::less<>>& table) {
    auto refuse = [&](const std::string& why) {
        // Every field is the caller's choice: escaped and bounded (base::log_safe).
        if (refusals_logged_.allow(request.source)) {
            if (uint64_t n = refusals_logged_.take_suppressed(request.source))
                log(fmt::format("{} similar messages suppressed (refusals for {})", n, base::log_safe(request.source, 64)));
            log("refused " + base::log_safe(request.method, 80) +
                (request.arg.empty() ? "" : "+" + base::log_safe(request.arg, 128)) + " (" +
                base::log_safe(request.source, 64) + " -> " + base::log_safe(request.dest, 64) +
                "): " + base::log_safe(why, 200));
        }
        return ApiResponse::close();
    };
    try {
        auto resolve = [&](const std::string& key) -> Qube* {
            if (!is_ascii(key)) throw protocol_error("qube name is not ASCII");
            if (key.substr(0, 5) == "uuid:") {
                if (!is_uuid_text(key.substr(5)))
                    throw qubes_error("QubesVMInvalidUUIDError", "VM UUID is not valid: '" + key.substr(5) + "'");
            } else if (auto bad = qube_name_error(key); !bad.type.empty() && key != "dom0") {
                throw qubes_error(bad.type, bad.message);  // qubes.api.decode_vm: validate_name
            }
            Qube* qube = model_.find(key);
            if (!qube) throw qubes_error("QubesVMNotFoundError", "No such domain: '" + key + "'");
            return qube;
        };
        Qube* src = resolve(request.source);
        Qube* dest = resolve(request.dest);
        auto it = table.find(request.method);
        if (it == table.end()) return refuse("no such method: '" + request.method + "'");
        const Method& method = it->second;
        if (method.payload == Payload::None && !request.payload.empty()) return refuse("unexpected payload");
        if (method.payload == Payload::Required && request.payload.empty()) return refuse("expected payload");
        if (method.arg == Arg::None && !request.arg.empty()) return refuse("unexpected argument");
        if (method.arg == Arg::Required && request.arg.empty()) return refuse("expected an argument");
        if (!is_ascii(request.arg)) return refuse("argument is not ASCII");
        Call call{request, src, dest, false, nullptr, {}, {}};
        std::string body = (this->*method.handler)(call);
        if (call.later) return ApiResponse::deferred(std::move(call.later));
        if (call.stream) {
            auto response = ApiResponse::events(std::move(body));
            response.hub = call.hub;
            response.event_filter = std::move(call.event_filter);
            if (!dest->is_admin()) response.event_subject = dest->name;
            return response;
        }
        return ApiResponse::reply(encode_success(body));
    } catch (const ApiError& e) {
        if (e.silent) return refuse(e.type + ": " + e.what());
        return ApiResponse::reply(encode_exception(e.type, e.what()));
    } catch (const StoreError& e) {
        log(std::string("store error: ") + e.what());
        return ApiResponse::reply(encode_exception("QubesException", std::string("Cannot save: ") + e.what()));
    }
}

void AdminApi::publish(const Qube* subject, const std::string& event,
                       std::vector<std::pair<std::string, std::string>> kwargs) {
    events_.publish(subject ? subject->name : "", event, kwargs);
}

std::string AdminApi::events(Call& call) {
    call.stream = true;
    if (admin_policy_ && !call.src->is_admin()) {
        std::shared_ptr<AdminPolicy> policy = admin_policy_;
        std::string source = call.src->name;
        call.event_filter = [this, policy, source](const std::string& encoded) {
            return policy->allows_event(model_, source, encoded);
        };
    }
    return encode_event("", "connection-established", {});
}

std::string AdminApi::system_info(Call& call) {
    Call::enforce(call.dest_is_dom0(), "internal.GetSystemInfo targets dom0");
    return model_.system_info_json();
}

}  // namespace aerie::admin
