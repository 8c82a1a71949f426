#include "admin/client.hpp"

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

}  // namespace aerie::admin
