// How a qube runs a service call (Qubes R4.3 agent behaviour, without the
// process spawning): parsing the command line the agent receives, finding
// the service along QREXEC_SERVICE_PATH, reading its rpc-config file, and
// building the service's environment and descriptor.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace aerie::qrexec {

inline constexpr const char* kDefaultServicePath =
    "/run/qubes-rpc:/usr/local/etc/qubes-rpc:/etc/qubes-rpc";
inline constexpr const char* kDefaultRpcConfigPath =
    "/run/qubes/rpc-config:/usr/local/etc/qubes/rpc-config:/etc/qubes/rpc-config";
inline constexpr const char* kServicePathEnv = "QREXEC_SERVICE_PATH";
inline constexpr const char* kRpcConfigPathEnv = "QUBES_RPC_CONFIG_PATH";

// A file name component (Linux NAME_MAX): a longer SERVICE fails the call, a
// longer SERVICE+ARG is not looked up (only SERVICE is).
inline constexpr size_t kNameMax = 255;
// rpc-config files larger than this are refused.
inline constexpr size_t kMaxRpcConfigBytes = 1u << 20;

// qubes.ConnectTCP as Qubes ships it: a symlink to /dev/tcp/127.0.0.1 (the
// argument is the port) and this rpc-config.
inline constexpr const char* kConnectTcpService = "qubes.ConnectTCP";
inline constexpr const char* kConnectTcpLinkTarget = "/dev/tcp/127.0.0.1";
inline constexpr const char* kConnectTcpRpcConfig =
    "skip-service-descriptor = true\nexit-on-service-eof = true\n";

// ---------------------------------------------------------------------------
// Command line: "USER:[nogui:]QUBESRPC SERVICE+ARG SOURCE [TYPE TARGET]" or
// "USER:[nogui:]SHELL COMMAND".

struct ParsedCmdline {
    std::string user;       // as received; "DEFAULT" means the qube's default user
    bool nogui = false;     // "nogui:" prefix was present
    bool is_qubesrpc = false;
    std::string command;    // everything after "USER:" and "nogui:"

    // Service calls only.
    std::string service_and_arg;  // "SERVICE+ARG"; a call without '+' gets one ("SERVICE+")
    std::string descriptor;       // SERVICE[+ARG] exactly as called (no '+' added)
    std::string service;          // before the first '+'
    std::string argument;         // after the first '+' (may be empty)
    bool has_argument = false;    // the call had a '+' (its argument may be empty)
    std::string source;           // the calling qube
    std::optional<std::string> target_type;  // "name" or "keyword" (calls to the admin qube)
    std::optional<std::string> target;       // qube name, or keyword without '@'

    bool default_user() const { return user == "DEFAULT"; }
};

enum class CmdlineUser {
    Required,  // "USER:..." as a qube's agent receives it
    Absent,    // "[nogui:]QUBESRPC ..." as run on the admin side
};

// Parses a command line. On failure returns nullopt and sets *error (if given).
// Rejected: no "USER:" (when required); "QUBESRPC" not followed by a space;
// fewer than two tokens, empty tokens, 3 or more than 4 tokens; a TYPE other
// than name/keyword, an empty TARGET; an empty SERVICE, a SERVICE longer than
// kNameMax, a SERVICE+ARG longer than kMaxServiceNameLen.
std::optional<ParsedCmdline> parse_cmdline(std::string_view cmdline, std::string* error = nullptr,
                                           CmdlineUser user = CmdlineUser::Required);

// ---------------------------------------------------------------------------
// Service lookup.

struct ExecutableService {
    std::string path;  // the file found (SERVICE+ARG or SERVICE)
};
struct UnixSocketService {
    std::string path;
};
struct TcpService {
    std::string host;  // numeric: IPv4 dotted quad or IPv6 (no brackets, may carry %scope)
    uint16_t port = 0;
    std::string path;  // the symlink found
};
struct ServiceNotFound {};
struct InvalidService {
    std::string path;  // empty when the name itself is unusable
    std::string reason;
};

using ServiceLookup =
    std::variant<ServiceNotFound, ExecutableService, UnixSocketService, TcpService, InvalidService>;

// Splits a colon-separated path list; empty components are skipped.
std::vector<std::string> split_path_list(std::string_view list);

// The search path lists from the environment, or the defaults.
std::string service_path_from_env();
std::string rpc_config_path_from_env();

// Looks up "SERVICE+ARG" ("SERVICE" alone is treated as "SERVICE+"): first the
// file SERVICE+ARG in every directory of search_path in order, then SERVICE in
// every directory. The first entry that exists (lstat) decides:
// - a symlink to /dev/tcp[/HOST[/PORT]] -> TcpService (or InvalidService);
// - an AF_UNIX socket -> UnixSocketService;
// - an executable regular file -> ExecutableService;
// - a dangling symbolic link (its target missing) is passed over, as if absent;
// - anything else (directory, non-executable file, a link whose target cannot
//   be reached, lstat error other than ENOENT) -> InvalidService.
// A name containing '/' or NUL, or "."/"..", is InvalidService.
ServiceLookup find_service(std::string_view service_and_arg,
                           std::string_view search_path = kDefaultServicePath);

