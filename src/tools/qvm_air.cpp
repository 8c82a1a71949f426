// qvm-air: pairs this host with another zone (Qubes Air) so that remote qubes
// need no aliasing by hand.
//
//   qvm-air export --zone NAME --relay RELAY --address ADDR [--transport RPC] [--admin] QUBE...
//       prints this zone's description (JSON) with the qubes it exports and
//       the relay's keys: the relay (started if need be) makes them, or
//       keeps those it has (`aerie-air-relay keys init`, `keys show`);
//       --admin exports dom0 too (the other side's <zone>-dom0: the source
//       of this host's remote lifecycle calls, which that side's policy decides)
//   qvm-air pair --relay RELAY [--prefix P | --name REMOTE=LOCAL...] ZONE_FILE
//       registers every qube the other zone exports as a RemoteVM here:
//       relayvm RELAY, transport_rpc and remote_name from the file, named
//       P+NAME (default prefix: "ZONE-"), or as --name says; then the relay
//       pins the zone's keys (`keys trust`)
//   qvm-air list
//       the zones paired here and their remote qubes (LOCAL -> REMOTE)
//   qvm-air unpair ZONE
//       the relays forget the zone's keys (`keys forget`), then its
//       RemoteVMs are removed
// A RemoteVM made by pairing carries the features air-zone and air-address.
// The relay's commands run in it as `user` through qrexec-client (the one
// next to this program, sockets in $QREXEC_SOCKET_DIR, default
// /var/run/qubes). A failure changes nothing.
#include <limits.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "admin/client.hpp"
#include "admin/qube.hpp"
#include "air/layout.hpp"
#include "air/zone.hpp"

using namespace aerie;

namespace {

[[noreturn]] void fail(const std::string& message) {
    fmt::print(stderr, "qvm-air: error: {}\n", message);
    std::exit(1);
}

std::string read_input(const std::string& path) {
    std::ostringstream buf;
    if (path == "-") {
        buf << std::cin.rdbuf();
    } else {
        std::ifstream in(path, std::ios::binary);
        if (!in) fail("cannot read " + path);
        buf << in.rdbuf();
    }
    return buf.str();
}

// --- aerie-air-relay in a relay qube ------------------------------------------------

std::string self_dir() {
    char buf[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return ".";
    std::string path(buf, static_cast<size_t>(n));
    return path.substr(0, path.rfind('/'));
}

// An anonymous file holding `text`, read from its start.
int memfd_with(const std::string& text) {
    int fd = ::memfd_create("qvm-air", MFD_CLOEXEC);
    if (fd < 0) fail(std::string("memfd_create: ") + std::strerror(errno));
    if (::write(fd, text.data(), text.size()) != static_cast<ssize_t>(text.size()) || ::lseek(fd, 0, SEEK_SET) != 0)
        fail(std::string("memfd: ") + std::strerror(errno));
    return fd;
}

std::string memfd_text(int fd) {
    std::string out;
    char buf[65536];
    ::lseek(fd, 0, SEEK_SET);
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<size_t>(n));
    ::close(fd);
    return out;
}

// "" when `relay` runs (started or unpaused if need be), else why not.
std::string start_relay(const admin::AdminClient& client, const std::string& relay) {
    try {
        if (client.power_state(relay) == "Paused")
            client.unpause(relay);
        else
            client.start(relay);
    } catch (const admin::AdminError& e) {
        if (!e.is_instance_of("QubesVMNotHaltedError")) return "relay " + relay + ": cannot start it: " + e.what();
    }
    return {};
}

struct RelayResult {
    std::string error;   // "" when it exited 0
    std::string output;  // its stdout
};

// `aerie-air-relay ARGS` (words without shell specials: zone and qube names)
// in `relay` as user, `input` on its stdin.
RelayResult run_in_relay(const admin::AdminClient& client, const std::string& relay,
                         const std::vector<std::string>& args, const std::string& input = "") {
    if (auto why = start_relay(client, relay); !why.empty()) return {why, ""};
    std::string command = "user:" + std::string(air::kRelayProgram);
    for (const auto& a : args) command += " " + a;
    const char* socket_dir = std::getenv("QREXEC_SOCKET_DIR");
    std::vector<std::string> argv = {self_dir() + "/qrexec-client",
                                     std::string("--socket-dir=") +
                                         (socket_dir && *socket_dir ? socket_dir : "/var/run/qubes"),
                                     "-d", relay, command};
    int in = memfd_with(input), out = memfd_with(""), err = memfd_with("");
    std::fflush(stdout);
    std::fflush(stderr);
    pid_t pid = ::fork();
    if (pid < 0) fail(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        ::dup2(in, STDIN_FILENO);
        ::dup2(out, STDOUT_FILENO);
        ::dup2(err, STDERR_FILENO);
        std::vector<char*> cargv;
        for (auto& a : argv) cargv.push_back(a.data());
        cargv.push_back(nullptr);
        ::execv(cargv[0], cargv.data());
        std::fprintf(stderr, "%s: %s\n", cargv[0], std::strerror(errno));
        ::_exit(127);
    }
    ::close(in);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    RelayResult r{"", memfd_text(out)};
    std::string errors = memfd_text(err);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        while (!errors.empty() && errors.back() == '\n') errors.pop_back();
        std::string what = args.size() > 1 ? args[0] + " " + args[1] : args.at(0);
        r.error = fmt::format("relay {}: aerie-air-relay {} failed: {}", relay, what,
                              errors.empty() ? "exit code " + std::to_string(WEXITSTATUS(status)) : errors);
    }
    return r;
}

