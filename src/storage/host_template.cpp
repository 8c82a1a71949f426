#include "storage/host_template.hpp"

#include "storage/accounts.hpp"

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>

namespace aerie::storage {

namespace fs = std::filesystem;

namespace {

constexpr const char* kMarker = "etc/aerie-host-template";

[[noreturn]] void fail(const std::string& what, int err) {
    throw std::runtime_error("host template: " + what + ": " + std::strerror(err));
}

// What of the host's /etc a qube gets: name service and accounts (filtered:
// see keep_system_accounts), the dynamic linker's configuration,
// certificates, the alternatives links programs in /usr go through, the
// system's identity, the shell and login environment, locale and time, and
// the configuration /usr's programs expect beside them. A listed folder comes
// whole. Nothing else is copied (the host's services, credentials of its
// tools, Aerie's and Qubes' policy), and nothing that is not world-readable
// whatever list it is on: a file others may not read, a folder others may
// not enter. hostname, hosts, shadow, gshadow, fstab and machine-id are the qube's own
// (written below). Patterns are fnmatch(3) per path component.
// clang-format off
constexpr const char* kEtcAllowlist[] = {
    // accounts and name service
    "passwd", "group", "nsswitch.conf", "host.conf", "gai.conf", "networks", "protocols", "services", "rpc",
    "ethertypes",
    // dynamic linker
    "ld.so.conf", "ld.so.conf.d", "ld.so.cache",
    // certificates (Debian; Fedora's pki and crypto-policies)
    "ssl/certs", "ssl/openssl.cnf", "ca-certificates.conf", "ca-certificates", "pki/ca-trust", "pki/tls/certs",
    "pki/tls/cert.pem", "pki/tls/openssl.cnf", "crypto-policies",
    // programs in /usr reached through /etc
    "alternatives", "mtab",
    // the system's identity
    "os-release", "debian_version", "lsb-release", "fedora-release", "redhat-release", "system-release",
    // shells and the login environment
    "profile", "profile.d", "bash.bashrc", "bash_completion", "bash_completion.d", "environment", "inputrc",
    "shells", "login.defs", "skel", "terminfo",
    // locale and time
    "locale.alias", "locale.gen", "locale.conf", "default/locale", "localtime", "timezone",
    // configuration the programs of /usr expect beside them
    "python3", "python3.*", "perl", "vim", "fonts", "mime.types",
    // ssh's client and sshd's DH groups (Qubes Air relays run ssh and sshd -i with their own configuration)
    "ssh/ssh_config", "ssh/ssh_config.d", "ssh/moduli",
};
// clang-format on

std::vector<std::string> components(const std::string& path) {
    std::vector<std::string> out;
    std::istringstream in(path);
    for (std::string c; std::getline(in, c, '/');)
        if (!c.empty()) out.push_back(c);
    return out;
}

enum class Listed { No, Yes, Ancestor };

// Yes: `rel` is a listed path or inside one; Ancestor: a folder on the way
// to a listed path (made, but only the listed part of it copied).
Listed listed(const fs::path& rel) {
    auto parts = components(rel.generic_string());
    Listed best = Listed::No;
    for (const char* pattern : kEtcAllowlist) {
        auto want = components(pattern);
        size_t n = std::min(want.size(), parts.size());
        bool match = true;
        for (size_t i = 0; i < n && match; ++i)
            match = ::fnmatch(want[i].c_str(), parts[i].c_str(), FNM_PERIOD) == 0;
        if (!match) continue;
        if (parts.size() >= want.size()) return Listed::Yes;
        best = Listed::Ancestor;
    }
    return best;
}

// Others may read it (and enter it, a folder): what every qube's user could
// read on the host anyway. A symbolic link's own mode means nothing.
bool world_readable(const struct stat& st) {
    if (S_ISLNK(st.st_mode)) return true;
    if (S_ISDIR(st.st_mode)) return (st.st_mode & (S_IROTH | S_IXOTH)) == (S_IROTH | S_IXOTH);
    return (st.st_mode & S_IROTH) != 0;
}

void write_text(const fs::path& path, const std::string& text, mode_t mode) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0) fail("creating " + path.string(), errno);
    size_t done = 0;
    while (done < text.size()) {
        ssize_t n = ::write(fd, text.data() + done, text.size() - done);
        if (n < 0) {
            if (errno == EINTR) continue;
            int err = errno;
            ::close(fd);
            fail("writing " + path.string(), err);
        }
        done += static_cast<size_t>(n);
    }
    ::fchmod(fd, mode);
    ::close(fd);
}

