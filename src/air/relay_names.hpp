// How a relay translates names (docs/air.md), from its QubesDB folder
// (/run/qubes-db: remote/<local> = remote name, air-zone/<local> = zone).
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "air/fd_message.hpp"
#include "air/layout.hpp"

namespace aerie::air {

// An outgoing call as the transport service sees it: its argument is
// "LOCAL+SVC[+ARG]" (LOCAL: the RemoteVM's local name).
struct OutgoingCall {
    std::string local_name;   // LOCAL
    std::string zone;         // air-zone/LOCAL
    std::string remote_name;  // remote/LOCAL
    std::string service;      // "SVC[+ARG]"
};
// Throws AirError naming what is wrong (no '+', LOCAL not relayed here,
// LOCAL without a zone, a service name qrexec would refuse).
OutgoingCall resolve_outgoing(std::string_view argument, const std::filesystem::path& qubesdb = kQubesDb);

// The source of a call this relay makes (QREXEC_REMOTE_DOMAIN); throws when
// missing or not a qube name.
std::string calling_source(const char* env_value);

// An incoming call from `zone`: the caller `source` (its name there),
// `target` and `service` as the peer sent them. Checks every field and that
// `source` is allowed (`allowed_sources`: the peer's exported names, and for
// TLS also named in its certificate); maps it to the local RemoteVM
// (air-zone = zone, remote = source). Returns the argv to exec:
// {kQrexecClientVm, "--source-qube=LOCAL", target, service}. Throws AirError
// naming what is wrong.
std::vector<std::string> incoming_argv(std::string_view zone, std::string_view source, std::string_view target,
                                       std::string_view service, const std::vector<std::string>& allowed_sources,
                                       const std::filesystem::path& qubesdb = kQubesDb);

// The names in a file of one name per line (peers/<zone>/names); empty when missing.
std::vector<std::string> read_names(const std::filesystem::path& file);

}  // namespace aerie::air
