#include "storage/host_template.hpp"

#include "storage/accounts.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

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

// Host secrets a qube has no business with; regenerated or left out.
bool excluded(const fs::path& rel) {
    static const std::set<std::string> files = {"shadow",           "shadow-",    "gshadow", "gshadow-",
                                                "security/opasswd", "machine-id", "fstab",   "ssl/private",
                                                "subuid-",          "subgid-",    "passwd-", "group-"};
    std::string s = rel.generic_string();
    if (files.count(s)) return true;
    if (s.rfind("ssl/private/", 0) == 0) return true;
    if (s.rfind("ssh/ssh_host_", 0) == 0) return true;
    // Aerie's and Qubes' own host configuration (policy) stays on the host.
    if (s == "aerie" || s.rfind("aerie/", 0) == 0 || s == "qubes" || s.rfind("qubes/", 0) == 0) return true;
    return false;
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
        if (excluded(rel)) {
            if (it->is_directory(ec) && !it->is_symlink(ec)) it.disable_recursion_pending();
            continue;
        }
        const fs::path dst = to / rel;
        struct stat st;
        if (::lstat(src.c_str(), &st) < 0) continue;
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