void make_dir(const fs::path& path, mode_t mode) {
    if (::mkdir(path.c_str(), mode) < 0 && errno != EEXIST) fail("creating " + path.string(), errno);
    ::chmod(path.c_str(), mode);
}

// Every "name:..." line's first field.
std::vector<std::string> names_in(const fs::path& file) {
    std::vector<std::string> out;
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
        size_t colon = line.find(':');
        if (colon != std::string::npos && colon > 0) out.push_back(line.substr(0, colon));
    }
    return out;
}

gid_t group_id(const fs::path& group_file, const std::string& name) {
    std::ifstream in(group_file);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string n, x, id;
        if (std::getline(f, n, ':') && std::getline(f, x, ':') && std::getline(f, id, ':') && n == name)
            return static_cast<gid_t>(std::stoul(id));
    }
    return 0;
}

void copy_etc(const fs::path& from, const fs::path& to) {
    std::error_code ec;
    fs::recursive_directory_iterator it(from, fs::directory_options::none, ec), end;
    if (ec) fail("reading " + from.string(), ec.value());
    for (; it != end; it.increment(ec)) {
        if (ec) fail("reading " + from.string(), ec.value());
        const fs::path src = it->path();
        const fs::path rel = src.lexically_relative(from);
        struct stat st;
        Listed l = listed(rel);
        if (l == Listed::No || ::lstat(src.c_str(), &st) < 0 || !world_readable(st) ||
            (l == Listed::Ancestor && !S_ISDIR(st.st_mode))) {
            if (it->is_directory(ec) && !it->is_symlink(ec)) it.disable_recursion_pending();
            continue;
        }
        const fs::path dst = to / rel;
        if (S_ISLNK(st.st_mode)) {
            fs::create_symlink(fs::read_symlink(src), dst, ec);
            if (ec) fail("linking " + dst.string(), ec.value());
        } else if (S_ISDIR(st.st_mode)) {
            make_dir(dst, st.st_mode & 07777);
        } else if (S_ISREG(st.st_mode)) {
            fs::copy_file(src, dst, ec);
            if (ec) fail("copying " + src.string(), ec.value());
            ::chmod(dst.c_str(), st.st_mode & 07777);
        } else {
            continue;  // sockets, fifos, device nodes
        }
        ::lchown(dst.c_str(), st.st_uid, st.st_gid);
    }
}

// login.defs' value of `key` (UID_MIN, GID_MIN), else `fallback`.
unsigned long login_defs(const fs::path& etc, const std::string& key, unsigned long fallback) {
    std::ifstream in(etc / "login.defs");
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream f(line);
        std::string k;
        unsigned long v;
        if (f >> k >> v && k == key) return v;
    }
    return fallback;
}

std::vector<std::string> split_fields(const std::string& line, char sep) {
    std::vector<std::string> out;
    std::string cur;
    for (char c : line) {
        if (c == sep) {
            out.push_back(cur);
            cur.clear();
        } else {
            cur.push_back(c);
        }
    }
    out.push_back(cur);
    return out;
}

bool system_id(const std::string& text, unsigned long first_human) {
    char* end = nullptr;
    unsigned long id = std::strtoul(text.c_str(), &end, 10);
    if (text.empty() || *end) return false;
    return id < first_human || id == 65534;  // nobody / nogroup
}

// The host's own people stay on the host: passwd keeps the system accounts
// (ids below login.defs' UID_MIN, and nobody), group the system groups,
// whose member lists keep only those accounts. Qubes' `user` is added after.
void keep_system_accounts(const fs::path& host_etc, const fs::path& etc) {
    unsigned long uid_min = login_defs(host_etc, "UID_MIN", 1000);
    unsigned long gid_min = login_defs(host_etc, "GID_MIN", 1000);
    std::set<std::string> accounts;
    std::string passwd, group;
    {
        std::ifstream in(etc / "passwd");
        for (std::string line; std::getline(in, line);) {
            auto f = split_fields(line, ':');
            if (f.size() < 7 || !system_id(f[2], uid_min)) continue;
            accounts.insert(f[0]);
            passwd += line + "\n";
        }
    }
    {
        std::ifstream in(etc / "group");
        for (std::string line; std::getline(in, line);) {
            auto f = split_fields(line, ':');
            if (f.size() < 4 || !system_id(f[2], gid_min)) continue;
            std::string members;
            if (!f[3].empty())
                for (const auto& m : split_fields(f[3], ','))
                    if (accounts.count(m)) members += (members.empty() ? "" : ",") + m;
            group += f[0] + ":" + f[1] + ":" + f[2] + ":" + members + "\n";
        }
    }
    write_text(etc / "passwd", passwd, 0644);
    write_text(etc / "group", group, 0644);
}

