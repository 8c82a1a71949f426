#include "qrexec/service_config.hpp"

#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <set>

#include "qrexec/protocol.hpp"

extern char** environ;

namespace aerie::qrexec {

namespace {

constexpr std::string_view kRpcPrefix = "QUBESRPC";
constexpr std::string_view kNoguiPrefix = "nogui:";

void set_error(std::string* error, std::string message) {
    if (error) *error = std::move(message);
}

bool starts_with(std::string_view s, std::string_view prefix) {
    return s.substr(0, prefix.size()) == prefix;
}

std::vector<std::string_view> split_spaces(std::string_view s) {
    std::vector<std::string_view> out;
    size_t pos = 0;
    for (;;) {
        size_t sp = s.find(' ', pos);
        if (sp == std::string_view::npos) {
            out.push_back(s.substr(pos));
            return out;
        }
        out.push_back(s.substr(pos, sp - pos));
        pos = sp + 1;
    }
}

// "SERVICE+ARG" -> service, argument; a missing '+' means an empty argument.
void split_service(std::string_view service_and_arg, std::string& service, std::string& argument) {
    auto plus = service_and_arg.find('+');
    if (plus == std::string_view::npos) {
        service = std::string(service_and_arg);
        argument.clear();
    } else {
        service = std::string(service_and_arg.substr(0, plus));
        argument = std::string(service_and_arg.substr(plus + 1));
    }
}

std::string errno_text(int err) { return std::strerror(err); }

}  // namespace

// --- command line ------------------------------------------------------------

std::optional<ParsedCmdline> parse_cmdline(std::string_view cmdline, std::string* error,
                                           CmdlineUser user_mode) {
    ParsedCmdline cmd;
    std::string_view rest = cmdline;
    if (user_mode == CmdlineUser::Required) {
        auto colon = rest.find(':');
        if (colon == std::string_view::npos) {
            set_error(error, "no user name (missing ':')");
            return std::nullopt;
        }
        cmd.user = std::string(rest.substr(0, colon));
        rest.remove_prefix(colon + 1);
    }
    if (starts_with(rest, kNoguiPrefix)) {
        cmd.nogui = true;
        rest.remove_prefix(kNoguiPrefix.size());
    }
    cmd.command = std::string(rest);
    if (!starts_with(rest, kRpcPrefix)) return cmd;  // a shell command

    rest.remove_prefix(kRpcPrefix.size());
    if (rest.empty() || rest[0] != ' ') {
        set_error(error, "QUBESRPC not followed by a space");
        return std::nullopt;
    }
    rest.remove_prefix(1);
    cmd.is_qubesrpc = true;

    auto tokens = split_spaces(rest);
    if (tokens.size() < 2) {
        set_error(error, "no source qube after the service name");
        return std::nullopt;
    }
    for (auto t : tokens) {
        if (t.empty()) {
            set_error(error, "empty field in service call (consecutive or trailing spaces)");
            return std::nullopt;
        }
    }
    if (tokens.size() != 2 && tokens.size() != 4) {
        set_error(error, "expected SERVICE+ARG SOURCE [TYPE TARGET]");
        return std::nullopt;
    }
    std::string_view descriptor = tokens[0];
    if (descriptor.size() > kMaxServiceNameLen) {
        set_error(error, "service name too long (" + std::to_string(descriptor.size()) + " bytes)");
        return std::nullopt;
    }
    split_service(descriptor, cmd.service, cmd.argument);
    if (cmd.service.empty()) {
        set_error(error, "empty service name");
        return std::nullopt;
    }
    if (cmd.service.size() > kNameMax) {
        set_error(error, "service name too long to execute (" + std::to_string(cmd.service.size()) +
                             " bytes)");
        return std::nullopt;
    }
    cmd.service_and_arg = cmd.service + "+" + cmd.argument;
    cmd.descriptor = std::string(descriptor);
    cmd.has_argument = descriptor.find('+') != std::string_view::npos;
    cmd.source = std::string(tokens[1]);
    if (tokens.size() == 4) {
        if (tokens[2] != "name" && tokens[2] != "keyword") {
            set_error(error, "invalid requested target type '" + std::string(tokens[2]) + "'");
            return std::nullopt;
        }
        cmd.target_type = std::string(tokens[2]);
        cmd.target = std::string(tokens[3]);
    }
    return cmd;
}

// --- lookup ------------------------------------------------------------------

std::vector<std::string> split_path_list(std::string_view list) {
    std::vector<std::string> out;
    size_t pos = 0;
    while (pos <= list.size()) {
        size_t colon = list.find(':', pos);
        if (colon == std::string_view::npos) colon = list.size();
        if (colon > pos) out.emplace_back(list.substr(pos, colon - pos));
        pos = colon + 1;
    }
    return out;
}

std::string service_path_from_env() {
    const char* v = std::getenv(kServicePathEnv);
    return v ? v : kDefaultServicePath;
}

std::string rpc_config_path_from_env() {
    const char* v = std::getenv(kRpcConfigPathEnv);
    return v ? v : kDefaultRpcConfigPath;
}

namespace {

bool valid_port(std::string_view port, uint16_t& out) {
    if (port.empty() || port.size() > 5 || port[0] == '0') return false;
    unsigned value = 0;
    for (char c : port) {
        if (c < '0' || c > '9') return false;
        value = value * 10 + static_cast<unsigned>(c - '0');
    }
    if (value < 1 || value > 65535) return false;
    out = static_cast<uint16_t>(value);
    return true;
}

bool valid_ipv6(std::string_view host) {
    std::string addr(host);
    auto pct = addr.find('%');
    if (pct != std::string::npos) {
        std::string_view scope = std::string_view(addr).substr(pct + 1);
        if (scope.empty()) return false;
        for (char c : scope) {
            bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '-' || c == '.';
            if (!ok) return false;
        }
        addr.resize(pct);
    }
    unsigned char buf[16];
    return ::inet_pton(AF_INET6, addr.c_str(), buf) == 1;
}

bool valid_ipv4(std::string_view host) {
    std::string addr(host);
    unsigned char buf[4];
    return ::inet_pton(AF_INET, addr.c_str(), buf) == 1;
}

// Checks a numeric host; strips IPv6 brackets.
bool normalise_host(std::string& host) {
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
        return valid_ipv6(host);
    }
    if (host.find_first_of(":%") != std::string::npos) return valid_ipv6(host);
    return valid_ipv4(host);
}

}  // namespace

