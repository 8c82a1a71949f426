// admin.deviceclass.List and the listing methods of admin.vm.device.*, until
// Aerie has devices: answered as Qubes R4.3 answers for qubes that expose,
// have assigned and have attached no device (qubesadmin's clone_vm and
// qvm-device read them).
#include "admin/api_call.hpp"

namespace aerie::admin {

namespace {

// The device classes Qubes' core registers (entry points "qubes.devices").
constexpr const char* kDeviceClasses[] = {"block", "pci"};

}  // namespace

void AdminApi::add_device_methods() {
    methods_["admin.deviceclass.List"] = {&AdminApi::deviceclass_list, Payload::None, Arg::None};
    methods_["admin.vm.device.denied.List"] = {&AdminApi::device_denied_list, Payload::None, Arg::None};
    for (std::string devclass : kDeviceClasses) {
        methods_["admin.vm.device." + devclass + ".Available"] = {&AdminApi::device_list, Payload::None,
                                                                  Arg::Optional};
        methods_["admin.vm.device." + devclass + ".Assigned"] = {&AdminApi::device_list, Payload::None,
                                                                 Arg::Optional};
        methods_["admin.vm.device." + devclass + ".Attached"] = {&AdminApi::device_list, Payload::None,
                                                                 Arg::Optional};
    }
}

std::string AdminApi::deviceclass_list(Call& call) {
    Call::enforce(call.dest_is_dom0(), "device classes live on dom0");
    std::string out;
    for (const char* devclass : kDeviceClasses) out += std::string(devclass) + "\n";
    return out;
}

// No device: an empty list. Assigned and Attached select one device by
// "BACKEND+PORT" (qubesd: a ValueError, not answered, without the '+').
std::string AdminApi::device_list(Call& call) {
    bool by_backend = !call.request.method.ends_with(".Available");
    if (by_backend && !call.arg().empty())
        Call::enforce(call.arg().find('+') != std::string::npos, "device argument without '+'");
    return {};
}

std::string AdminApi::device_denied_list(Call&) {
    return {};
}

}  // namespace aerie::admin
