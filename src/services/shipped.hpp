// What every qube's agent offers from Aerie's own service folder
// (src/services/qubes-rpc), announced as a Qubes template announces its
// services: the features qubesadmin reads before choosing a service
// (vmexec: qubes.VMExec for commands without a shell; supported-rpc.X).
#pragma once

#include <array>
#include <string_view>
#include <utility>

namespace aerie::services {

// The executable services (a /dev/tcp link such as qubes.ConnectTCP is not
// announced, as Qubes' agent lists only programs and sockets).
inline constexpr std::array<std::string_view, 9> kAnnouncedServices = {
    "qubes.VMShell", "qubes.VMRootShell",    "qubes.VMExec",  "qubes.VMRootExec", "qubes.VMExecGUI",
    "qubes.GetDate", "qubes.WaitForSession", "qubes.OpenURL", "qubes.OpenInVM",
};

// Other features a Qubes Linux template requests of itself at installation.
inline constexpr std::array<std::pair<std::string_view, std::string_view>, 3> kTemplateFeatures = {{
    {"os", "Linux"},
    {"qrexec", "1"},
    {"vmexec", "1"},
}};

}  // namespace aerie::services
