// Durable changes the admin daemon makes, for an Admin API call or on its
// own (disposables, preloading): each is stored first, in one transaction,
// then applied to the model, then announced with qubesd's events. A crash at
// any point leaves either the old state or the new one on disk.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "admin/model.hpp"
#include "admin/server.hpp"
#include "admin/store.hpp"

namespace aerie::storage {
class FilePool;
}

namespace aerie::admin {

// A feature to set (value) or remove (nullopt) on a qube.
struct FeatureChange {
    Qube* qube;
    std::string key;
    std::optional<std::string> value;
};

class Registry {
public:
    Registry(Model& model, Store& store, EventHub& events) : model_(model), store_(store), events_(events) {}
    void set_pool(storage::FilePool* pool) { pool_ = pool; }
    storage::FilePool* pool() const { return pool_; }
    Model& model() { return model_; }

    // A new qube: its volumes first (a crash before the record leaves an
    // orphan folder, which aeried removes at start), then its record, with
    // `also` in the same transaction. Publishes domain-add (and the feature
    // events of `also`). Returns the qube in the model.
    Qube& add_qube(Qube qube, const std::vector<FeatureChange>& also = {});
    // The record, the model entry and the volumes; publishes domain-delete.
    // The qube must not run.
    void remove_qube(std::string name);  // by value: callers pass the qube's own name
    // Features set and removed, and tags added to `tagged`, in one
    // transaction; a removal of a feature that is not there is skipped.
    // Publishes domain-feature-set:KEY / domain-feature-delete:KEY and
    // domain-tag-add:TAG for each.
    void change_features(const std::vector<FeatureChange>& changes, Qube* tagged = nullptr,
                         const std::vector<std::string>& tags = {});

    // Tags added and removed in one transaction (domain-tag-add /
    // domain-tag-delete for each that changes).
    void change_tags(Qube& qube, const std::vector<std::string>& add, const std::vector<std::string>& remove);

    std::function<void(const std::string&)> log = [](const std::string&) {};
    // Called with a removed qube's name: its logs go with it.
    std::function<void(const std::string&)> remove_logs = [](const std::string&) {};

private:
    void commit(const std::vector<FeatureChange>& changes, Qube* tagged, const std::vector<std::string>& add,
                const std::vector<std::string>& remove);
    void stage_features(Store::Transaction& txn, const std::vector<FeatureChange>& changes);
    void apply_features(const std::vector<FeatureChange>& changes);

    Model& model_;
    Store& store_;
    EventHub& events_;
    storage::FilePool* pool_ = nullptr;
};

StoredQube to_stored(const Qube& qube);

}  // namespace aerie::admin
