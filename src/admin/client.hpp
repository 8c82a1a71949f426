// A small blocking client of the Admin API socket (qubesd's), for the qvm-*
// tools: one connection per call, like qubesadmin's QubesLocal. Replies are
// read as qubesadmin reads them: an exception reply becomes an AdminError
// carrying the Qubes exception class; no reply at all (the daemon refused the
// call) becomes QubesDaemonAccessError with qubesadmin's message.
#pragma once

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace aerie::admin {

inline constexpr std::string_view kDefaultQubesdSocket = "/var/run/qubesd.sock";
inline constexpr std::string_view kEmptyResponseMessage =
    "Got empty response from qubesd. See journalctl in dom0 for details.";

class AdminError : public std::runtime_error {
public:
    AdminError(std::string type, const std::string& message)
        : std::runtime_error(message), type_(std::move(type)) {}
    // The Qubes exception class name, e.g. "QubesVMNotFoundError".
    const std::string& type() const { return type_; }
    // The classes qubesadmin also derives from KeyError (a lookup that found
    // nothing) and from AttributeError (no such property, or no access to it).
    bool is_key_error() const;
    bool is_attribute_error() const;
    // The daemon closed the connection without a reply.
    bool is_access_error() const { return type_ == "QubesDaemonAccessError"; }

private:
    std::string type_;
};

struct QubeInfo {
    std::string name;
    std::string klass;  // "AppVM", ...
    std::string state;  // "Halted", "Running", ...
};

// One "default=True|False type=TYPE VALUE" answer.
struct PropertyValue {
    bool is_default = true;
    std::string type;  // "str", "bool", "int", "vm", "label", ...
    std::string value;

    // qubesadmin's reading of an empty value: an int or bool without one is
    // unset (AttributeError); a vm or label without one is None.
    bool unset() const { return value.empty() && (type == "int" || type == "bool"); }
    bool is_none() const { return value.empty() && (type == "vm" || type == "label"); }
};

// Parses a property.Get answer; throws AdminError (QubesDaemonCommunicationError)
// when it is not one.
PropertyValue parse_property_value(std::string_view text);
// Parses a property.GetAll answer: "NAME default=... type=... VALUE" lines,
// values with "\n" and "\\" escaped.
std::map<std::string, PropertyValue> parse_all_properties(std::string_view text);

struct LabelInfo {
    std::string name;
    int index = 0;
    std::string color;  // "0xRRGGBB"
};

class AdminClient {
public:
    // $QUBESD_SOCKET, else /var/run/qubesd.sock.
    static std::string default_socket_path();

    explicit AdminClient(std::string socket_path = default_socket_path());

    // One request from dom0; returns the success body. Throws AdminError.
    std::string call(std::string_view dest, std::string_view method, std::string_view arg = {},
                     std::string_view payload = {}) const;

    // --- qubes
    std::vector<QubeInfo> list_qubes() const;  // in the daemon's order
    void create_qube(std::string_view klass, std::string_view template_name, std::string_view name,
                     std::string_view label) const;
    void remove_qube(std::string_view name) const;

    // --- properties; an empty `vm` means the global properties
    std::vector<std::string> property_names(std::string_view vm) const;
    PropertyValue get_property(std::string_view vm, std::string_view name) const;
    // nullopt when the daemon refuses GetAll (callers fall back to Get).
    std::optional<std::map<std::string, PropertyValue>> get_all_properties(std::string_view vm) const;
    void set_property(std::string_view vm, std::string_view name, std::string_view value) const;
    void reset_property(std::string_view vm, std::string_view name) const;
    std::string property_help(std::string_view vm, std::string_view name) const;

    // --- features
    std::vector<std::string> feature_names(std::string_view vm) const;
    // nullopt when the qube does not have it.
    std::optional<std::string> get_feature(std::string_view vm, std::string_view name) const;
    void set_feature(std::string_view vm, std::string_view name, std::string_view value) const;
    void remove_feature(std::string_view vm, std::string_view name) const;

    // --- tags
    std::vector<std::string> tags(std::string_view vm) const;
    bool has_tag(std::string_view vm, std::string_view tag) const;
    void add_tag(std::string_view vm, std::string_view tag) const;
    void remove_tag(std::string_view vm, std::string_view tag) const;

    // --- labels
    std::vector<std::string> label_names() const;
    LabelInfo get_label(std::string_view name) const;
    void create_label(std::string_view name, std::string_view color) const;
    void remove_label(std::string_view name) const;

private:
    std::string socket_path_;
};

}  // namespace aerie::admin
