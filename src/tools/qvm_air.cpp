// qvm-air: pairs this host with another zone (Qubes Air) so that remote qubes
// need no aliasing by hand.
//
//   qvm-air export --zone NAME --address ADDR [--transport RPC] QUBE...
//       prints this zone's description (JSON) with the qubes it exports
//   qvm-air pair --relay RELAY [--prefix P | --name REMOTE=LOCAL...] ZONE_FILE
//       registers every qube the other zone exports as a RemoteVM here:
//       relayvm RELAY, transport_rpc and remote_name from the file, named
//       P+NAME (default prefix: "ZONE-"), or as --name says
//   qvm-air list
//       the zones paired here and their remote qubes (LOCAL -> REMOTE)
//   qvm-air unpair ZONE
//       removes that zone's RemoteVMs
// A RemoteVM made by pairing carries the features air-zone and air-address.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>

#include "admin/client.hpp"
#include "admin/qube.hpp"
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

int do_export(const admin::AdminClient& client, const std::string& zone_name, const std::string& address,
              const std::string& transport, const std::vector<std::string>& names) {
    air::Zone zone{zone_name, address, transport, {}};
    if (auto why = air::invalid_zone_name(zone.name); !why.empty()) fail("--zone: " + why);
    if (auto why = air::invalid_transport(zone.transport); !why.empty()) fail("--transport: " + why);
    for (const auto& name : names) {
        std::string label;
        try {
            label = client.get_property(name, "label").value;
        } catch (const admin::AdminError& e) {
            fail(name + ": " + e.what());
        }
        zone.qubes.push_back({name, label});
    }
    // Checked as the other side will check it.
    air::parse_zone(air::format_zone(zone));
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
    auto labels = client.label_names();
    for (const auto& [q, local] : plan) {
        bool known = std::find(labels.begin(), labels.end(), q.label) != labels.end();
        try {
            client.create_qube("RemoteVM", "", local, known ? q.label : "red");
            client.set_property(local, "relayvm", relay);
            client.set_property(local, "transport_rpc", zone.transport);
            client.set_property(local, "remote_name", q.name);
            client.set_feature(local, air::kZoneFeature, zone.name);
            client.set_feature(local, air::kAddressFeature, zone.address);
        } catch (const admin::AdminError& e) {
            fail(local + ": " + e.what());
        }
        fmt::print("{} -> {} in zone {}\n", local, q.name, zone.name);
    }
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
    std::string zone, address, transport = "qubesair.SSHProxy", relay, prefix, file;
    std::vector<std::string> names, renames;
    auto* exp = app.add_subcommand("export", "print this zone's description with the qubes it exports");
    exp->add_option("--zone", zone, "this zone's name")->required();
    exp->add_option("--address", address, "where this zone's relay is reached")->required();
    exp->add_option("--transport", transport, "the relay's qrexec service that carries calls")->capture_default_str();
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
        if (exp->parsed()) return do_export(client, zone, address, transport, names);
        if (pair->parsed()) return do_pair(client, relay, prefix, prefix_opt->count() > 0, renames, file);
        if (unpair->parsed()) return do_unpair(client, unpair_zone);
        return do_list(client);
    } catch (const admin::AdminError& e) {
        fail(e.what());
    } catch (const std::exception& e) {
        fail(e.what());
    }
}