// The TCP endpoint a /dev/tcp symlink names, given the call's argument:
//   /dev/tcp/HOST/PORT  the argument is ignored;
//   /dev/tcp/HOST       the argument is the port;
//   /dev/tcp            the argument is HOST+PORT (split at the last '+'; in
//                       HOST every '+' stands for ':').
// HOST: numeric IPv4 (dotted quad) or IPv6 (plain or in brackets); PORT:
// decimal 1..65535 without leading zeros. nullopt (with *error) otherwise, and
// for link targets that are not /dev/tcp forms.
std::optional<TcpService> parse_tcp_target(std::string_view link_target, std::string_view argument,
                                           std::string* error = nullptr);

// Exit status the agent reports when a lookup gives no runnable service
// (127 not found, 125 invalid, as in Qubes), or 0 for a runnable one.
int lookup_failure_exit_code(const ServiceLookup& lookup);

// ---------------------------------------------------------------------------
// rpc-config.

struct RpcConfig {
    bool wait_for_session = false;
    std::optional<std::string> force_user;
    bool skip_service_descriptor = false;  // socket services only
    bool exit_on_service_eof = false;      // socket services only
    bool exit_on_client_eof = false;       // socket services only
    std::string path;                      // the file read (empty: none found / parsed text)
    std::vector<std::string> warnings;     // to be logged: unknown keys, missing final newline
};

// Parses an rpc-config file ("key = value" lines; '#' comments; no sections;
// booleans true/false, for wait-for-session also 0/1; strings single-quoted).
// Errors (nullopt, *error = "ORIGIN:LINE: message"): a duplicate known key, a
// value of the wrong type, a malformed line or value, force-user together with
// a true socket-only option. Unknown keys only add a warning.
std::optional<RpcConfig> parse_rpc_config(std::string_view text, std::string* error = nullptr,
                                          std::string_view origin = "rpc-config");

// Finds and parses the config of a service: the file SERVICE+ARG in every
// directory of config_path, then SERVICE; the first found is used. No file:
// a default RpcConfig. An unreadable or invalid file: nullopt and *error
// (the call then fails with exit status 125).
std::optional<RpcConfig> load_rpc_config(std::string_view service_and_arg,
                                         std::string_view config_path = kDefaultRpcConfigPath,
                                         std::string* error = nullptr);

// The socket-only options set to true for an executable service are ignored
// (as in Qubes): returns the warning to log, nullopt when there is none.
std::optional<std::string> check_config_for_service(const RpcConfig& config,
                                                    const ServiceLookup& lookup);

// The user an executable service runs as: force-user, else the command line's.
std::string effective_user(const ParsedCmdline& cmd, const RpcConfig& config);

// Whether to wait for the GUI session first (never for "nogui:" calls).
bool should_wait_for_session(const ParsedCmdline& cmd, const RpcConfig& config);

// ---------------------------------------------------------------------------
// Running the service.

// The environment of a service, from base_env ("K=V" strings): the variables
// QREXEC_REMOTE_DOMAIN, QREXEC_SERVICE_FULL_NAME, QREXEC_SERVICE_ARGUMENT and
// every QREXEC_REQUESTED_TARGET* are removed from base_env, then set:
//   QREXEC_REMOTE_DOMAIN=<source>  QREXEC_SERVICE_FULL_NAME=<SERVICE[+ARG] as called>
//   QREXEC_SERVICE_ARGUMENT=<arg>  (whenever the call had a '+', even empty)
//   no target on the command line: QREXEC_REQUESTED_TARGET_TYPE= (empty)
//   name TARGET:    QREXEC_REQUESTED_TARGET_TYPE=name QREXEC_REQUESTED_TARGET=TARGET
//   keyword KW:     QREXEC_REQUESTED_TARGET_TYPE=keyword QREXEC_REQUESTED_TARGET_KEYWORD=KW
//                   (a leading '@' in KW is dropped)
// Other variables keep their order.
std::vector<std::string> build_service_env(const std::vector<std::string>& base_env,
                                           const ParsedCmdline& cmd);

// This process's environment as "K=V" strings.
std::vector<std::string> current_environment();

// argv of an executable service: the path, then the argument if non-empty.
std::vector<std::string> service_argv(const ExecutableService& service, const ParsedCmdline& cmd);

// What a socket service receives first (unless skip-service-descriptor):
// "SERVICE[+ARG] SOURCE" (plus " TYPE TARGET" when the command line had them),
// the service as called (a call without '+' gets none, as in Qubes), with its
// terminating NUL byte included.
std::string service_descriptor(const ParsedCmdline& cmd);

}  // namespace aerie::qrexec
