#include "admin/relays.hpp"

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
            sync();
        });
    });
    // A relay that starts finds its mapping there from the first moment.
    lifecycle_.on_launch = [this](const Qube& qube, const QubesDb& db) {
        db.replace("/remote/", mapping(model_, qube.name));
    };
}

Relays::~Relays() {
    *alive_ = false;
    lifecycle_.on_launch = nullptr;
}

std::map<std::string, std::string> Relays::mapping(const Model& model, const std::string& relay) {
    std::map<std::string, std::string> out;
    for (const Qube* q : model.qubes_by_name())
        if (q->is_remote() && model.value_text(q, "relayvm") == relay) {
            std::string remote = model.value_text(q, "remote_name");
            out[q->name] = remote.empty() ? q->name : remote;
        }
    return out;
}

void Relays::sync() {
    try {
        retag();
    } catch (const std::exception& e) {
        registry_.log(std::string("relayvm tags: ") + e.what());
    }
    publish_mappings();
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

void Relays::publish_mappings() {
    for (const Qube* q : model_.qubes_by_name()) {
        auto db = lifecycle_.qubesdb(q->name);
        if (!db) continue;
        try {
            db->replace("/remote/", mapping(model_, q->name));
        } catch (const std::exception& e) {
            registry_.log("QubesDB of " + q->name + ": " + e.what());
        }
    }
}

}  // namespace aerie::admin