// Moves every file of the tree into the owner's id range (uid u -> base + u).
void shift_owner(const fs::path& root, uid_t base) {
    auto shift = [&](const fs::path& p) {
        struct stat st;
        if (::lstat(p.c_str(), &st) < 0) return;
        uid_t u = st.st_uid < 65536 ? st.st_uid : 65534;
        gid_t g = st.st_gid < 65536 ? st.st_gid : 65534;
        if (::lchown(p.c_str(), base + u, base + g) < 0) fail("chown " + p.string(), errno);
        // chown clears set-id bits; they would not work inside (no_new_privs).
    };
    shift(root);
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(root, ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec))
        shift(it->path());
    if (ec) fail("walking " + root.string(), ec.value());
}

}  // namespace

void create_host_template(const fs::path& root, const HostTemplateOptions& options) {
    std::error_code ec;
    if (fs::exists(fs::symlink_status(root, ec))) fail(root.string() + " exists", EEXIST);
    const fs::path host = options.host_root;
    fs::path tmp = root;
    tmp += ".building-" + std::to_string(::getpid());
    fs::remove_all(tmp, ec);
    try {
        make_dir(tmp, 0755);
        for (const char* d :
             {"dev", "proc", "sys", "run", "usr", "home", "srv", "opt", "mnt", "media", "rw", "etc", "var"})
            make_dir(tmp / d, 0755);
        make_dir(tmp / "root", 0700);
        make_dir(tmp / "tmp", 01777);

        // The merged-/usr links, as the host has them.
        for (const char* l : {"bin", "sbin", "lib", "lib32", "lib64", "libx32"}) {
            fs::path hp = host / l;
            auto st = fs::symlink_status(hp, ec);
            if (!fs::exists(st)) continue;
            if (!fs::is_symlink(st))
                fail("the host has no merged /usr (" + hp.string() + " is a folder)", ENOTSUP);
            fs::create_symlink(fs::read_symlink(hp), tmp / l, ec);
            if (ec) fail("linking " + std::string(l), ec.value());
        }

        for (const char* d : {"cache", "lib", "local", "log", "mail", "opt", "spool", "backups"})
            make_dir(tmp / "var" / d, 0755);
        make_dir(tmp / "var" / "tmp", 01777);
        fs::create_symlink("../run", tmp / "var" / "run", ec);
        fs::create_symlink("../run/lock", tmp / "var" / "lock", ec);

        copy_etc(host / "etc", tmp / "etc");
        keep_system_accounts(host / "etc", tmp / "etc");
        // Qubes' `user` (1000), not the host's own account with that id.
        ensure_qube_user(tmp / "etc");
        // Locked passwords for every account and group.
        std::string shadow, gshadow;
        for (const auto& n : names_in(tmp / "etc" / "passwd")) shadow += n + ":*:19000:0:99999:7:::\n";
        for (const auto& n : names_in(tmp / "etc" / "group")) gshadow += n + ":*::\n";
        gid_t shadow_gid = group_id(host / "etc" / "group", "shadow");
        write_text(tmp / "etc" / "shadow", shadow, 0640);
        write_text(tmp / "etc" / "gshadow", gshadow, 0640);
        ::chown((tmp / "etc" / "shadow").c_str(), 0, shadow_gid);
        ::chown((tmp / "etc" / "gshadow").c_str(), 0, shadow_gid);
        write_text(tmp / "etc" / "fstab", "# a qube's mounts are made by Aerie\n", 0644);
        // Names of the qube's own, not the host's: a running qube's hostname
        // is its name (Aerie sets it); /etc/hostname only says "localhost".
        write_text(tmp / "etc" / "hostname", "localhost\n", 0644);
        write_text(tmp / "etc" / "hosts",
                   "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n", 0644);
        write_text(tmp / "etc" / "machine-id", "", 0444);
        make_dir(tmp / "etc" / "ssl", 0755);
        make_dir(tmp / "etc" / "ssl" / "private", 0700);
        write_text(tmp / kMarker, "host_root=" + host.string() + "\n", 0644);

        if (options.owner_base) shift_owner(tmp, options.owner_base);
        if (::rename(tmp.c_str(), root.c_str()) < 0) fail("renaming into " + root.string(), errno);
    } catch (...) {
        fs::remove_all(tmp, ec);
        throw;
    }
}

bool is_host_template(const fs::path& root) {
    std::error_code ec;
    return fs::is_regular_file(root / kMarker, ec);
}

std::vector<backend::BindMount> host_template_mounts(const HostTemplateOptions& options) {
    return {backend::BindMount{options.host_root / "usr", "/usr", true}};
}

}  // namespace aerie::storage
