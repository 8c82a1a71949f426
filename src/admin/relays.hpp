// Qubes Air relays, as Qubes R4.3's Relay extension and beyond it: each
// RemoteVM carries the tag relayvm-<its relay> (and no other relayvm- tag),
// and each relay finds in its QubesDB the names of the remote qubes it
// carries calls for: /remote/<local name> = <remote_name, else the local
// name>. Unlike upstream the mapping is kept exact, not only added to: it is
// rewritten when a RemoteVM's relayvm, remote_name or name changes, when one
// is added or removed, when a relay is renamed, and at each start of a relay.
// Qubes Air (docs/air.md): beside it, /air-zone/<local name> = the RemoteVM's
// feature air-zone (for those that have it), kept current the same way and
// when that feature is set or removed.
#pragma once

#include <asio.hpp>

#include <map>
#include <memory>
#include <string>

#include "admin/qubesdb.hpp"
#include "admin/registry.hpp"

namespace aerie::admin {

class Lifecycle;

class Relays {
public:
    Relays(asio::io_context& io, Registry& registry, EventHub& events, Lifecycle& lifecycle);
    ~Relays();
    // At daemon start: the tags of every RemoteVM, the map of every qube
    // that runs (written whatever it held: the daemon may have died between
    // a change and its writing).
    void sync();

    // /remote/ entries of `relay`: local name -> remote name; and of every relay.
    static std::map<std::string, std::string> mapping(const Model& model, const std::string& relay);
    static std::map<std::string, std::map<std::string, std::string>> mappings(const Model& model);
    // /air-zone/ entries of every relay: local name -> zone.
    static std::map<std::string, std::map<std::string, std::string>> zones(const Model& model);

private:
    // What one relay's QubesDB holds.
    struct Published {
        std::map<std::string, std::string> remote, zones;
        bool operator==(const Published&) const = default;
    };
    void write(const std::string& relay, const QubesDb& db, Published wanted);
    void refresh(bool all_running);
    void retag();
    void publish_mappings(bool all_running);

    asio::io_context& io_;
    Registry& registry_;
    Model& model_;
    Lifecycle& lifecycle_;
    bool queued_ = false;  // a sync is posted
    // What each running qube's QubesDB holds, as last written.
    std::map<std::string, Published> published_;
    std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
};

}  // namespace aerie::admin