std::optional<TcpService> parse_tcp_target(std::string_view link_target, std::string_view argument,
                                           std::string* error) {
    constexpr std::string_view kDevTcp = "/dev/tcp";
    if (!starts_with(link_target, kDevTcp) ||
        (link_target.size() > kDevTcp.size() && link_target[kDevTcp.size()] != '/')) {
        set_error(error, "not a /dev/tcp link: " + std::string(link_target));
        return std::nullopt;
    }
    std::string_view rest = link_target.substr(kDevTcp.size());
    std::string host;
    std::string_view port;
    if (rest.empty()) {
        auto plus = argument.rfind('+');
        if (plus == std::string_view::npos) {
            set_error(error, "argument '" + std::string(argument) + "' is not HOST+PORT");
            return std::nullopt;
        }
        host = std::string(argument.substr(0, plus));
        for (char& c : host)
            if (c == '+') c = ':';
        port = argument.substr(plus + 1);
    } else {
        rest.remove_prefix(1);  // the '/'
        auto slash = rest.find('/');
        if (slash == std::string_view::npos) {
            host = std::string(rest);
            port = argument;
        } else {
            host = std::string(rest.substr(0, slash));
            port = rest.substr(slash + 1);
        }
    }
    if (host.empty()) {
        set_error(error, "empty host in " + std::string(link_target));
        return std::nullopt;
    }
    TcpService tcp;
    if (!valid_port(port, tcp.port)) {
        set_error(error, "invalid port '" + std::string(port) + "'");
        return std::nullopt;
    }
    if (!normalise_host(host)) {
        set_error(error, "invalid numeric host '" + host + "'");
        return std::nullopt;
    }
    tcp.host = std::move(host);
    return tcp;
}

namespace {

// nullopt: a dangling symbolic link, which the search passes over (as in Qubes).
std::optional<ServiceLookup> classify(const std::string& path, const struct stat& lst,
                                      std::string_view argument) {
    if (S_ISLNK(lst.st_mode)) {
        std::string target(4096, '\0');
        ssize_t n = ::readlink(path.c_str(), target.data(), target.size());
        if (n < 0) return InvalidService{path, "readlink: " + errno_text(errno)};
        if (static_cast<size_t>(n) >= target.size())
            return InvalidService{path, "symbolic link target too long"};
        target.resize(static_cast<size_t>(n));
        if (target == "/dev/tcp" || starts_with(target, "/dev/tcp/")) {
            std::string why;
            auto tcp = parse_tcp_target(target, argument, &why);
            if (!tcp) return InvalidService{path, why};
            tcp->path = path;
            return *tcp;
        }
    }
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) {
        if (errno == ENOENT && S_ISLNK(lst.st_mode)) return std::nullopt;
        return InvalidService{path, "stat: " + errno_text(errno)};
    }
    if (S_ISSOCK(st.st_mode)) return UnixSocketService{path};
    if (S_ISREG(st.st_mode) && ::eaccess(path.c_str(), X_OK) == 0) return ExecutableService{path};
    return InvalidService{path, "not executable, not a socket"};
}

}  // namespace

