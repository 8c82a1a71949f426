#include "storage/debootstrap.hpp"

#include "storage/accounts.hpp"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <ctime>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>

#include "storage/mounts.hpp"
#include "storage/tree.hpp"

extern char** environ;

namespace aerie::storage {

namespace fs = std::filesystem;

namespace {

std::vector<std::string> words(const std::string& s) {
    std::istringstream in(s);
    std::vector<std::string> out;
    for (std::string w; in >> w;) out.push_back(w);
    return out;
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
    return s;
}

bool usable_uri(const std::string& uri) {
    return uri.rfind("http://", 0) == 0 || uri.rfind("https://", 0) == 0 || uri.rfind("ftp://", 0) == 0 ||
           uri.rfind("file:", 0) == 0;
}

std::string trim_slash(std::string uri) {
    while (uri.size() > 1 && uri.back() == '/') uri.pop_back();
    return uri;
}

// "deb [arch=amd64 signed-by=...] http://deb.debian.org/debian bookworm main"
std::optional<std::string> from_one_line(const fs::path& file, const std::string& suite) {
    std::ifstream in(file);
    std::string line;
    while (std::getline(in, line)) {
        size_t hash = line.find('#');
        if (hash != std::string::npos) line.resize(hash);
        size_t open = line.find('[');
        if (open != std::string::npos) {
            size_t close = line.find(']', open);
            if (close == std::string::npos) continue;
            line.erase(open, close - open + 1);
        }
        auto w = words(line);
        if (w.size() < 3 || w[0] != "deb") continue;
        if (w[2] == suite && usable_uri(w[1])) return trim_slash(w[1]);
    }
    return std::nullopt;
}

// deb822 paragraphs: Types, URIs, Suites, Enabled.
std::optional<std::string> from_deb822(const fs::path& file, const std::string& suite) {
    std::ifstream in(file);
    std::string line;
    std::map<std::string, std::string> fields;
    std::string last;
    auto check = [&]() -> std::optional<std::string> {
        auto types = words(fields["types"]);
        auto suites = words(fields["suites"]);
        auto enabled_words = words(fields["enabled"]);
        bool enabled = enabled_words.empty() || lower(enabled_words[0]) != "no";
        if (enabled && std::count(types.begin(), types.end(), "deb") &&
            std::count(suites.begin(), suites.end(), suite))
            for (const auto& uri : words(fields["uris"]))
                if (usable_uri(uri)) return trim_slash(uri);
        return std::nullopt;
    };
    while (std::getline(in, line)) {
        if (!line.empty() && line[0] == '#') continue;
        if (line.find_first_not_of(" \t\r") == std::string::npos) {
            if (auto found = check()) return found;
            fields.clear();
            last.clear();
            continue;
        }
        if ((line[0] == ' ' || line[0] == '\t') && !last.empty()) {
            fields[last] += " " + line;
            continue;
        }
        size_t colon = line.find(':');
        if (colon == std::string::npos) continue;
        last = lower(line.substr(0, colon));
        fields[last] = line.substr(colon + 1);
    }
    return check();
}

void make_dir_if_missing(const fs::path& p, mode_t mode) {
    struct stat st;
    if (::lstat(p.c_str(), &st) == 0) return;
    if (::mkdir(p.c_str(), mode) < 0) throw_storage_errno("creating " + p.string(), errno);
    ::chmod(p.c_str(), mode);
}

// Replaces a file's content, keeping its owner and mode if it exists.
void put_file(const fs::path& p, const std::string& text, mode_t mode) {
    struct stat st;
    if (::lstat(p.c_str(), &st) == 0 && !S_ISREG(st.st_mode))
        ::unlink(p.c_str());  // e.g. a link to the host's
    int fd = ::open(p.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) throw_storage_errno("writing " + p.string(), errno);
    ssize_t n = ::write(fd, text.data(), text.size());
    int err = errno;
    ::close(fd);
    if (n != static_cast<ssize_t>(text.size()))
        throw_storage_errno("writing " + p.string(), n < 0 ? err : EIO);
}

int run(const std::vector<std::string>& argv, const fs::path& log) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    if (!log.empty()) {
        posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
        posix_spawn_file_actions_adddup2(&actions, 1, 2);
    }
    pid_t pid = 0;
    int rc = ::posix_spawnp(&pid, argv[0].c_str(), &actions, nullptr, args.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw_storage_errno("starting " + argv[0], rc);
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) throw_storage_errno("waiting for " + argv[0], errno);
    }
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

}  // namespace

