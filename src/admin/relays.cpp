#include "admin/relays.hpp"

#include <iterator>

#include "admin/lifecycle.hpp"

namespace aerie::admin {

namespace {

bool relevant(std::string_view event) {
    for (std::string_view e : {"property-set:relayvm", "property-reset:relayvm", "property-set:remote_name",
                               "property-reset:remote_name", "property-set:name", "domain-add", "domain-delete"})
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
    lifecycle_.on_launch = [this](const Qube& qube, const QubesDb& db) {
        auto wanted = mapping(model_, qube.name);
        db.replace("/remote/", wanted);
        published_[qube.name] = std::move(wanted);
    };
}

Relays::~Relays() {
    *alive_ = false;
    lifecycle_.on_launch = nullptr;
}

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

// Written only where it changed: every qube added or removed (a disposable
// too) comes here, and most of them change no relay's map.
void Relays::publish_mappings(bool all_running) {
    auto all = mappings(model_);  // relay -> its map
    for (auto it = published_.begin(); it != published_.end();)
        it = model_.find(it->first) && lifecycle_.qubesdb(it->first) ? std::next(it) : published_.erase(it);
    for (const Qube* q : model_.qubes_by_name()) {
        auto wanted_it = all.find(q->name);
        const std::map<std::string, std::string> none;
        const auto& wanted = wanted_it == all.end() ? none : wanted_it->second;
        auto known = published_.find(q->name);
        if (!all_running && (known != published_.end() ? known->second == wanted : wanted.empty())) continue;
        auto db = lifecycle_.qubesdb(q->name);
        if (!db) continue;
        try {
            db->replace("/remote/", wanted);
            published_[q->name] = wanted;
        } catch (const std::exception& e) {
            registry_.log("QubesDB of " + q->name + ": " + e.what());
        }
    }
}

}  // namespace aerie::admin
