#include "air/layout.hpp"

#include <cstdlib>

namespace aerie::air {

std::filesystem::path relay_home() {
    if (const char* explicit_home = std::getenv("AERIE_AIR_HOME"); explicit_home && *explicit_home)
        return explicit_home;
    const char* home = std::getenv("HOME");
    return std::filesystem::path(home && *home ? home : "/home/user") / ".aerie-air";
}

namespace {
std::string from_env(const char* name, std::string_view fallback) {
    const char* value = std::getenv(name);
    return value && *value ? std::string(value) : std::string(fallback);
}
}  // namespace

std::filesystem::path qubesdb_dir() { return from_env("AERIE_AIR_QUBESDB", kQubesDb); }
std::string qrexec_client_vm() { return from_env("AERIE_AIR_QREXEC_CLIENT_VM", kQrexecClientVm); }
std::string uplink_socket() { return from_env("AERIE_AIR_UPLINK", kUplinkSocket); }
std::string relay_program() { return from_env("AERIE_AIR_RELAY_PROGRAM", kRelayProgram); }
std::string ssh_login_user() { return from_env("AERIE_AIR_SSH_USER", "user"); }

}  // namespace aerie::air
