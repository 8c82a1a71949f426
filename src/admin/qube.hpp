// One qube as the admin daemon knows it: class, identity, the properties set
// on it (the rest are at their defaults), features, tags, notes and its
// power state.
#pragma once

#include <map>
#include <set>
#include <string>
#include <string_view>

namespace aerie::admin {

inline constexpr std::string_view kAdminVmUuid = "00000000-0000-0000-0000-000000000000";

// The qube classes, named as Qubes names them (admin.vmclass.List order).
inline constexpr std::string_view kQubeClasses[] = {"AdminVM", "AppVM",    "DispVM",
                                                     "RemoteVM", "StandaloneVM", "TemplateVM"};
bool is_qube_class(std::string_view name);

struct Qube {
    std::string klass;
    std::string name;
    std::string uuid;
    int qid = 0;
    std::map<std::string, std::string> properties;  // explicitly set, as text ("" = None for vm)
    std::map<std::string, std::string> features;
    std::set<std::string> tags;
    std::string notes;
    std::string power_state = "Halted";
    // When it was last started (seconds since the epoch; 0: not known or not
    // running). Not stored: Qubes reads it from the running system too.
    double start_time = 0;

    bool is_admin() const { return klass == "AdminVM"; }
    bool is_remote() const { return klass == "RemoteVM"; }
    bool is_halted() const { return power_state == "Halted"; }
    // Classes with a `template` property.
    bool has_template() const { return klass == "AppVM" || klass == "DispVM"; }
};

// Qubes' name rule (qubes.vm.validate_name): a letter, then letters, digits,
// '_' or '-' (Aerie refuses the dots Qubes allows); at most 31 characters;
// not "none", "default", "Domain-0" or ending in "-dm".
// The Qubes exception an invalid name raises, as validate_name words it:
// checked for a property `prop` being set, the first three rules raise
// QubesPropertyValueError naming it; otherwise (and for the other rules)
// QubesValueError. `type` is empty when the name is fine.
struct NameError {
    std::string type, message;
};
NameError qube_name_error(std::string_view name, std::string_view prop = {});
// The message of qube_name_error(name), empty when the name is fine.
std::string invalid_qube_name_reason(std::string_view name);
// A random (version 4) UUID, lowercase.
std::string new_uuid();
// Qubes' tag rule: [A-Za-z0-9_-]+.
bool is_valid_tag(std::string_view tag);

}  // namespace aerie::admin