std::string relay_command(const admin::AdminClient& client, const std::string& relay,
                          const std::vector<std::string>& args, const std::string& input = "") {
    RelayResult r = run_in_relay(client, relay, args, input);
    if (!r.error.empty()) fail(r.error);
    return r.output;
}

bool qube_exists(const admin::AdminClient& client, const std::string& name) {
    for (const auto& q : client.list_qubes())
        if (q.name == name) return true;
    return false;
}

// --- the subcommands -------------------------------------------------------------------

int do_export(const admin::AdminClient& client, const std::string& zone_name, const std::string& relay,
              const std::string& address, const std::string& transport, const std::vector<std::string>& names) {
    air::Zone zone;
    zone.name = zone_name;
    zone.address = address;
    zone.transport = transport;
    if (auto why = air::invalid_zone_name(zone.name); !why.empty()) fail("--zone: " + why);
    if (auto why = air::invalid_transport(zone.transport); !why.empty()) fail("--transport: " + why);
    if (!qube_exists(client, relay)) fail("no such relay qube: " + relay);
    for (const auto& name : names) {
        std::string label;
        try {
            label = client.get_property(name, "label").value;
        } catch (const admin::AdminError& e) {
            fail(name + ": " + e.what());
        }
        if (auto why = admin::invalid_qube_name_reason(name); !why.empty()) fail(name + ": " + why);
        zone.qubes.push_back({name, label});
    }
    std::vector<std::string> init = {"keys", "init", zone.name};
    init.insert(init.end(), names.begin(), names.end());
    relay_command(client, relay, init);
    try {
        auto keys = nlohmann::json::parse(relay_command(client, relay, {"keys", "show"}));
        zone.tls_cert = keys.at("tls_cert").get<std::string>();
        zone.ssh_key = keys.at("ssh_key").get<std::string>();
        zone.ssh_host_key = keys.at("ssh_host_key").get<std::string>();
    } catch (const nlohmann::json::exception& e) {
        fail("relay " + relay + ": keys show: " + e.what());
    }
    // Checked as the other side will check it.
    try {
        air::parse_zone(air::format_zone(zone));
    } catch (const air::ZoneError& e) {
        fail("relay " + relay + ": " + e.what());
    }
    fmt::print("{}", air::format_zone(zone));
    return 0;
}

int do_pair(const admin::AdminClient& client, const std::string& relay, const std::string& prefix_option,
            bool have_prefix, const std::vector<std::string>& renames, const std::string& file) {
    air::Zone zone;
    try {
        zone = air::parse_zone(read_input(file));
    } catch (const air::ZoneError& e) {
        fail(file + ": " + e.what());
    }
    std::map<std::string, std::string> local_of;  // remote name -> local name
    for (const auto& spec : renames) {
        auto eq = spec.find('=');
        if (eq == std::string::npos || eq == 0 || eq + 1 == spec.size())
            fail("--name " + spec + ": expected REMOTE=LOCAL");
        local_of[spec.substr(0, eq)] = spec.substr(eq + 1);
    }
    if (!zone.has_credentials()) fail(file + ": zone " + zone.name + " has no keys (export it with --relay)");
    std::string prefix = have_prefix ? prefix_option : zone.name + "-";
    std::map<std::string, bool> existing;
    for (const auto& q : client.list_qubes()) existing[q.name] = true;
    if (!existing.count(relay)) fail("no such relay qube: " + relay);
    // Everything checked before anything is made.
    std::vector<std::pair<air::ExportedQube, std::string>> plan;
    for (const auto& q : zone.qubes) {
        std::string local = local_of.count(q.name) ? local_of[q.name] : prefix + q.name;
        if (!renames.empty() && !local_of.count(q.name)) continue;  // --name: only those named
        if (auto why = admin::invalid_qube_name_reason(local); !why.empty()) fail(local + ": " + why);
        if (existing.count(local)) fail("a qube named " + local + " exists already (use --prefix or --name)");
        plan.emplace_back(q, local);
    }
    for (const auto& [remote, ignored] : local_of) {
        bool exported = false;
        for (const auto& q : zone.qubes) exported = exported || q.name == remote;
        if (!exported) fail("zone " + zone.name + " does not export " + remote);
    }
    if (auto why = start_relay(client, relay); !why.empty()) fail(why);
    auto labels = client.label_names();
    std::vector<std::string> made;
    // Undoes what was made, then fails.
    auto undo = [&](const std::string& message) {
        for (const auto& local : made) {
            try {
                client.remove_qube(local);
            } catch (const admin::AdminError&) {
            }
        }
        fail(message);
    };
    for (const auto& [q, local] : plan) {
        bool known = std::find(labels.begin(), labels.end(), q.label) != labels.end();
        try {
            client.create_qube("RemoteVM", "", local, known ? q.label : "red");
            made.push_back(local);
            client.set_property(local, "relayvm", relay);
            client.set_property(local, "transport_rpc", zone.transport);
            client.set_property(local, "remote_name", q.name);
            client.set_feature(local, air::kZoneFeature, zone.name);
            client.set_feature(local, air::kAddressFeature, zone.address);
        } catch (const admin::AdminError& e) {
            undo(local + ": " + e.what());
        }
    }
    // The relay pins the zone's keys and names (the file as parsed here).
    if (auto r = run_in_relay(client, relay, {"keys", "trust"}, air::format_zone(zone)); !r.error.empty())
        undo(r.error);
    for (const auto& [q, local] : plan) fmt::print("{} -> {} in zone {}\n", local, q.name, zone.name);
    return 0;
}

