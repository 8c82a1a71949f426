#include "admin/client.hpp"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "admin/wire.hpp"

namespace aerie::admin {

namespace {

constexpr std::string_view kGlobalDest = "dom0";

AdminError communication_error(const std::string& message) {
    return AdminError("QubesDaemonCommunicationError", message);
}

// Python's str() of an OSError, which qubesadmin puts in its messages.
std::string os_error_text(int err) {
    return "[Errno " + std::to_string(err) + "] " + std::strerror(err);
}

class Socket {
public:
    Socket() : fd_(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) {}
    ~Socket() {
        if (fd_ >= 0) ::close(fd_);
    }
    Socket(const Socket&) = delete;
    Socket& operator=(const Socket&) = delete;
    int fd() const { return fd_; }
    // Hands the descriptor over to the caller.
    int release() {
        int fd = fd_;
        fd_ = -1;
        return fd;
    }

private:
    int fd_;
};

void connect_to(const Socket& sock, const std::string& path) {
    auto fail = [](int err) {
        return communication_error("Failed to connect to qubesd service: " + os_error_text(err));
    };
    if (sock.fd() < 0) throw fail(errno);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof addr.sun_path)
        throw communication_error("Failed to connect to qubesd service: AF_UNIX path too long");
    std::memcpy(addr.sun_path, path.data(), path.size());
    int rc;
    do {
        rc = ::connect(sock.fd(), reinterpret_cast<sockaddr*>(&addr), sizeof addr);
    } while (rc < 0 && errno == EINTR);
    if (rc < 0) throw fail(errno);
}

// False when the daemon stopped reading (it may still have answered).
bool send_all(const Socket& sock, std::string_view data) {
    while (!data.empty()) {
        ssize_t n = ::send(sock.fd(), data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return false;
        data.remove_prefix(static_cast<size_t>(n));
    }
    return true;
}

std::string read_to_eof(const Socket& sock) {
    std::string out;
    char buf[65536];
    for (;;) {
        ssize_t n = ::recv(sock.fd(), buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;  // a reset counts as the end: what came is what we judge
        out.append(buf, static_cast<size_t>(n));
    }
    return out;
}

std::vector<std::string> split_lines(std::string_view text) {
    std::vector<std::string> lines;
    while (!text.empty()) {
        size_t nl = text.find('\n');
        lines.emplace_back(text.substr(0, nl));
        if (nl == std::string_view::npos) break;
        text.remove_prefix(nl + 1);
    }
    return lines;
}

// GetAll escapes newlines and backslashes in values.
std::string unescape(std::string_view line) {
    std::string out;
    out.reserve(line.size());
    for (size_t i = 0; i < line.size(); ++i) {
        if (line[i] != '\\' || i + 1 == line.size()) {
            out.push_back(line[i]);
            continue;
        }
        char next = line[++i];
        out.push_back(next == 'n' ? '\n' : next);
    }
    return out;
}

std::string_view dest_or_global(std::string_view vm) {
    return vm.empty() ? kGlobalDest : vm;
}
std::string property_prefix(std::string_view vm) {
    return vm.empty() ? "admin.property." : "admin.vm.property.";
}

}  // namespace

bool AdminError::is_key_error() const {
    return type_ == "QubesVMNotFoundError" || type_ == "QubesFeatureNotFoundError" ||
           type_ == "QubesTagNotFoundError" || type_ == "QubesLabelNotFoundError" ||
           type_ == "DeviceAlreadyAttached" || type_ == "KeyError";
}

bool AdminError::is_instance_of(std::string_view cls) const {
    // qubesadmin.exc: each class and its base (QubesException at the top).
    static const std::map<std::string, std::string, std::less<>> kParent = {
        {"QubesVMError", "QubesException"},
        {"QubesVMInUseError", "QubesVMError"},
        {"QubesVMNotStartedError", "QubesVMError"},
        {"QubesVMNotRunningError", "QubesVMNotStartedError"},
        {"QubesVMNotPausedError", "QubesVMNotStartedError"},
        {"QubesVMNotSuspendedError", "QubesVMError"},
        {"QubesVMNotHaltedError", "QubesVMError"},
        {"QubesVMShutdownTimeoutError", "QubesVMError"},
        {"QubesNoTemplateError", "QubesVMError"},
        {"QubesPropertyValueError", "QubesValueError"},
        {"QubesDaemonAccessError", "QubesDaemonCommunicationError"},
        {"QubesPropertyAccessError", "QubesDaemonAccessError"},
    };
    if (cls == "QubesException") return true;
    std::string current = type_;
    for (int depth = 0; depth < 8; ++depth) {
        if (current == cls) return true;
        auto it = kParent.find(current);
        if (it == kParent.end()) return false;
        current = it->second;
    }
    return false;
}

bool AdminError::is_attribute_error() const {
    return type_ == "QubesNoSuchPropertyError" || type_ == "QubesPropertyAccessError" ||
           type_ == "AttributeError";
}

PropertyValue parse_property_value(std::string_view text) {
    constexpr std::string_view kDefault = "default=", kType = "type=";
    size_t sp1 = text.find(' ');
    std::string_view def = text.substr(0, sp1);
    if (def.substr(0, kDefault.size()) != kDefault || sp1 == std::string_view::npos)
        throw communication_error("Invalid property format received");
    std::string_view rest = text.substr(sp1 + 1);
    size_t sp2 = rest.find(' ');
    std::string_view type = rest.substr(0, sp2);
    if (type.substr(0, kType.size()) != kType)
        throw communication_error("Invalid type prefix received: " + std::string(type));
    PropertyValue v;
    v.is_default = def.substr(kDefault.size()) == "True";
    v.type = std::string(type.substr(kType.size()));
    if (sp2 != std::string_view::npos) v.value = std::string(rest.substr(sp2 + 1));
    return v;
}

std::map<std::string, PropertyValue> parse_all_properties(std::string_view text) {
    std::map<std::string, PropertyValue> out;
    for (const auto& raw : split_lines(text)) {
        std::string line = unescape(raw);
        size_t sp = line.find(' ');
        if (sp == std::string::npos) throw communication_error("Invalid property format received");
        out[line.substr(0, sp)] = parse_property_value(std::string_view(line).substr(sp + 1));
    }
    return out;
}

std::string AdminClient::default_socket_path() {
    const char* env = std::getenv("QUBESD_SOCKET");
    return env && *env ? env : std::string(kDefaultQubesdSocket);
}

AdminClient::AdminClient(std::string socket_path) : socket_path_(std::move(socket_path)) {}

std::string AdminClient::call(std::string_view dest, std::string_view method, std::string_view arg,
                              std::string_view payload) const {
    Socket sock;
    connect_to(sock, socket_path_);
    ApiRequest req{std::string(method), std::string(arg), "dom0", std::string(dest), std::string(payload)};
    if (send_all(sock, encode_request(req))) ::shutdown(sock.fd(), SHUT_WR);
    std::string data = read_to_eof(sock);
    if (data.empty()) throw AdminError("QubesDaemonAccessError", std::string(kEmptyResponseMessage));
    auto reply = parse_reply(data);
    if (!reply) throw communication_error("Invalid response format");
    if (reply->kind == ApiReply::Kind::Exception) throw AdminError(reply->exc_type, reply->message);
    return std::move(reply->body);
}

std::vector<QubeInfo> AdminClient::list_qubes() const {
    std::vector<QubeInfo> out;
    for (const auto& line : split_lines(call(kGlobalDest, "admin.vm.List"))) {
        if (line.empty()) continue;
        QubeInfo q;
        size_t sp = line.find(' ');
        q.name = line.substr(0, sp);
        std::string_view rest = sp == std::string::npos ? "" : std::string_view(line).substr(sp + 1);
        while (!rest.empty()) {
            std::string_view field = rest.substr(0, rest.find(' '));
            rest.remove_prefix(std::min(rest.size(), field.size() + 1));
            size_t eq = field.find('=');
            if (eq == std::string_view::npos) continue;
            if (field.substr(0, eq) == "class") q.klass = std::string(field.substr(eq + 1));
            if (field.substr(0, eq) == "state") q.state = std::string(field.substr(eq + 1));
        }
        out.push_back(std::move(q));
    }
    return out;
}

void AdminClient::create_qube(std::string_view klass, std::string_view template_name, std::string_view name,
                              std::string_view label) const {
    std::string payload = "name=" + std::string(name) + " label=" + std::string(label);
    call(kGlobalDest, "admin.vm.Create." + std::string(klass), template_name, payload);
}

void AdminClient::remove_qube(std::string_view name) const {
    call(name, "admin.vm.Remove");
}

std::vector<std::string> AdminClient::property_names(std::string_view vm) const {
    auto lines = split_lines(call(dest_or_global(vm), property_prefix(vm) + "List"));
    std::erase(lines, std::string());
    return lines;
}

PropertyValue AdminClient::get_property(std::string_view vm, std::string_view name) const {
    return parse_property_value(call(dest_or_global(vm), property_prefix(vm) + "Get", name));
}

std::optional<std::map<std::string, PropertyValue>> AdminClient::get_all_properties(
    std::string_view vm) const {
    try {
        return parse_all_properties(call(dest_or_global(vm), property_prefix(vm) + "GetAll"));
    } catch (const AdminError& e) {
        if (e.is_access_error()) return std::nullopt;
        throw;
    }
}

void AdminClient::set_property(std::string_view vm, std::string_view name, std::string_view value) const {
    call(dest_or_global(vm), property_prefix(vm) + "Set", name, value);
}

void AdminClient::reset_property(std::string_view vm, std::string_view name) const {
    call(dest_or_global(vm), property_prefix(vm) + "Reset", name);
}

std::string AdminClient::property_help(std::string_view vm, std::string_view name) const {
    return call(dest_or_global(vm), property_prefix(vm) + "Help", name);
}

std::vector<std::string> AdminClient::feature_names(std::string_view vm) const {
    auto lines = split_lines(call(vm, "admin.vm.feature.List"));
    std::erase(lines, std::string());
    return lines;
}

std::optional<std::string> AdminClient::get_feature(std::string_view vm, std::string_view name) const {
    try {
        return call(vm, "admin.vm.feature.Get", name);
    } catch (const AdminError& e) {
        if (e.type() == "QubesFeatureNotFoundError") return std::nullopt;
        throw;
    }
}

void AdminClient::set_feature(std::string_view vm, std::string_view name, std::string_view value) const {
    call(vm, "admin.vm.feature.Set", name, value);
}

void AdminClient::remove_feature(std::string_view vm, std::string_view name) const {
    call(vm, "admin.vm.feature.Remove", name);
}

std::vector<std::string> AdminClient::tags(std::string_view vm) const {
    auto lines = split_lines(call(vm, "admin.vm.tag.List"));
    std::erase(lines, std::string());
    return lines;
}

bool AdminClient::has_tag(std::string_view vm, std::string_view tag) const {
    return call(vm, "admin.vm.tag.Get", tag) == "1";
}

void AdminClient::add_tag(std::string_view vm, std::string_view tag) const {
    call(vm, "admin.vm.tag.Set", tag);
}

void AdminClient::remove_tag(std::string_view vm, std::string_view tag) const {
    call(vm, "admin.vm.tag.Remove", tag);
}

std::vector<std::string> AdminClient::label_names() const {
    auto lines = split_lines(call(kGlobalDest, "admin.label.List"));
    std::erase(lines, std::string());
    return lines;
}

LabelInfo AdminClient::get_label(std::string_view name) const {
    LabelInfo label;
    label.name = std::string(name);
    label.color = call(kGlobalDest, "admin.label.Get", name);
    std::string index = call(kGlobalDest, "admin.label.Index", name);
    try {
        label.index = std::stoi(index);
    } catch (const std::exception&) {
        throw communication_error("Invalid label index received: " + index);
    }
    return label;
}

void AdminClient::create_label(std::string_view name, std::string_view color) const {
    call(kGlobalDest, "admin.label.Create", name, color);
}

void AdminClient::remove_label(std::string_view name) const {
    call(kGlobalDest, "admin.label.Remove", name);
}

namespace {

// "KEY=VALUE" words (CurrentState) or lines (volume Info) into a map.
std::map<std::string, std::string> key_values(std::string_view text, char separator) {
    std::map<std::string, std::string> out;
    while (!text.empty()) {
        size_t end = text.find(separator);
        std::string_view item = text.substr(0, end);
        text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
        if (item.empty()) continue;
        size_t eq = item.find('=');
        if (eq == std::string_view::npos)
            throw communication_error("Invalid response format: " + std::string(item));
        out[std::string(item.substr(0, eq))] = std::string(item.substr(eq + 1));
    }
    return out;
}

std::vector<std::string> nonempty_lines(std::string_view text) {
    auto lines = split_lines(text);
    std::erase(lines, std::string());
    return lines;
}

}  // namespace

std::map<std::string, std::string> AdminClient::current_state(std::string_view vm) const {
    return key_values(call(vm, "admin.vm.CurrentState"), ' ');
}

std::string AdminClient::power_state(std::string_view vm) const {
    try {
        auto state = current_state(vm);
        auto it = state.find("power_state");
        if (it == state.end()) throw communication_error("Invalid response format: no power_state");
        return it->second;
    } catch (const AdminError& e) {
        if (e.is_access_error() || e.type() == "QubesVMNotFoundError") return "NA";
        throw;
    }
}

void AdminClient::start(std::string_view vm) const {
    call(vm, "admin.vm.Start");
}

void AdminClient::shutdown(std::string_view vm, bool force, bool wait) const {
    std::string arg = force && wait ? "force+wait" : force ? "force" : wait ? "wait" : "";
    call(vm, "admin.vm.Shutdown", arg);
}

void AdminClient::kill(std::string_view vm) const {
    call(vm, "admin.vm.Kill");
}

void AdminClient::pause(std::string_view vm) const {
    call(vm, "admin.vm.Pause");
}

void AdminClient::unpause(std::string_view vm) const {
    call(vm, "admin.vm.Unpause");
}

void AdminClient::suspend(std::string_view vm) const {
    call(vm, "admin.vm.Suspend");
}

void AdminClient::resume(std::string_view vm) const {
    call(vm, "admin.vm.Resume");
}

std::vector<std::string> AdminClient::volume_names(std::string_view vm) const {
    return nonempty_lines(call(vm, "admin.vm.volume.List"));
}

std::map<std::string, std::string> AdminClient::volume_info(std::string_view vm, std::string_view volume) const {
    return key_values(call(vm, "admin.vm.volume.Info", volume), '\n');
}

std::vector<std::string> AdminClient::volume_revisions(std::string_view vm, std::string_view volume) const {
    return nonempty_lines(call(vm, "admin.vm.volume.ListSnapshots", volume));
}

void AdminClient::volume_revert(std::string_view vm, std::string_view volume, std::string_view revision) const {
    call(vm, "admin.vm.volume.Revert", volume, revision);
}

void AdminClient::volume_set(std::string_view vm, std::string_view volume, std::string_view property,
                             std::string_view value) const {
    call(vm, "admin.vm.volume.Set." + std::string(property), volume, value);
}

void AdminClient::volume_resize(std::string_view vm, std::string_view volume, uint64_t size) const {
    call(vm, "admin.vm.volume.Resize", volume, std::to_string(size));
}

EventStream AdminClient::events(std::string_view vm) const {
    return EventStream(socket_path_, vm.empty() ? kGlobalDest : vm);
}

EventStream::EventStream(const std::string& socket_path, std::string_view dest) {
    Socket sock;
    connect_to(sock, socket_path);
    ApiRequest req{"admin.Events", "", "dom0", std::string(dest), ""};
    if (send_all(sock, encode_request(req))) ::shutdown(sock.fd(), SHUT_WR);
    fd_ = sock.release();
}

EventStream::~EventStream() {
    if (fd_ >= 0) ::close(fd_);
}

EventStream::EventStream(EventStream&& other) noexcept
    : fd_(other.fd_), buffer_(std::move(other.buffer_)), any_data_(other.any_data_) {
    other.fd_ = -1;
}

// One complete event from the front of the buffer, if there is one.
bool EventStream::take_event(Event& out) {
    std::string_view data = buffer_;
    size_t pos = 0;
    auto field = [&](std::string& value) {
        size_t nul = data.find('\0', pos);
        if (nul == std::string_view::npos) return false;
        value.assign(data.substr(pos, nul - pos));
        pos = nul + 1;
        return true;
    };
    std::string kind;
    if (!field(kind)) return false;
    if (kind != "1") {
        // An exception reply instead of events ("2\0TYPE\0TRACEBACK\0MESSAGE\0").
        if (kind == "2") {
            auto reply = parse_reply(data);
            if (reply) throw AdminError(reply->exc_type, reply->message);
            return false;  // not complete yet
        }
        throw communication_error("Non-event received on events connection: " + kind);
    }
    Event event;
    if (!field(event.subject) || !field(event.name)) return false;
    for (;;) {
        std::string key, value;
        if (!field(key)) return false;
        if (key.empty()) break;
        if (!field(value)) return false;
        event.kwargs.emplace_back(std::move(key), std::move(value));
    }
    buffer_.erase(0, pos);
    out = std::move(event);
    return true;
}

std::optional<Event> EventStream::next(std::chrono::steady_clock::time_point deadline) {
    for (;;) {
        Event event;
        if (take_event(event)) return event;
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) return std::nullopt;
        pollfd pfd{fd_, POLLIN, 0};
        int rc = ::poll(&pfd, 1, static_cast<int>(std::min<long long>(left.count(), 60000)));
        if (rc < 0 && errno == EINTR) continue;
        if (rc < 0) throw communication_error("Failed to read events: " + os_error_text(errno));
        if (rc == 0) continue;
        char buf[65536];
        ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            if (!any_data_) throw AdminError("QubesDaemonAccessError", std::string(kEmptyResponseMessage));
            if (!buffer_.empty() && buffer_[0] == '2') {
                auto reply = parse_reply(buffer_);
                if (reply) throw AdminError(reply->exc_type, reply->message);
            }
            throw communication_error("Events connection closed");
        }
        any_data_ = true;
        buffer_.append(buf, static_cast<size_t>(n));
    }
}

}  // namespace aerie::admin
