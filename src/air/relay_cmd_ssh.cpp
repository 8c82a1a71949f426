// aerie-air-relay's SSH transport (docs/air.md):
//   ssh-proxy LOCAL+SVC[+ARG]   qubesair.SSHProxy: the call, carried by ssh to the zone's relay
//   uplink-fd ZONE [ssh]        ssh's ProxyCommand: a socket from the host's uplink, passed to ssh
//   ssh-incoming ZONE           the forced command of the zone's key: the call, run here
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "air/fd_message.hpp"
#include "air/layout.hpp"
#include "air/relay_command.hpp"
#include "air/relay_names.hpp"
#include "air/uplink_client.hpp"
#include "air/zone.hpp"

namespace aerie::air {

namespace {

namespace fs = std::filesystem;

[[noreturn]] void exec(const std::vector<std::string>& argv) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    throw AirError(argv[0] + ": " + std::strerror(errno));
}

std::string own_zone() {
    std::ifstream in(relay_home() / "zone");
    std::string zone;
    std::getline(in, zone);
    if (!invalid_zone_name(zone).empty()) throw AirError("this relay has no zone yet (keys init)");
    return zone;
}

// ssh sends its ProxyCommand's stderr to /dev/null (ControlPersist), so
// uplink-fd leaves the host's reason here for ssh-proxy to tell.
fs::path uplink_error_file(std::string_view zone) {
    return relay_home() / "run" / ("uplink-" + std::string(zone) + ".error");
}

std::string uplink_error_since(std::string_view zone, fs::file_time_type since) {
    std::error_code ec;
    fs::path file = uplink_error_file(zone);
    if (fs::last_write_time(file, ec) < since || ec) return {};
    std::ifstream in(file);
    std::string reason;
    std::getline(in, reason);
    return reason.empty() ? reason : ": " + reason;
}

std::vector<std::string> ssh_argv(const OutgoingCall& call, const std::string& source) {
    fs::path home = relay_home();
    std::string o = "-o";
    return {std::string(kSsh), "-T", "-q", "-F", "none",
            "-i", (home / "ssh" / "id_ed25519").string(), o, "IdentitiesOnly=yes", o, "BatchMode=yes",
            o, "UserKnownHostsFile=" + (home / "ssh" / "known_hosts").string(),
            o, "GlobalKnownHostsFile=/dev/null", o, "StrictHostKeyChecking=yes", o, "UpdateHostKeys=no",
            o, "HostKeyAlias=" + call.zone,
            o, "ControlMaster=auto", o, "ControlPersist=600",
            o, "ControlPath=" + (home / "run" / "ssh-%C").string(),
            o, "ProxyCommand=" + relay_program() + " uplink-fd " + call.zone, o, "ProxyUseFdpass=yes",
            o, "ServerAliveInterval=5", o, "ServerAliveCountMax=3",
            ssh_login_user() + "@" + call.zone,
            source + " " + call.remote_name + " " + call.service};
}

int ssh_proxy(const std::vector<std::string>& args) {
    if (args.size() != 1) throw AirError("usage: ssh-proxy LOCAL+SERVICE");
    OutgoingCall call = resolve_outgoing(args[0], qubesdb_dir());
    std::string source = calling_source(std::getenv("QREXEC_REMOTE_DOMAIN"));
    if (!fs::exists(relay_home() / "peers" / call.zone)) throw AirError("zone " + call.zone + " is not paired here");
    // Not exec'd: ssh's own failure (255) becomes ours, said once.
    // (A second of slack: file times come from a coarser clock.)
    auto started = fs::file_time_type::clock::now() - std::chrono::seconds(1);
    pid_t pid = ::fork();
    if (pid < 0) throw AirError(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        try {
            exec(ssh_argv(call, source));
        } catch (const std::exception& e) {
            fmt::print(stderr, "aerie-air: {}\n", e.what());
        }
        ::_exit(255);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) throw AirError(std::string("waitpid: ") + std::strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) != 255) return WEXITSTATUS(status);
    throw AirError("cannot reach zone " + call.zone + " over ssh" + uplink_error_since(call.zone, started));
}

int uplink_fd(const std::vector<std::string>& args) {
    if (args.empty() || args.size() > 2 || (args.size() == 2 && args[1] != kSsh_))
        throw AirError("usage: uplink-fd ZONE [ssh]");
    if (auto why = invalid_zone_name(args[0]); !why.empty()) throw AirError(args[0] + ": " + why);
    std::error_code ignored;
    qrexec::UniqueFd sock;
    try {
        sock = uplink_connect(args[0], own_zone(), Transport::Ssh, uplink_socket());
    } catch (const AirError& e) {
        std::ofstream(uplink_error_file(args[0])) << e.what() << "\n";
        throw;
    }
    fs::remove(uplink_error_file(args[0]), ignored);
    // ssh turns Nagle off only for sessions with a tty: without this, small
    // writes wait for delayed ACKs (~40 ms each, several per call).
    int one = 1;
    ::setsockopt(sock.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    // ProxyUseFdpass: ssh reads one byte with the descriptor from our stdout.
    send_message(STDOUT_FILENO, "\n", sock.get());
    return 0;
}

// SSH_ORIGINAL_COMMAND: exactly "SOURCE TARGET SERVICE".
std::vector<std::string> three_words(const char* command) {
    if (!command) throw AirError("no command");
    std::string_view text(command);
    std::vector<std::string> words;
    for (size_t pos = 0;;) {
        size_t space = text.find(' ', pos);
        words.emplace_back(text.substr(pos, space - pos));
        if (space == std::string_view::npos) break;
        pos = space + 1;
    }
    if (words.size() != 3) throw AirError("the command is not SOURCE TARGET SERVICE");
    return words;
}

int ssh_incoming(const std::vector<std::string>& args) {
    if (args.size() != 1) throw AirError("usage: ssh-incoming ZONE");
    const std::string& zone = args[0];
    if (auto why = invalid_zone_name(zone); !why.empty()) throw AirError(zone + ": " + why);
    auto words = three_words(std::getenv("SSH_ORIGINAL_COMMAND"));
    exec(incoming_argv(zone, words[0], words[1], words[2], read_names(relay_home() / "peers" / zone / "names"),
                       qubesdb_dir()));
}

const RelayCommandRegistration proxy("ssh-proxy", "LOCAL+SVC[+ARG]  (qubesair.SSHProxy)", ssh_proxy);
const RelayCommandRegistration fd("uplink-fd", "ZONE [ssh]  (ssh's ProxyCommand)", uplink_fd);
const RelayCommandRegistration incoming("ssh-incoming", "ZONE  (the forced command of the zone's ssh key)",
                                        ssh_incoming);

}  // namespace

}  // namespace aerie::air
