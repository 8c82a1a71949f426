// The admin daemon's model of the system: every qube, the global properties
// and the labels. Pure: it answers questions (a property's value and whether
// it is the default, who depends on a qube, the system info for the policy
// engine) and checks proposed changes; the Admin API layer persists a change
// first and then applies it here.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "admin/labels.hpp"
#include "admin/properties.hpp"
#include "admin/qube.hpp"
#include "admin/store.hpp"
#include "backend/host_budget.hpp"

namespace aerie::admin {

// A property's value as the Admin API reports it.
struct PropertyValue {
    bool has_value = false;  // false: unset and without a default
    bool is_default = true;
    std::string text;        // "" for a vm property set to None
};

class Model {
public:
    static constexpr int kMaxQid = 65534;

    Model();  // dom0 only
    // Replaces everything with a stored state (dom0 is added if missing).
    void load(const StoredState& state);

    // --- qubes
    // By name, or by "uuid:<uuid>".
    const Qube* find(std::string_view name_or_uuid) const;
    Qube* find(std::string_view name_or_uuid);
    const Qube& admin_vm() const { return *find("dom0"); }
    std::vector<const Qube*> qubes_by_name() const;
    size_t size() const { return by_name_.size(); }
    int next_free_qid() const;  // 0 when none is left

    void add(Qube qube);
    void remove(std::string_view name);
    void rename(std::string_view old_name, const std::string& new_name);  // updates references too

    // --- properties
    const std::vector<PropertyDef>& properties_of(const Qube& qube) const;
    // `qube` nullptr: the global holder.
    PropertyValue get(const Qube* qube, const PropertyDef& def) const;
    // The default value (nullopt: none).
    std::optional<std::string> default_of(const Qube* qube, const PropertyDef& def) const;
    // The effective value of a vm-typed or other property as text, "" if none.
    std::string value_text(const Qube* qube, std::string_view property) const;
    // Checks and normalises a new value from the wire; throws ApiError.
    std::string sanitize(const Qube* qube, const PropertyDef& def, std::string_view raw) const;
    void set(Qube* qube, const std::string& property, const std::string& value);
    void reset(Qube* qube, const std::string& property);
    const std::map<std::string, std::string>& globals() const { return globals_; }
    // The defaults of memory, maxmem and vcpus (after the template's value):
    // Qubes' own unless the daemon sizes them to its host.
    const backend::QubeSizeDefaults& size_defaults() const { return size_defaults_; }
    void set_size_defaults(const backend::QubeSizeDefaults& d) { size_defaults_ = d; }

    // "holder.property" for every reference to `qube` through a vm property
    // (set or default) of another qube or of the globals ("global.default_netvm").
    std::vector<std::string> dependants(const Qube& qube) const;
    // The explicitly set vm properties naming `name` (holder nullptr: a
    // global), which a rename rewrites.
    std::vector<std::pair<const Qube*, std::string>> explicit_references(std::string_view name) const;

    // The uuids of the templates a qube's volumes come from, nearest first
    // (a DispVM: its disposable template, then that one's template).
    std::vector<std::string> template_chain(const Qube& qube) const;

    // --- features
    // check_with_*: the qube's own value, else along the template chain /
    // netvm chain / dom0, as Qubes does. nullopt when nowhere set.
    std::optional<std::string> feature_check_with(const Qube& qube, std::string_view feature,
                                                  bool template_chain, bool netvm_chain,
                                                  bool admin_vm) const;

    // --- labels
    LabelSet& labels() { return labels_; }
    const LabelSet& labels() const { return labels_; }
    bool label_in_use(int index) const;

    // --- presentation
    std::string icon(const Qube& qube) const;
    // internal.GetSystemInfo's JSON text.
    std::string system_info_json() const;

private:
    std::map<std::string, std::unique_ptr<Qube>, std::less<>> by_name_;
    std::map<std::string, Qube*, std::less<>> by_uuid_;
    std::map<std::string, std::string> globals_;
    LabelSet labels_;
    backend::QubeSizeDefaults size_defaults_;
};

}  // namespace aerie::admin