ServiceLookup find_service(std::string_view service_and_arg, std::string_view search_path) {
    std::string service, argument;
    split_service(service_and_arg, service, argument);
    if (service.empty()) return InvalidService{"", "empty service name"};
    if (service.size() > kNameMax) return InvalidService{"", "service name too long"};
    if (service_and_arg.find_first_of(std::string_view("/\0", 2)) != std::string_view::npos)
        return InvalidService{"", "invalid character in service name"};
    if (service == "." || service == "..") return InvalidService{"", "invalid service name"};
    std::string full = service + "+" + argument;

    std::vector<std::string> names;
    if (full.size() <= kNameMax) names.push_back(full);
    names.push_back(service);
    auto dirs = split_path_list(search_path);
    for (const auto& name : names) {
        for (const auto& dir : dirs) {
            std::string path = dir + "/" + name;
            struct stat lst {};
            if (::lstat(path.c_str(), &lst) != 0) {
                if (errno == ENOENT) continue;
                return InvalidService{path, "lstat: " + errno_text(errno)};
            }
            if (auto found = classify(path, lst, argument)) return *found;
        }
    }
    return ServiceNotFound{};
}

int lookup_failure_exit_code(const ServiceLookup& lookup) {
    if (std::holds_alternative<ServiceNotFound>(lookup) ||
        std::holds_alternative<InvalidService>(lookup))
        return std::holds_alternative<ServiceNotFound>(lookup) ? kExitNotFound : kExitProblem;
    return 0;
}

// --- rpc-config --------------------------------------------------------------

namespace {

bool is_blank(char c) { return c == ' ' || c == '\t'; }

bool is_key_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

struct Value {
    enum Kind { Bool, Integer, String } kind = Bool;
    bool boolean = false;
    unsigned long long integer = 0;
    std::string string;
};

// Parses a value and what may follow it (blanks, then end or a comment).
// Returns nullopt with *why set on error.
std::optional<Value> parse_value(std::string_view s, std::string& why) {
    Value v;
    size_t end = 0;
    if (s.empty()) {
        why = "missing value";
        return std::nullopt;
    }
    char c = s[0];
    if (c == '0') {
        v.kind = Value::Integer;
        end = 1;
    } else if (c >= '1' && c <= '9') {
        v.kind = Value::Integer;
        while (end < s.size() && s[end] >= '0' && s[end] <= '9') {
            unsigned digit = static_cast<unsigned>(s[end] - '0');
            if (v.integer > (~0ULL - digit) / 10) {
                why = "integer out of range";
                return std::nullopt;
            }
            v.integer = v.integer * 10 + digit;
            ++end;
        }
    } else if (starts_with(s, "true")) {
        v.boolean = true;
        end = 4;
    } else if (starts_with(s, "false")) {
        end = 5;
    } else if (c == '"') {
        why = "double-quoted strings are not supported, use single quotes";
        return std::nullopt;
    } else if (c == '\'') {
        if (starts_with(s, "'''")) {
            why = "triple-quoted strings are not supported";
            return std::nullopt;
        }
        auto close = s.find('\'', 1);
        if (close == std::string_view::npos) {
            why = "unterminated string";
            return std::nullopt;
        }
        v.kind = Value::String;
        v.string = std::string(s.substr(1, close - 1));
        end = close + 1;
    } else {
        why = "unsupported value";
        return std::nullopt;
    }
    while (end < s.size() && is_blank(s[end])) ++end;
    if (end < s.size() && s[end] != '#') {
        why = v.kind == Value::Integer
                  ? "unexpected text after integer (only decimal integers without leading zeros)"
                  : "unexpected text after value";
        return std::nullopt;
    }
    return v;
}

const char* kind_name(Value::Kind k) {
    switch (k) {
    case Value::Bool: return "boolean";
    case Value::Integer: return "integer";
    case Value::String: return "string";
    }
    return "value";
}

}  // namespace