std::string host_debian_mirror(const fs::path& apt_dir, const std::string& suite) {
    std::vector<fs::path> files;
    if (fs::exists(apt_dir / "sources.list")) files.push_back(apt_dir / "sources.list");
    std::vector<fs::path> parts;
    std::error_code ec;
    for (fs::directory_iterator it(apt_dir / "sources.list.d", ec), end; !ec && it != end; it.increment(ec)) {
        std::string ext = it->path().extension().string();
        if (ext == ".list" || ext == ".sources") parts.push_back(it->path());
    }
    std::sort(parts.begin(), parts.end());
    files.insert(files.end(), parts.begin(), parts.end());
    for (const auto& f : files) {
        auto found = f.extension() == ".sources" ? from_deb822(f, suite) : from_one_line(f, suite);
        if (found) return *found;
    }
    throw StorageError("no Debian mirror for " + suite + " in the apt sources of " + apt_dir.string() +
                       " (give one)");
}

std::vector<std::string> debootstrap_argv(const fs::path& target, const DebootstrapOptions& options,
                                          const std::string& mirror) {
    std::vector<std::string> argv = {options.program, "--variant=" + options.variant};
    if (!options.include.empty()) {
        std::string list;
        for (const auto& p : options.include) list += (list.empty() ? "" : ",") + p;
        argv.push_back("--include=" + list);
    }
    argv.push_back(options.suite);
    argv.push_back(target.string());
    argv.push_back(mirror);
    return argv;
}

void prepare_qube_root(const fs::path& root, const std::string& note) {
    for (const char* d : {"proc", "sys", "dev", "run", "usr", "rw", "home", "etc", "var"})
        make_dir_if_missing(root / d, 0755);
    make_dir_if_missing(root / "tmp", 01777);
    make_dir_if_missing(root / "root", 0700);
    const fs::path etc = root / "etc";
    // Nothing of the host's configuration: its mounts, name and resolver.
    put_file(etc / "fstab", "# a qube's mounts are made by Aerie\n", 0644);
    put_file(etc / "hostname", "localhost\n", 0644);
    put_file(etc / "resolv.conf", "", 0644);
    put_file(etc / "machine-id", "", 0444);
    if (!fs::exists(etc / "hosts"))
        put_file(etc / "hosts", "127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n", 0644);
    if (fs::exists(etc / "passwd") && fs::exists(etc / "group")) ensure_qube_user(etc);
    // The downloaded packages: installed, no longer needed.
    std::error_code ec;
    for (fs::directory_iterator it(root / "var" / "cache" / "apt" / "archives", ec), end; !ec && it != end;
         it.increment(ec))
        if (it->path().extension() == ".deb" && fs::is_regular_file(fs::symlink_status(it->path(), ec)))
            fs::remove(it->path(), ec);
    put_file(etc / "aerie-debootstrap-template", note, 0644);
}

void build_debootstrap_root(const fs::path& root, const DebootstrapOptions& options) {
    std::error_code ec;
    if (fs::exists(fs::symlink_status(root, ec))) throw StorageError(root.string() + " exists already");
    const std::string mirror =
        options.mirror.empty() ? host_debian_mirror(options.apt_dir, options.suite) : options.mirror;
    fs::path tmp = root;
    tmp += ".debootstrap-" + std::to_string(::getpid());
    auto cleanup = [&] {
        // debootstrap mounts /proc and /sys in its chroot; a failure may leave them.
        for (const auto& m : mounts_under(tmp)) unmount_all(m);
        remove_tree(tmp);
    };
    cleanup();
    try {
        if (::mkdir(tmp.c_str(), 0755) < 0) throw_storage_errno("creating " + tmp.string(), errno);
        const auto argv = debootstrap_argv(tmp, options, mirror);
        int rc = run(argv, options.log);
        if (rc != 0)
            throw StorageError("debootstrap of " + options.suite + " from " + mirror + " failed (exit " +
                               std::to_string(rc) + ")" +
                               (options.log.empty() ? "" : ", see " + options.log.string()));
        for (const auto& m : mounts_under(tmp)) unmount_all(m);
        prepare_qube_root(
            tmp, "suite=" + options.suite + "\nvariant=" + options.variant + "\nmirror=" + mirror + "\n");
        if (::rename(tmp.c_str(), root.c_str()) < 0)
            throw_storage_errno("renaming into " + root.string(), errno);
    } catch (...) {
        try {
            cleanup();
        } catch (...) {
        }
        throw;
    }
}

}  // namespace aerie::storage
