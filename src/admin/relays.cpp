#include "admin/relays.hpp"

#include <iterator>

#include "admin/lifecycle.hpp"

namespace aerie::admin {

namespace {

bool relevant(std::string_view event) {
    for (std::string_view e : {"property-set:relayvm", "property-reset:relayvm", "property-set:remote_name",
                               "property-reset:remote_name", "property-set:name", "domain-add", "domain-delete",
                               "domain-feature-set:air-zone", "domain-feature-delete:air-zone"})
        if (event == e) return true;
    return false;
}

}  // namespace

Relays::Relays(asio::io_context& io, Registry& registry, EventHub& events, Lifecycle& lifecycle)
    : io_(io), registry_(registry), model_(registry.model()), lifecycle_(lifecycle) {
    events.observe([this, alive = alive_](std::string_view, std::string_view event, const EventHub::Kwargs&) {
        if (!*alive || !relevant(event) || queued_) return;
        // One sync for a burst of changes, after the change is complete.
        queued_ = true;
        asio::post(io_, [this, alive] {
            if (!*alive) return;
            queued_ = false;
            refresh(false);
        });
    });
    // A relay that starts finds its mapping there from the first moment.
    lifecycle_.on_launch.push_back([this, alive = alive_](const Qube& qube, const QubesDb& db) {
        if (!*alive) return;
        auto zone_maps = zones(model_);
        write(qube.name, db, {mapping(model_, qube.name), zone_maps[qube.name]});
    });
}

Relays::~Relays() { *alive_ = false; }

std::map<std::string, std::map<std::string, std::string>> Relays::mappings(const Model& model) {
    std::map<std::string, std::map<std::string, std::string>> out;
    for (const Qube* q : model.qubes_by_name()) {
        if (!q->is_remote()) continue;
        std::string relay = model.value_text(q, "relayvm");
        if (relay.empty()) continue;
        std::string remote = model.value_text(q, "remote_name");
        out[relay][q->name] = remote.empty() ? q->name : remote;
    }
    return out;
}

std::map<std::string, std::map<std::string, std::string>> Relays::zones(const Model& model) {
    std::map<std::string, std::map<std::string, std::string>> out;
    for (const Qube* q : model.qubes_by_name()) {
        if (!q->is_remote()) continue;
        std::string relay = model.value_text(q, "relayvm");
        auto zone = q->features.find("air-zone");
        if (!relay.empty() && zone != q->features.end()) out[relay][q->name] = zone->second;
    }
    return out;
}

std::map<std::string, std::string> Relays::mapping(const Model& model, const std::string& relay) {
    auto all = mappings(model);
    auto it = all.find(relay);
    return it == all.end() ? std::map<std::string, std::string>() : it->second;
}

void Relays::sync() { refresh(true); }

void Relays::refresh(bool all_running) {
    try {
        retag();
    } catch (const std::exception& e) {
        registry_.log(std::string("relayvm tags: ") + e.what());
    }
    publish_mappings(all_running);
}

void Relays::retag() {
    for (const Qube* q : model_.qubes_by_name()) {
        if (!q->is_remote()) continue;
        Qube* remote = model_.find(q->name);
        std::string relay = model_.value_text(remote, "relayvm");
        std::string wanted = relay.empty() ? "" : "relayvm-" + relay;
        std::vector<std::string> stale;
        for (const auto& tag : remote->tags)
            if (tag.rfind("relayvm-", 0) == 0 && tag != wanted) stale.push_back(tag);
        std::vector<std::string> add;
        if (!wanted.empty() && !remote->tags.count(wanted)) add.push_back(wanted);
        if (!stale.empty() || !add.empty()) registry_.change_tags(*remote, add, stale);
    }
}

void Relays::write(const std::string& relay, const QubesDb& db, Published wanted) {
    db.replace("/remote/", wanted.remote);
    db.replace("/air-zone/", wanted.zones);
    published_[relay] = std::move(wanted);
}

// Written only where it changed: every qube added or removed (a disposable
// too) comes here, and most of them change no relay's map.
void Relays::publish_mappings(bool all_running) {
    auto remote = mappings(model_);  // relay -> its map
    auto zone_maps = zones(model_);
    for (auto it = published_.begin(); it != published_.end();)
        it = model_.find(it->first) && lifecycle_.qubesdb(it->first) ? std::next(it) : published_.erase(it);
    for (const Qube* q : model_.qubes_by_name()) {
        Published wanted{remote[q->name], zone_maps[q->name]};
        auto known = published_.find(q->name);
        if (!all_running && (known != published_.end() ? known->second == wanted : wanted == Published{})) continue;
        auto db = lifecycle_.qubesdb(q->name);
        if (!db) continue;
        try {
            write(q->name, *db, std::move(wanted));
        } catch (const std::exception& e) {
            registry_.log("QubesDB of " + q->name + ": " + e.what());
        }
    }
}

}  // namespace aerie::admin