std::optional<RpcConfig> parse_rpc_config(std::string_view text, std::string* error,
                                          std::string_view origin) {
    RpcConfig config;
    std::set<std::string, std::less<>> seen;
    size_t pos = 0;
    long lineno = 0;
    auto fail = [&](const std::string& message) -> std::optional<RpcConfig> {
        set_error(error, std::string(origin) + ":" + std::to_string(lineno) + ": " + message);
        return std::nullopt;
    };
    while (pos < text.size()) {
        ++lineno;
        size_t nl = text.find('\n', pos);
        std::string_view line;
        if (nl == std::string_view::npos) {
            line = text.substr(pos);
            pos = text.size();
            config.warnings.push_back(std::string(origin) + ":" + std::to_string(lineno) +
                                      ": missing newline at end of file");
        } else {
            line = text.substr(pos, nl - pos);
            pos = nl + 1;
            if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        }
        if (line.find('\0') != std::string_view::npos) return fail("NUL byte in line");
        while (!line.empty() && is_blank(line.back())) line.remove_suffix(1);
        if (line.empty() || line[0] == '#') continue;
        if (is_blank(line[0])) return fail("unexpected whitespace at start of line");
        if (line[0] == '[') return fail("sections are not supported");
        if (!((line[0] >= 'a' && line[0] <= 'z') || (line[0] >= 'A' && line[0] <= 'Z')))
            return fail("invalid character at start of key");
        size_t k = 1;
        while (k < line.size() && is_key_char(line[k])) ++k;
        std::string key(line.substr(0, k));
        while (k < line.size() && is_blank(line[k])) ++k;
        if (k >= line.size() || line[k] != '=') return fail("missing '=' after key");
        ++k;
        while (k < line.size() && is_blank(line[k])) ++k;

        bool known = key == "wait-for-session" || key == "force-user" ||
                     key == "skip-service-descriptor" || key == "exit-on-service-eof" ||
                     key == "exit-on-client-eof";
        if (!known) {
            config.warnings.push_back(std::string(origin) + ":" + std::to_string(lineno) +
                                      ": unsupported key '" + key + "' ignored");
            continue;
        }
        if (!seen.insert(key).second) return fail("key '" + key + "' appears more than once");
        std::string why;
        auto value = parse_value(line.substr(k), why);
        if (!value) return fail(why);

        if (key == "wait-for-session") {
            if (value->kind == Value::Bool) {
                config.wait_for_session = value->boolean;
            } else if (value->kind == Value::Integer && value->integer < 2) {
                config.wait_for_session = value->integer == 1;
            } else {
                return fail(std::string("invalid ") + kind_name(value->kind) +
                            " value for 'wait-for-session' (true, false, 0 or 1)");
            }
        } else if (key == "force-user") {
            if (value->kind != Value::String)
                return fail(std::string(kind_name(value->kind)) + " not valid for 'force-user'");
            if (value->string.empty()) return fail("empty user name for 'force-user'");
            config.force_user = value->string;
        } else {
            if (value->kind != Value::Bool)
                return fail("'" + key + "' must be true or false");
            bool b = value->boolean;
            if (key == "skip-service-descriptor") config.skip_service_descriptor = b;
            else if (key == "exit-on-service-eof") config.exit_on_service_eof = b;
            else config.exit_on_client_eof = b;
        }
    }
    bool socket_only =
        config.skip_service_descriptor || config.exit_on_service_eof || config.exit_on_client_eof;
    if (config.force_user && socket_only) {
        set_error(error, std::string(origin) +
                             ": force-user cannot be combined with skip-service-descriptor, "
                             "exit-on-service-eof or exit-on-client-eof (socket services only)");
        return std::nullopt;
    }
    return config;
}

