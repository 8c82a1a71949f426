// Where things are inside a relay qube (see docs/air.md).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

namespace aerie::air {

inline constexpr std::string_view kUplinkSocket = "/run/aerie-air/uplink.sock";
inline constexpr std::string_view kUplinkFolderInQube = "/run/aerie-air";
inline constexpr std::string_view kQubesDb = "/run/qubes-db";
inline constexpr std::string_view kAerieBin = "/run/aerie/bin";
inline constexpr std::string_view kQrexecClientVm = "/run/aerie/bin/qrexec-client-vm";
inline constexpr std::string_view kRelayProgram = "/run/aerie/bin/aerie-air-relay";
inline constexpr std::string_view kSshd = "/usr/sbin/sshd";
inline constexpr std::string_view kSsh = "/usr/bin/ssh";

// Transport names on the wire (preamble, accept) and their qrexec services.
inline constexpr std::string_view kTls = "tls";
inline constexpr std::string_view kSsh_ = "ssh";
inline constexpr std::string_view kTlsService = "qubesair.TLSProxy";
inline constexpr std::string_view kSshService = "qubesair.SSHProxy";

// The relay's transport state: $AERIE_AIR_HOME, else $HOME/.aerie-air.
std::filesystem::path relay_home();

// The fixed paths above, each overridable from the environment so that the
// relay's commands run outside a qube in tests.
std::filesystem::path qubesdb_dir();  // $AERIE_AIR_QUBESDB, else kQubesDb
std::string qrexec_client_vm();       // $AERIE_AIR_QREXEC_CLIENT_VM, else kQrexecClientVm
std::string uplink_socket();          // $AERIE_AIR_UPLINK, else kUplinkSocket
std::string relay_program();          // $AERIE_AIR_RELAY_PROGRAM, else kRelayProgram
std::string ssh_login_user();         // $AERIE_AIR_SSH_USER, else "user" (the relay's account)

}  // namespace aerie::air
