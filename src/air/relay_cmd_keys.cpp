// aerie-air-relay keys: the relay's own keys and the peers it trusts, in
// relay_home() (docs/air.md). Run as `user` in the relay by qvm-air:
//   keys init ZONE NAME...   zone, names, TLS key and certificate, ssh keys, sshd_config
//   keys show                {"tls_cert", "ssh_key", "ssh_host_key"} as JSON
//   keys trust               stdin: a peer's zone file; pins its keys and names
//   keys forget ZONE         drops them
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>

#include "air/fd_message.hpp"
#include "air/layout.hpp"
#include "air/relay_command.hpp"
#include "air/relay_keys.hpp"
#include "air/relay_names.hpp"
#include "air/zone.hpp"
#include "admin/qube.hpp"

namespace aerie::air {

namespace {

namespace fs = std::filesystem;

constexpr const char* kSshKeygen = "/usr/bin/ssh-keygen";
constexpr size_t kMaxZoneFile = 1 << 20;

void private_dir(const fs::path& dir) {
    fs::create_directories(dir);
    fs::permissions(dir, fs::perms::owner_all, fs::perm_options::replace);
}

std::optional<std::string> read_file(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) return std::nullopt;
    return std::string((std::istreambuf_iterator<char>(in)), {});
}

std::string first_line(const std::optional<std::string>& text) {
    if (!text) return {};
    return text->substr(0, text->find('\n'));
}

// Replaces `path` atomically with `text`, mode 0600.
void write_file(const fs::path& path, std::string_view text) {
    fs::path tmp = path;
    tmp += ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        out << text;
        if (!out.flush()) throw AirError("cannot write " + tmp.string());
    }
    fs::permissions(tmp, fs::perms::owner_read | fs::perms::owner_write, fs::perm_options::replace);
    fs::rename(tmp, path);
}

