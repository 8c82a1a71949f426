#include "air/relay_names.hpp"

#include <fstream>
#include <iterator>
#include <optional>
#include <system_error>

#include "admin/qube.hpp"
#include "air/zone.hpp"

namespace aerie::air {

namespace fs = std::filesystem;

namespace {

constexpr size_t kMaxService = 255;

bool service_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
           c == '.' || c == '+';
}

// The qrexec daemon's rule for "SVC[+ARG]" (qrexec/sanitize.cpp: the same
// characters; here refused instead of replaced), with a bound.
void check_service(std::string_view service) {
    if (service.empty() || service.front() == '+') throw AirError("no service name");
    if (service.size() > kMaxService) throw AirError("service name longer than 255 characters");
    for (char c : service)
        if (!service_char(c)) throw AirError("service name with a character qrexec refuses");
}

void check_qube_name(std::string_view what, std::string_view name) {
    if (auto why = admin::invalid_qube_name_reason(name); !why.empty())
        throw AirError(std::string(what) + ": not a qube name");
}

// What qrexec-client-vm takes as a target here: a qube name, @default,
// @dispvm or @dispvm:NAME.
void check_target(std::string_view target, std::string_view what = "target") {
    if (target == "@default" || target == "@dispvm") return;
    if (target.starts_with("@dispvm:")) return check_qube_name(what, target.substr(8));
    check_qube_name(what, target);
}

// A QubesDB value (one file); nullopt when there is none. At most one
// trailing newline is dropped.
std::optional<std::string> read_value(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    if (!in) return std::nullopt;
    std::string value((std::istreambuf_iterator<char>(in)), {});
    if (!value.empty() && value.back() == '\n') value.pop_back();
    return value;
}

}  // namespace

OutgoingCall resolve_outgoing(std::string_view argument, const fs::path& qubesdb) {
    size_t plus = argument.find('+');
    if (plus == std::string_view::npos) throw AirError("the argument is not LOCAL+SERVICE");
    OutgoingCall call;
    call.local_name = argument.substr(0, plus);
    call.service = argument.substr(plus + 1);
    check_qube_name("the argument's remote qube", call.local_name);
    check_service(call.service);
    auto remote = read_value(qubesdb / "remote" / call.local_name);
    if (!remote) throw AirError(call.local_name + " is not relayed here");
    auto zone = read_value(qubesdb / "air-zone" / call.local_name);
    if (!zone || zone->empty()) throw AirError(call.local_name + " has no zone");
    if (!invalid_zone_name(*zone).empty()) throw AirError(call.local_name + ": its zone is not a zone name");
    // A remote name may be a target token too: @dispvm:TPL is a new
    // disposable on the other host for every call.
    check_target(*remote, call.local_name + ": its remote name");
    call.zone = *zone;
    call.remote_name = *remote;
    return call;
}

std::string calling_source(const char* env_value) {
    if (!env_value || !*env_value) throw AirError("QREXEC_REMOTE_DOMAIN is not set");
    check_qube_name("the caller", env_value);
    return env_value;
}

std::vector<std::string> incoming_argv(std::string_view zone, std::string_view source, std::string_view target,
                                       std::string_view service, const std::vector<std::string>& allowed_sources,
                                       const fs::path& qubesdb) {
    if (!invalid_zone_name(zone).empty()) throw AirError("not a zone name");
    check_qube_name("source", source);
    check_target(target);
    check_service(service);
    std::string z(zone), s(source);
    bool allowed = false;
    for (const auto& name : allowed_sources) allowed = allowed || name == source;
    if (!allowed) throw AirError("zone " + z + " does not export " + s);
    // The RemoteVM standing for the caller: air-zone = zone and remote = source.
    std::vector<std::string> matches;
    std::error_code ec;
    for (fs::directory_iterator it(qubesdb / "air-zone", ec), end; !ec && it != end; it.increment(ec)) {
        std::string local = it->path().filename().string();
        if (!admin::invalid_qube_name_reason(local).empty()) continue;
        if (read_value(it->path()) == z && read_value(qubesdb / "remote" / local) == s) matches.push_back(local);
    }
    if (matches.empty()) throw AirError("zone " + z + " has no qube " + s + " here");
    if (matches.size() > 1) throw AirError("zone " + z + " has more than one qube " + s + " here");
    return {qrexec_client_vm(), "--source-qube=" + matches.front(), std::string(target), std::string(service)};
}

std::vector<std::string> read_names(const fs::path& file) {
    std::vector<std::string> names;
    std::ifstream in(file);
    for (std::string line; std::getline(in, line);) {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
        if (!line.empty() && admin::invalid_qube_name_reason(line).empty()) names.push_back(line);
    }
    return names;
}

}  // namespace aerie::air