// zone -> [(local, remote, relay)]
std::map<std::string, std::vector<std::array<std::string, 3>>> paired(const admin::AdminClient& client) {
    std::map<std::string, std::vector<std::array<std::string, 3>>> out;
    for (const auto& q : client.list_qubes()) {
        if (q.klass != "RemoteVM") continue;
        auto zone = client.get_feature(q.name, air::kZoneFeature);
        if (!zone) continue;
        out[*zone].push_back({q.name, client.get_property(q.name, "remote_name").value,
                              client.get_property(q.name, "relayvm").value});
    }
    return out;
}

int do_list(const admin::AdminClient& client) {
    for (const auto& [zone, qubes] : paired(client)) {
        fmt::print("{}\n", zone);
        for (const auto& [local, remote, relay] : qubes) fmt::print("  {} -> {} (relay {})\n", local, remote, relay);
    }
    return 0;
}

int do_unpair(const admin::AdminClient& client, const std::string& zone) {
    auto all = paired(client);
    auto it = all.find(zone);
    if (it == all.end()) fail("no zone " + zone + " is paired here");
    std::set<std::string> relays;
    for (const auto& entry : it->second)
        if (!entry[2].empty()) relays.insert(entry[2]);
    for (const auto& relay : relays) relay_command(client, relay, {"keys", "forget", zone});
    for (const auto& entry : it->second) {
        try {
            client.remove_qube(entry[0]);
        } catch (const admin::AdminError& e) {
            fail(entry[0] + ": " + e.what());
        }
        fmt::print("removed {}\n", entry[0]);
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    CLI::App app{"Pairs this host with other Qubes Air zones", "qvm-air"};
    app.require_subcommand(1);
    std::string zone, address, transport = std::string(air::kTlsService), relay, prefix, file;
    std::vector<std::string> names, renames;
    bool admin_too = false;
    auto* exp = app.add_subcommand("export", "print this zone's description with the qubes it exports");
    exp->add_option("--zone", zone, "this zone's name")->required();
    exp->add_option("--relay", relay, "the local qube that carries calls from that zone (its keys are exported)")
        ->required();
    exp->add_option("--address", address, "where this zone's relay is reached")->required();
    exp->add_option("--transport", transport, "the relay's qrexec service that carries calls")->capture_default_str();
    exp->add_flag("--admin", admin_too,
                  "also export this host's dom0, which the other zone's policy may then let make Admin API calls "
                  "about its qubes (their power state and lifecycle here)");
    exp->add_option("qubes", names, "the qubes to export")->required();
    auto* pair = app.add_subcommand("pair", "register the qubes of another zone as RemoteVMs");
    pair->add_option("--relay", relay, "the local qube that carries calls to that zone")->required();
    auto* prefix_opt = pair->add_option("--prefix", prefix, "local names: PREFIX+NAME (default: ZONE-)");
    pair->add_option("--name", renames, "REMOTE=LOCAL: only these, with these names")->excludes(prefix_opt);
    pair->add_option("zone_file", file, "the other zone's description (- for stdin)")->required();
    app.add_subcommand("list", "the zones paired here");
    std::string unpair_zone;
    auto* unpair = app.add_subcommand("unpair", "remove a zone's RemoteVMs");
    unpair->add_option("zone", unpair_zone, "the zone")->required();
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp&) {
        std::fputs(app.help().c_str(), stdout);
        return 0;
    } catch (const CLI::ParseError& e) {
        fmt::print(stderr, "qvm-air: error: {}\n", e.what());
        return 2;
    }
    admin::AdminClient client;
    try {
        if (exp->parsed()) {
            if (admin_too && std::find(names.begin(), names.end(), "dom0") == names.end()) names.push_back("dom0");
            return do_export(client, zone, relay, address, transport, names);
        }
        if (pair->parsed()) return do_pair(client, relay, prefix, prefix_opt->count() > 0, renames, file);
        if (unpair->parsed()) return do_unpair(client, unpair_zone);
        return do_list(client);
    } catch (const admin::AdminError& e) {
        fail(e.what());
    } catch (const std::exception& e) {
        fail(e.what());
    }
}
