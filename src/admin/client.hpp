// A small blocking client of the Admin API socket (qubesd's), for the qvm-*
// tools: one connection per call, like qubesadmin's QubesLocal. Replies are
// read as qubesadmin reads them: an exception reply becomes an AdminError
// carrying the Qubes exception class; no reply at all (the daemon refused the
// call) becomes QubesDaemonAccessError with qubesadmin's message.
#pragma once

#include <chrono>
#include <cstdint>
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
    // Whether qubesadmin's exception of this type is an instance of class
    // `cls` (its exception hierarchy: e.g. QubesVMNotRunningError is a
    // QubesVMNotStartedError, which is a QubesVMError). Every type is a
    // QubesException.
    bool is_instance_of(std::string_view cls) const;

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

// One event of an admin.Events stream. `subject` is empty for events of the
// system itself (e.g. connection-established).
struct Event {
    std::string subject;
    std::string name;
    std::vector<std::pair<std::string, std::string>> kwargs;
};

// An admin.Events stream: one connection that stays open, the daemon sending
// "1\0SUBJECT\0EVENT\0(KEY\0VALUE\0)*\0" for every event, the first one being
// connection-established (as qubesadmin's EventsDispatcher reads it).
class EventStream {
public:
    // Connects and sends the request; throws AdminError as AdminClient::call.
    EventStream(const std::string& socket_path, std::string_view dest);
    ~EventStream();
    EventStream(EventStream&& other) noexcept;
    EventStream& operator=(EventStream&&) = delete;
    EventStream(const EventStream&) = delete;
    EventStream& operator=(const EventStream&) = delete;

    // The next event, waiting until `deadline`; nullopt when it passed.
    // Throws AdminError when the stream ends or carries something else: an
    // exception reply, or a refusal (no reply: QubesDaemonAccessError).
    std::optional<Event> next(std::chrono::steady_clock::time_point deadline);

private:
    bool take_event(Event& out);
    int fd_ = -1;
    std::string buffer_;
    bool any_data_ = false;
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

    // --- lifecycle
    // admin.vm.CurrentState as KEY=VALUE pairs (mem, mem_static_max, cputime,
    // power_state).
    std::map<std::string, std::string> current_state(std::string_view vm) const;
    // QubesVM.get_power_state(): CurrentState's power_state, "NA" when the
    // qube is gone or the daemon refuses to say.
    std::string power_state(std::string_view vm) const;
    void start(std::string_view vm) const;
    // admin.vm.Shutdown with the argument qubesadmin sends: none, "force",
    // "wait" or "force+wait".
    void shutdown(std::string_view vm, bool force = false, bool wait = false) const;
    void kill(std::string_view vm) const;
    void pause(std::string_view vm) const;
    void unpause(std::string_view vm) const;
    void suspend(std::string_view vm) const;
    void resume(std::string_view vm) const;

    // --- volumes (admin.vm.volume.*; the argument is the volume's name)
    std::vector<std::string> volume_names(std::string_view vm) const;
    // admin.vm.volume.Info as KEY=VALUE lines (pool, vid, size, usage, rw,
    // source, path, save_on_stop, snap_on_start, revisions_to_keep,
    // ephemeral, is_outdated).
    std::map<std::string, std::string> volume_info(std::string_view vm, std::string_view volume) const;
    // admin.vm.volume.ListSnapshots, oldest first.
    std::vector<std::string> volume_revisions(std::string_view vm, std::string_view volume) const;
    void volume_revert(std::string_view vm, std::string_view volume, std::string_view revision) const;
    // admin.vm.volume.Set.PROPERTY (rw, revisions_to_keep, ephemeral).
    void volume_set(std::string_view vm, std::string_view volume, std::string_view property,
                    std::string_view value) const;
    void volume_resize(std::string_view vm, std::string_view volume, uint64_t size) const;

    // --- events: an admin.Events stream (all qubes' events when `vm` is
    // empty, else that qube's).
    EventStream events(std::string_view vm = {}) const;

private:
    std::string socket_path_;
};

}  // namespace aerie::admin
