// Property definitions: for each qube class (and for the global "Qubes"
// holder), which properties exist, their Admin API type, how their default is
// found (a constant, a global property, the template's value, or computed)
// and how a new value is checked. The facts follow qubes-core-admin.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aerie::admin {

class Model;
struct Qube;

// The type word admin.vm.property.Get shows.
enum class PropType { Bool, Int, Str, Label, Vm };
std::string_view type_name(PropType type);

// Where a property's default comes from.
struct DefaultRule {
    enum class Kind {
        None,            // no default: reading an unset one gives no value
        Const,           // `value`
        Global,          // the global property `value`
        TemplateOr,      // the template's value of the same property, else `fallback`
        Computed,        // `compute`
    } kind = Kind::None;
    std::string value;
    std::shared_ptr<DefaultRule> fallback;  // TemplateOr
    // nullopt: no value
    std::function<std::optional<std::string>(const Model&, const Qube*)> compute;
};

// A Qubes exception a check raises: its class name and message.
struct Refusal {
    std::string type;
    std::string message;
};

struct PropertyDef {
    std::string name;
    PropType type = PropType::Str;
    DefaultRule default_rule;
    bool writable = true;
    bool allow_none = false;  // vm properties that may be empty
    // Extra check of a sanitised value (the property's setter in Qubes): the
    // exception it raises, nullopt if fine.
    std::function<std::optional<Refusal>(const Model&, const Qube*, const std::string&)> check;
    std::string help;
};

// The properties of a class, sorted by name; nullptr for an unknown class.
const std::vector<PropertyDef>* class_properties(std::string_view klass);
const std::vector<PropertyDef>& global_properties();
const PropertyDef* find_property(const std::vector<PropertyDef>& list, std::string_view name);

// Parses a boolean as Qubes does (0/no/false/off, 1/yes/true/on, any case);
// nullopt when it is none of them.
std::optional<bool> parse_bool(std::string_view text);
// Parses an integer as Python's int() accepts it (surrounding whitespace, a
// sign); nullopt otherwise or when out of range.
std::optional<long long> parse_int(std::string_view text);

}  // namespace aerie::admin