std::optional<RpcConfig> load_rpc_config(std::string_view service_and_arg,
                                         std::string_view config_path, std::string* error) {
    std::string service, argument;
    split_service(service_and_arg, service, argument);
    if (service.empty() || service == "." || service == ".." ||
        service_and_arg.find_first_of(std::string_view("/\0", 2)) != std::string_view::npos) {
        set_error(error, "invalid service name");
        return std::nullopt;
    }
    std::string full = service + "+" + argument;
    std::vector<std::string> names;
    if (full.size() <= kNameMax) names.push_back(full);
    if (service.size() <= kNameMax) names.push_back(service);

    auto dirs = split_path_list(config_path);
    for (const auto& name : names) {
        for (const auto& dir : dirs) {
            std::string path = dir + "/" + name;
            struct stat st {};
            if (::stat(path.c_str(), &st) != 0) {
                // Only a missing file means "no config": one that cannot be
                // reached (ENOTDIR, EACCES, a loop) fails the call.
                if (errno == ENOENT) continue;
                set_error(error, path + ": " + errno_text(errno));
                return std::nullopt;
            }
            if (!S_ISREG(st.st_mode)) {
                set_error(error, path + ": not a regular file");
                return std::nullopt;
            }
            if (static_cast<uint64_t>(st.st_size) > kMaxRpcConfigBytes) {
                set_error(error, path + ": file too large");
                return std::nullopt;
            }
            std::ifstream in(path, std::ios::binary);
            if (!in) {
                set_error(error, path + ": cannot read");
                return std::nullopt;
            }
            std::string text(kMaxRpcConfigBytes + 1, '\0');
            in.read(text.data(), static_cast<std::streamsize>(text.size()));
            text.resize(static_cast<size_t>(in.gcount()));
            if (text.size() > kMaxRpcConfigBytes) {
                set_error(error, path + ": file too large");
                return std::nullopt;
            }
            auto config = parse_rpc_config(text, error, path);
            if (config) config->path = path;
            return config;
        }
    }
    return RpcConfig{};
}

std::optional<std::string> check_config_for_service(const RpcConfig& config,
                                                    const ServiceLookup& lookup) {
    if (!std::holds_alternative<ExecutableService>(lookup)) return std::nullopt;
    if (config.skip_service_descriptor)
        return "ignoring skip-service-descriptor=true for an executable service";
    if (config.exit_on_service_eof) return "ignoring exit-on-service-eof=true for an executable service";
    if (config.exit_on_client_eof) return "ignoring exit-on-client-eof=true for an executable service";
    return std::nullopt;
}

std::string effective_user(const ParsedCmdline& cmd, const RpcConfig& config) {
    return config.force_user ? *config.force_user : cmd.user;
}

bool should_wait_for_session(const ParsedCmdline& cmd, const RpcConfig& config) {
    return config.wait_for_session && !cmd.nogui;
}

// --- environment -------------------------------------------------------------

namespace {

bool scrubbed(std::string_view entry) {
    std::string_view name = entry.substr(0, entry.find('='));
    return name == "QREXEC_REMOTE_DOMAIN" || name == "QREXEC_SERVICE_FULL_NAME" ||
           name == "QREXEC_SERVICE_ARGUMENT" || starts_with(name, "QREXEC_REQUESTED_TARGET");
}

}  // namespace

std::vector<std::string> build_service_env(const std::vector<std::string>& base_env,
                                           const ParsedCmdline& cmd) {
    std::vector<std::string> env;
    env.reserve(base_env.size() + 5);
    for (const auto& e : base_env)
        if (!scrubbed(e)) env.push_back(e);
    env.push_back("QREXEC_REMOTE_DOMAIN=" + cmd.source);
    env.push_back("QREXEC_SERVICE_FULL_NAME=" + cmd.descriptor);
    if (cmd.has_argument) env.push_back("QREXEC_SERVICE_ARGUMENT=" + cmd.argument);
    if (!cmd.target_type || !cmd.target) {
        env.push_back("QREXEC_REQUESTED_TARGET_TYPE=");
    } else if (*cmd.target_type == "keyword") {
        std::string_view kw = *cmd.target;
        if (!kw.empty() && kw[0] == '@') kw.remove_prefix(1);
        env.push_back("QREXEC_REQUESTED_TARGET_TYPE=keyword");
        env.push_back("QREXEC_REQUESTED_TARGET_KEYWORD=" + std::string(kw));
    } else {
        env.push_back("QREXEC_REQUESTED_TARGET_TYPE=name");
        env.push_back("QREXEC_REQUESTED_TARGET=" + *cmd.target);
    }
    return env;
}

std::vector<std::string> current_environment() {
    std::vector<std::string> env;
    for (char** e = environ; e && *e; ++e) env.emplace_back(*e);
    return env;
}

std::vector<std::string> service_argv(const ExecutableService& service, const ParsedCmdline& cmd) {
    std::vector<std::string> argv{service.path};
    if (!cmd.argument.empty()) argv.push_back(cmd.argument);
    return argv;
}

std::string service_descriptor(const ParsedCmdline& cmd) {
    std::string d = cmd.descriptor + " " + cmd.source;
    if (cmd.target_type && cmd.target) d += " " + *cmd.target_type + " " + *cmd.target;
    d.push_back('\0');
    return d;
}

}  // namespace aerie::qrexec
