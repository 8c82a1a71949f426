#include "admin/registry.hpp"

#include <algorithm>

#include "storage/pool.hpp"

namespace aerie::admin {

StoredQube to_stored(const Qube& qube) {
    return StoredQube{qube.uuid, qube.qid, qube.name, qube.klass, qube.properties, qube.features, qube.tags, qube.notes};
}

void Registry::stage_features(Store::Transaction& txn, const std::vector<FeatureChange>& changes) {
    for (const auto& change : changes) {
        if (change.value)
            txn.set_feature(change.qube->uuid, change.key, *change.value);
        else if (change.qube->features.count(change.key))
            txn.remove_feature(change.qube->uuid, change.key);
    }
}

void Registry::apply_features(const std::vector<FeatureChange>& changes) {
    for (const auto& change : changes) {
        Qube& qube = *change.qube;
        auto old = qube.features.find(change.key);
        if (change.value) {
            std::vector<std::pair<std::string, std::string>> kwargs = {{"feature", change.key},
                                                                        {"value", *change.value}};
            if (old != qube.features.end()) kwargs.emplace_back("oldvalue", old->second);
            events_.publish(qube.name, "domain-feature-pre-set:" + change.key, kwargs);
            qube.features[change.key] = *change.value;
            events_.publish(qube.name, "domain-feature-set:" + change.key, kwargs);
        } else if (old != qube.features.end()) {
            events_.publish(qube.name, "domain-feature-pre-delete:" + change.key, {{"feature", change.key}});
            qube.features.erase(old);
            events_.publish(qube.name, "domain-feature-delete:" + change.key, {{"feature", change.key}});
        }
    }
}

Qube& Registry::add_qube(Qube qube, const std::vector<FeatureChange>& also) {
    if (pool_) pool_->create(qube.uuid, qube.klass);
    try {
        Store::Transaction txn(store_);
        txn.add_qube(to_stored(qube));
        stage_features(txn, also);
        txn.commit();
    } catch (...) {
        if (pool_) pool_->remove(qube.uuid);
        throw;
    }
    std::string name = qube.name;
    model_.add(std::move(qube));
    events_.publish("", "domain-add", {{"vm", name}});
    apply_features(also);
    return *model_.find(name);
}

void Registry::remove_qube(std::string name) {
    Qube* qube = model_.find(name);
    if (!qube) return;
    std::string uuid = qube->uuid;
    Store::Transaction txn(store_);
    txn.remove_qube(uuid);
    txn.commit();
    model_.remove(name);
    if (pool_) {
        try {
            pool_->remove(uuid);
        } catch (const std::exception& e) {
            log("removing the volumes of " + name + ": " + e.what());
        }
    }
    remove_logs(name);
    events_.publish("", "domain-delete", {{"vm", name}});
}

void Registry::change_features(const std::vector<FeatureChange>& changes, Qube* tagged,
                               const std::vector<std::string>& tags) {
    commit(changes, tagged, tags, {});
}

void Registry::change_tags(Qube& qube, const std::vector<std::string>& add, const std::vector<std::string>& remove) {
    commit({}, &qube, add, remove);
}

void Registry::commit(const std::vector<FeatureChange>& changes, Qube* tagged, const std::vector<std::string>& add,
                      const std::vector<std::string>& remove) {
    // Only what changes, each once.
    std::vector<std::string> added, removed;
    auto keep = [](std::vector<std::string>& out, const std::string& tag, bool wanted) {
        if (wanted && std::find(out.begin(), out.end(), tag) == out.end()) out.push_back(tag);
    };
    if (tagged) {
        for (const auto& tag : add) keep(added, tag, !tagged->tags.count(tag));
        for (const auto& tag : remove) keep(removed, tag, tagged->tags.count(tag) > 0);
    }
    if (changes.empty() && added.empty() && removed.empty()) return;
    Store::Transaction txn(store_);
    stage_features(txn, changes);
    for (const auto& tag : removed) txn.remove_tag(tagged->uuid, tag);
    for (const auto& tag : added) txn.add_tag(tagged->uuid, tag);
    txn.commit();
    apply_features(changes);
    for (const auto& tag : removed) {
        tagged->tags.erase(tag);
        events_.publish(tagged->name, "domain-tag-delete:" + tag, {{"tag", tag}});
    }
    for (const auto& tag : added) {
        tagged->tags.insert(tag);
        events_.publish(tagged->name, "domain-tag-add:" + tag, {{"tag", tag}});
    }
}

}  // namespace aerie::admin