// Runs argv and waits; its exit code (1 when it could not run).
int run(const std::vector<std::string>& argv, bool quiet = false) {
    pid_t pid = ::fork();
    if (pid < 0) throw AirError(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        int null = ::open("/dev/null", O_RDWR);
        ::dup2(null, STDIN_FILENO);
        ::dup2(null, STDOUT_FILENO);  // our stdout may be the answer (keys show)
        if (quiet) ::dup2(null, STDERR_FILENO);
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return 1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

void check_zone(std::string_view zone) {
    if (auto why = invalid_zone_name(zone); !why.empty()) throw AirError(std::string(zone) + ": " + why);
}

std::string join_lines(const std::vector<std::string>& lines) {
    std::string out;
    for (const auto& line : lines) out += line + "\n";
    return out;
}

// The lines of a file for which `keep` is true.
std::vector<std::string> lines_kept(const fs::path& path, auto keep) {
    std::vector<std::string> out;
    std::ifstream in(path);
    for (std::string line; std::getline(in, line);)
        if (!line.empty() && keep(line)) out.push_back(line);
    return out;
}

// The authorized_keys line of `zone` (its forced command) and how to know it again.
std::string forced_command_marker(std::string_view zone) { return fmt::format(" ssh-incoming {}\",", zone); }
std::string authorized_line(std::string_view zone, std::string_view key) {
    std::string program = relay_program();
    if (program.find_first_of("\"\\\n") != std::string::npos) throw AirError("unusable relay program path");
    return fmt::format("command=\"{} ssh-incoming {}\",restrict {}", program, zone, key);
}

std::string sshd_config(const fs::path& ssh) {
    return fmt::format(
        "# aerie-air-relay keys init: the relay's sshd -i (docs/air.md); rewritten by it.\n"
        "HostKey \"{}\"\n"
        "AuthorizedKeysFile \"{}\"\n"
        "UsePAM no\n"
        "StrictModes no\n"
        "PidFile none\n"
        "PubkeyAuthentication yes\n"
        "PasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\n"
        "PermitRootLogin no\n"
        "DisableForwarding yes\n"
        "AllowStreamLocalForwarding no\n"
        "AllowTcpForwarding no\n"
        "AllowAgentForwarding no\n"
        "X11Forwarding no\n"
        "PermitTunnel no\n"
        "PermitUserRC no\n"
        "PrintMotd no\n"
        "LogLevel INFO\n",
        (ssh / "host_ed25519").string(), (ssh / "authorized_keys").string());
}

// An ssh key pair made by ssh-keygen unless both halves are there.
void ssh_key(const fs::path& file, const std::string& comment) {
    fs::path pub = file;
    pub += ".pub";
    if (fs::exists(file) && fs::exists(pub)) return;
    fs::remove(file);
    fs::remove(pub);
    if (run({kSshKeygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", file.string()}) != 0)
        throw AirError("ssh-keygen failed for " + file.string());
}

int keys_init(const std::vector<std::string>& args) {
    if (args.size() < 2) throw AirError("usage: keys init ZONE NAME...");
    const std::string& zone = args[0];
    check_zone(zone);
    std::vector<std::string> names(args.begin() + 1, args.end());
    for (size_t i = 0; i < names.size(); ++i) {
        if (auto why = admin::invalid_qube_name_reason(names[i]); !why.empty()) throw AirError(names[i] + ": " + why);
        for (size_t j = 0; j < i; ++j)
            if (names[j] == names[i]) throw AirError(names[i] + " is named twice");
    }
    fs::path home = relay_home();
    for (const char* sub : {"", "tls", "ssh", "peers", "run"}) private_dir(home / sub);
    bool changed = first_line(read_file(home / "zone")) != zone || read_names(home / "names") != names;
    write_file(home / "zone", zone + "\n");
    write_file(home / "names", join_lines(names));
    fs::path key = home / "tls" / "key.pem", cert = home / "tls" / "cert.pem";
    if (!fs::exists(key)) {
        write_file(key, new_ed25519_key_pem());
        changed = true;
    }
    if (changed || !fs::exists(cert)) write_file(cert, self_signed_cert_pem(*read_file(key), zone, names));
    fs::path ssh = home / "ssh";
    ssh_key(ssh / "id_ed25519", "aerie-air@" + zone);
    ssh_key(ssh / "host_ed25519", "aerie-air-host@" + zone);
    write_file(ssh / "sshd_config", sshd_config(ssh));
    for (const char* file : {"authorized_keys", "known_hosts"})
        if (!fs::exists(ssh / file)) write_file(ssh / file, "");
    return 0;
}

int keys_show(const std::vector<std::string>& args) {
    if (!args.empty()) throw AirError("usage: keys show");
    fs::path home = relay_home();
    auto cert = read_file(home / "tls" / "cert.pem");
    auto key = read_file(home / "ssh" / "id_ed25519.pub");
    auto host = read_file(home / "ssh" / "host_ed25519.pub");
    if (!cert || !key || !host) throw AirError("no keys in " + home.string() + ": keys init first");
    nlohmann::json doc = {{"tls_cert", *cert}, {"ssh_key", first_line(key)}, {"ssh_host_key", first_line(host)}};
    fmt::print("{}\n", doc.dump(2));
    return 0;
}

int keys_trust(const std::vector<std::string>& args) {
    if (!args.empty()) throw AirError("usage: keys trust < ZONE_FILE");
    std::string text;
    char buf[65536];
    while (std::cin.read(buf, sizeof buf) || std::cin.gcount() > 0) {
        text.append(buf, static_cast<size_t>(std::cin.gcount()));
        if (text.size() > kMaxZoneFile) throw AirError("zone file larger than 1 MiB");
    }
    Zone peer;
    try {
        peer = parse_zone(text);
    } catch (const ZoneError& e) {
        throw AirError(e.what());
    }
    if (!peer.has_credentials()) throw AirError("zone file of " + peer.name + " has no keys (export it with --relay)");
    cert_qube_names(peer.tls_cert);  // throws unless OpenSSL reads it
    fs::path home = relay_home(), ssh = home / "ssh";
    if (first_line(read_file(home / "zone")) == peer.name) throw AirError(peer.name + " is this relay's own zone");
    // One client key, one zone: sshd would take the first line with it.
    std::string blob = peer.ssh_key.substr(0, peer.ssh_key.find(' ', 12));
    std::string marker = forced_command_marker(peer.name);
    auto authorized = lines_kept(ssh / "authorized_keys", [&](const std::string& l) {
        return l.find(marker) == std::string::npos;
    });
    for (const auto& line : authorized)
        if (line.find(blob) != std::string::npos) throw AirError("another zone here has the ssh key of " + peer.name);
    authorized.push_back(authorized_line(peer.name, peer.ssh_key));
    auto known = lines_kept(ssh / "known_hosts", [&](const std::string& l) { return !l.starts_with(peer.name + " "); });
    known.push_back(peer.name + " " + peer.ssh_host_key);
    std::vector<std::string> names;
    for (const auto& q : peer.qubes) names.push_back(q.name);

    for (const char* sub : {"", "ssh", "peers", "run"}) private_dir(home / sub);
    private_dir(home / "peers" / peer.name);
    write_file(home / "peers" / peer.name / "cert.pem", peer.tls_cert);
    write_file(home / "peers" / peer.name / "names", join_lines(names));
    write_file(ssh / "authorized_keys", join_lines(authorized));
    write_file(ssh / "known_hosts", join_lines(known));
    return 0;
}

int keys_forget(const std::vector<std::string>& args) {
    if (args.size() != 1) throw AirError("usage: keys forget ZONE");
    const std::string& zone = args[0];
    check_zone(zone);
    fs::path home = relay_home(), ssh = home / "ssh";
    std::string marker = forced_command_marker(zone);
    if (fs::exists(ssh / "authorized_keys"))
        write_file(ssh / "authorized_keys", join_lines(lines_kept(ssh / "authorized_keys", [&](const std::string& l) {
                       return l.find(marker) == std::string::npos;
                   })));
    if (fs::exists(ssh / "known_hosts"))
        write_file(ssh / "known_hosts", join_lines(lines_kept(ssh / "known_hosts", [&](const std::string& l) {
                       return !l.starts_with(zone + " ");
                   })));
    fs::remove_all(home / "peers" / zone);
    // Ends a ControlMaster to the zone: ssh-proxy's ControlPath, whose %C
    // hashes the same local host, host, port and user as here.
    run({std::string(kSsh), "-F", "none", "-o", "ControlPath=" + (home / "run" / "ssh-%C").string(), "-O", "exit",
         ssh_login_user() + "@" + zone},
        true);
    return 0;
}

int keys(const std::vector<std::string>& args) {
    std::string sub = args.empty() ? "" : args[0];
    std::vector<std::string> rest(args.begin() + (args.empty() ? 0 : 1), args.end());
    if (sub == "init") return keys_init(rest);
    if (sub == "show") return keys_show(rest);
    if (sub == "trust") return keys_trust(rest);
    if (sub == "forget") return keys_forget(rest);
    throw AirError("usage: keys init ZONE NAME... | show | trust < ZONE_FILE | forget ZONE");
}

const RelayCommandRegistration registration("keys", "init ZONE NAME... | show | trust < ZONE_FILE | forget ZONE",
                                            keys);

}  // namespace

}  // namespace aerie::air
