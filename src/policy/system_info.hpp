// What the policy engine knows of the qubes: the system info of Qubes'
// internal.GetSystemInfo ({"domains": {NAME: {...}}}), parsed once into
// typed records with a uuid index.
#pragma once

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace aerie::policy {

struct Domain {
    std::string name;
    std::string type;  // AdminVM, AppVM, TemplateVM, StandaloneVM, DispVM, RemoteVM
    std::vector<std::string> tags;
    std::string uuid;
    std::string power_state = "Halted";
    std::optional<std::string> default_dispvm;
    bool template_for_dispvms = false;
    bool internal = false;
    std::string icon;
    std::string label;
    std::optional<std::string> guivm;
    std::optional<std::string> relayvm;
    std::optional<std::string> transport_rpc;

    bool has_tag(std::string_view tag) const;
    bool is_admin() const { return type == "AdminVM"; }
};

class SystemInfoError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class SystemInfo {
public:
    SystemInfo();  // holds dom0 only

    // Parses the JSON text; throws SystemInfoError naming what is wrong.
    // A missing dom0 entry is added (every system has one).
    static SystemInfo from_json(std::string_view json_text);
    std::string to_json() const;

    void add(Domain domain);  // replaces a domain of the same name

    // Looks a qube up by name or by "uuid:<UUID>".
    const Domain* find(std::string_view name_or_uuid) const;
    const Domain& dom0() const;
    const std::map<std::string, Domain, std::less<>>& domains() const { return domains_; }

private:
    std::map<std::string, Domain, std::less<>> domains_;
    std::unordered_map<std::string, std::string> by_uuid_;
};

}  // namespace aerie::policy
