#include "storage/pool.hpp"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <sstream>

#include "base/safe_dir.hpp"
#include "base/unique_fd.hpp"
#include "storage/debootstrap.hpp"
#include "storage/image.hpp"
#include "storage/mounts.hpp"
#include "storage/tree.hpp"

namespace aerie::storage {

namespace fs = std::filesystem;

namespace {

enum class Klass { Template, Standalone, App, Disp, Remote, Admin };

Klass parse_klass(const std::string& klass) {
    if (klass == "TemplateVM") return Klass::Template;
    if (klass == "StandaloneVM") return Klass::Standalone;
    if (klass == "AppVM") return Klass::App;
    if (klass == "DispVM") return Klass::Disp;
    if (klass == "RemoteVM") return Klass::Remote;
    if (klass == "AdminVM") return Klass::Admin;
    throw StorageError("unknown qube class: " + klass);
}

bool has_own_root(Klass k) {
    return k == Klass::Template || k == Klass::Standalone;
}
bool has_volumes(Klass k) {
    return k != Klass::Remote && k != Klass::Admin;
}
// A private volume of its own, kept across starts (save_on_stop).
bool has_own_private(Klass k) {
    return k == Klass::Template || k == Klass::Standalone || k == Klass::App;
}

// A qube's uuid names folders: nothing that could climb out of them.
void check_uuid(const std::string& uuid) {
    bool ok = !uuid.empty() && uuid.size() <= 64 && uuid[0] != '.' && uuid[0] != '-';
    for (char c : uuid)
        if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_')) ok = false;
    if (!ok) throw StorageError("not a qube uuid: '" + uuid + "'");
}

void check_volume(const std::string& volume) {
    if (volume != "root" && volume != "private" && volume != "volatile")
        throw StorageError("no volume '" + volume + "'");
}

// A folder with this mode and owner; an existing one is only changed where
// it differs (no metadata write, no journal commit to wait for).
void make_dir(const fs::path& p, mode_t mode, uid_t uid = 0, gid_t gid = 0) {
    struct stat st;
    if (::mkdir(p.c_str(), mode) < 0 && errno != EEXIST) throw_storage_errno("creating " + p.string(), errno);
    if (::lstat(p.c_str(), &st) < 0) throw_storage_errno("creating " + p.string(), errno);
    if (!S_ISDIR(st.st_mode)) throw StorageError("creating " + p.string() + ": not a folder");
    if ((st.st_uid != uid || st.st_gid != gid) && ::lchown(p.c_str(), uid, gid) < 0)
        throw_storage_errno("setting the owner of " + p.string(), errno);
    // After chown, which drops set-id bits; mkdir's mode went through the umask.
    if (((st.st_mode & 07777) != mode || ((st.st_uid != uid || st.st_gid != gid) && (mode & 06000))) &&
        ::chmod(p.c_str(), mode) < 0)
        throw_storage_errno("setting the mode of " + p.string(), errno);
}

bool present(const fs::path& p) {
    struct stat st;
    return ::lstat(p.c_str(), &st) == 0;
}

bool is_dir(const fs::path& p) {
    struct stat st;
    return ::lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

std::optional<uid_t> owner_of(const fs::path& p) {
    struct stat st;
    if (::lstat(p.c_str(), &st) < 0) return std::nullopt;
    return st.st_uid;
}

// The root of a fresh file system holds lost+found only.
bool is_empty_volume(const fs::path& p) {
    std::error_code ec;
    for (fs::directory_iterator it(p, ec), end; !ec && it != end; it.increment(ec))
        if (it->path().filename() != "lost+found") return false;
    return !ec;
}

const char* const kVolumes[] = {"root", "private", "volatile"};

// Small files of the pool: written to a temporary name and renamed.
void write_small(const fs::path& path, const std::string& text) {
    fs::path tmp = path;
    tmp += ".tmp";
    int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) throw_storage_errno("writing " + path.string(), errno);
    ssize_t n = ::write(fd, text.data(), text.size());
    int err = errno;
    ::close(fd);
    if (n != static_cast<ssize_t>(text.size()))
        throw_storage_errno("writing " + path.string(), n < 0 ? err : EIO);
    if (::rename(tmp.c_str(), path.c_str()) < 0) throw_storage_errno("writing " + path.string(), errno);
}

std::optional<std::string> read_small(const fs::path& path) {
    std::ifstream in(path);
    if (!in) return std::nullopt;
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

// ---- change stamps -----------------------------------------------------------

std::optional<fs::file_time_type> stamp_time(const fs::path& stamp) {
    std::error_code ec;
    auto t = fs::last_write_time(stamp, ec);
    if (ec) return std::nullopt;
    return t;
}

int64_t stamp_ns(const fs::path& stamp) {
    struct stat st;
    if (::stat(stamp.c_str(), &st) < 0) return 0;
    return static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
}

// Moves the stamp's mtime to now, and at least a nanosecond past its last
// value: every change gives a new time, however close.
void bump_stamp(const fs::path& stamp) {
    int64_t old = stamp_ns(stamp);
    int fd = ::open(stamp.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) throw_storage_errno("writing " + stamp.string(), errno);
    struct timespec now;
    ::clock_gettime(CLOCK_REALTIME, &now);
    int64_t ns = static_cast<int64_t>(now.tv_sec) * 1000000000 + now.tv_nsec;
    if (ns <= old) ns = old + 1;
    struct timespec times[2] = {{ns / 1000000000, ns % 1000000000}, {ns / 1000000000, ns % 1000000000}};
    int rc = ::futimens(fd, times);
    int err = errno;
    ::close(fd);
    if (rc < 0) throw_storage_errno("writing " + stamp.string(), err);
}

// ---- revision names ----------------------------------------------------------

// Qubes' revision name: the UTC time of the saved state, to the second,
// ISO 8601 with a Z (qubes.storage.isodate(...) + 'Z').
std::string iso_name(time_t t) {
    struct tm tm;
    ::gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

std::optional<time_t> parse_iso_name(const std::string& name) {
    struct tm tm {};
    char z = 0;
    if (name.size() != 20 ||
        std::sscanf(name.c_str(), "%4d-%2d-%2dT%2d:%2d:%2d%c", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                    &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &z) != 7 ||
        z != 'Z')
        return std::nullopt;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return ::timegm(&tm);
}

bool is_revision_name(const std::string& name) {
    return parse_iso_name(name).has_value();
}

std::vector<std::string> all_revisions(const fs::path& dir) {
    std::vector<std::string> names;
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
        std::string n = it->path().filename().string();
        if (is_revision_name(n)) names.push_back(n);
    }
    std::sort(names.begin(), names.end());
    return names;
}

}  // namespace

// ---- the run state -----------------------------------------------------------

// What start() did, for stop() and for answers while the qube runs; kept in
// <pool>/run/<uuid>/state, so it outlives a restart of the daemon.
struct FilePool::RunState {
    std::string klass;
    uid_t owner = 0;
    bool idmap = false;
    std::string root_source, private_source;  // uuids of the snapshots' sources
    int64_t root_stamp = 0, private_stamp = 0;

    // The volumes (uuid, volume) a started qube holds mounted.
    std::vector<std::pair<std::string, std::string>> held(const std::string& uuid) const {
        std::vector<std::pair<std::string, std::string>> out;
        if (!root_source.empty())
            out.emplace_back(root_source, "root");
        else if (klass == "TemplateVM" || klass == "StandaloneVM")
            out.emplace_back(uuid, "root");
        if (!private_source.empty())
            out.emplace_back(private_source, "private");
        else if (klass != "DispVM")
            out.emplace_back(uuid, "private");
        out.emplace_back(uuid, "volatile");
        return out;
    }

    std::string text() const {
        std::ostringstream o;
        o << "klass=" << klass << "\nowner=" << owner << "\nidmap=" << (idmap ? 1 : 0)
          << "\nroot_source=" << root_source << "\nroot_stamp=" << root_stamp
          << "\nprivate_source=" << private_source << "\nprivate_stamp=" << private_stamp << "\n";
        return o.str();
    }
    static std::optional<RunState> read(const fs::path& file) {
        auto text = read_small(file);
        if (!text) return std::nullopt;
        RunState s;
        std::istringstream in(*text);
        std::string line;
        while (std::getline(in, line)) {
            size_t eq = line.find('=');
            if (eq == std::string::npos) continue;
            std::string k = line.substr(0, eq), v = line.substr(eq + 1);
            try {
                if (k == "klass")
                    s.klass = v;
                else if (k == "owner")
                    s.owner = static_cast<uid_t>(std::stoul(v));
                else if (k == "idmap")
                    s.idmap = v == "1";
                else if (k == "root_source")
                    s.root_source = v;
                else if (k == "root_stamp")
                    s.root_stamp = std::stoll(v);
                else if (k == "private_source")
                    s.private_source = v;
                else if (k == "private_stamp")
                    s.private_stamp = std::stoll(v);
            } catch (const std::exception&) {
            }
        }
        return s;
    }
};

std::string format_volume_info(const VolumeInfo& i) {
    auto b = [](bool v) { return v ? "True" : "False"; };
    std::ostringstream o;
    o << "pool=" << i.pool << "\nvid=" << i.vid << "\nsize=" << i.size << "\nusage=" << i.usage
      << "\nrw=" << b(i.rw) << "\nsource=" << i.source << "\npath=" << i.path
      << "\nsave_on_stop=" << b(i.save_on_stop) << "\nsnap_on_start=" << b(i.snap_on_start)
      << "\nrevisions_to_keep=" << i.revisions_to_keep << "\nephemeral=" << b(i.ephemeral)
      << "\nis_outdated=" << b(i.is_outdated) << "\n";
    return o.str();
}

FilePool::FilePool(fs::path dir, std::string name) : FilePool(std::move(dir), PoolOptions{std::move(name)}) {}

FilePool::FilePool(fs::path dir, PoolOptions options)
    : dir_(fs::absolute(dir).lexically_normal()), options_(std::move(options)) {
    if (!dir_.has_filename()) dir_ = dir_.parent_path();
    std::error_code ec;
    fs::create_directories(dir_, ec);
    if (ec) throw StorageError("creating the pool folder " + dir_.string() + ": " + ec.message());
    // Template roots hold set-uid programs of host root: no way in for others.
    if (::chmod(dir_.c_str(), 0700) < 0) throw_storage_errno("setting the mode of " + dir_.string(), errno);
    make_dir(dir_ / "vm", 0700);
    make_dir(dir_ / "run", 0700);
    make_dir(dir_ / "trash", 0700);
    make_dir(dir_ / "blank", 0700);
    // The pool's own revisions_to_keep, once set (admin.pool.Set.revisions_to_keep).
    if (auto text = read_small(dir_ / "revisions_to_keep")) {
        try {
            options_.revisions_to_keep = std::stoi(*text);
        } catch (const std::exception&) {
        }
    }
    // The volumes the started qubes of an earlier run hold (still mounted).
    for (fs::directory_iterator it(dir_ / "run", ec), end; !ec && it != end; it.increment(ec)) {
        auto state = RunState::read(it->path() / "state");
        if (!state) continue;
        const std::string uuid = it->path().filename().string();
        for (const auto& [owner, volume] : state->held(uuid)) ++holds_[owner + "/" + volume];
    }
    ec.clear();
    // Left by an earlier run: revisions still to keep, things to delete.
    std::lock_guard lock(bg_mutex_);
    ec.clear();
    for (fs::directory_iterator it(dir_ / "vm", ec), end; !ec && it != end; it.increment(ec))
        if (present(it->path() / "revisions.pending")) bg_jobs_.push_back(it->path().filename().string());
    bg_trash_ = !fs::is_empty(dir_ / "trash", ec);
    if (!bg_jobs_.empty() || bg_trash_) start_worker();
}

fs::path FilePool::vm_dir(const std::string& uuid) const {
    check_uuid(uuid);
    return dir_ / "vm" / uuid;
}

fs::path FilePool::run_dir(const std::string& uuid) const {
    check_uuid(uuid);
    return dir_ / "run" / uuid;
}

fs::path FilePool::volume_path(const std::string& uuid, const std::string& volume) const {
    check_volume(volume);
    return vm_dir(uuid) / volume;
}

fs::path FilePool::image_path(const std::string& uuid, const std::string& volume) const {
    check_volume(volume);
    return vm_dir(uuid) / (volume + ".img");
}

// ---- mounted volumes ---------------------------------------------------------

void FilePool::hold(const std::string& uuid, const std::string& volume) const {
    const fs::path image = image_path(uuid, volume), point = volume_path(uuid, volume);
    std::lock_guard lock(mount_mutex_);
    int& count = holds_[uuid + "/" + volume];
    if (!is_mount_root(point)) {  // the first holder (or mounts gone since: a reboot)
        try {
            if (!present(image)) throw StorageError("no " + volume + " volume of " + uuid);
            if (!is_dir(point)) make_dir(point, 0700);
            const fs::path pending = vm_dir(uuid) / (volume + ".grow");
            if (present(pending)) {  // left by a crash before it was done
                grow_image_filesystem(image);
                ::unlink(pending.c_str());
            }
            mount_image(image, point, volume == "root", volume == "volatile");
        } catch (...) {
            holds_.erase(uuid + "/" + volume);
            throw;
        }
    }
    ++count;
}

void FilePool::release(const std::string& uuid, const std::string& volume) const {
    std::lock_guard lock(mount_mutex_);
    auto it = holds_.find(uuid + "/" + volume);
    if (it != holds_.end() && --it->second > 0) return;
    if (it != holds_.end()) holds_.erase(it);
    const fs::path point = volume_path(uuid, volume), pending = vm_dir(uuid) / (volume + ".grow");
    // Written through to the image first: a copy of this mount in a mount
    // namespace cloned meanwhile may keep the file system alive after the
    // unmount, and a revision copies the image file right after it.
    if (int fd = ::open(point.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC); fd >= 0) {
        if (is_mount_root(point)) ::syncfs(fd);
        ::close(fd);
    }
    if (::umount2(point.c_str(), UMOUNT_NOFOLLOW) < 0) {
        if (errno == EINVAL || errno == ENOENT) return;
        unmount_volume(point);  // busy: detached; the file system still lives, not to be grown now
        return;
    }
    // A Resize while it was mounted, where it could not grow online.
    if (present(pending)) {
        grow_image_filesystem(image_path(uuid, volume));
        ::unlink(pending.c_str());
    }
}

void FilePool::new_image(const fs::path& dst, uint64_t size, uint64_t per_inode, bool journal) const {
    const fs::path blank = dir_ / "blank" /
                           (std::to_string(size) + "-" + std::to_string(per_inode) + (journal ? "" : "-scratch") + ".img");
    {
        std::lock_guard lock(blank_mutex_);
        if (!present(blank)) {
            fs::path tmp = blank;
            tmp += ".tmp";
            ::unlink(tmp.c_str());
            make_ext4_image(tmp, size, per_inode, journal);
            if (::rename(tmp.c_str(), blank.c_str()) < 0) throw_storage_errno("keeping " + blank.string(), errno);
        }
    }
    copy_image(blank, dst);
}

void FilePool::copy_volume(const std::string& uuid, const std::string& volume, const fs::path& dst) const {
    hold(uuid, volume);
    try {
        FrozenVolume frozen(volume_path(uuid, volume));
        copy_image(image_path(uuid, volume), dst);
    } catch (...) {
        release(uuid, volume);
        throw;
    }
    release(uuid, volume);
}

// A fresh (empty) volatile image of the same size for the next start; the
// used one goes to the trash (unlinking gigabytes of it is the worker's).
void FilePool::refresh_volatile(const std::string& uuid) const {
    const fs::path image = image_path(uuid, "volatile");
    uint64_t size = present(image) ? image_size(image) : kVolatileImgSize;
    fs::path tmp = image;
    tmp += ".new";
    ::unlink(tmp.c_str());
    new_image(tmp, size, kDefaultBytesPerInode, false);
    discard(image);
    if (::rename(tmp.c_str(), image.c_str()) < 0) throw_storage_errno("renewing " + image.string(), errno);
}

FilePool::~FilePool() {
    {
        std::lock_guard lock(bg_mutex_);
        bg_stop_ = true;
    }
    bg_cv_.notify_all();
    if (bg_thread_.joinable()) bg_thread_.join();
    for (auto& [owner, fd] : userns_) ::close(fd);
}

// ---- background work: revisions to keep, the trash ---------------------------

void FilePool::start_worker() const {
    if (!bg_thread_.joinable()) bg_thread_ = std::thread([this] { worker(); });
    bg_cv_.notify_all();
}

// A fresh name in the trash (time and a sequence number: never reused).
fs::path FilePool::trash_name() const {
    std::lock_guard lock(bg_mutex_);
    struct timespec now;
    ::clock_gettime(CLOCK_REALTIME, &now);
    return dir_ / "trash" /
           (std::to_string(now.tv_sec) + "." + std::to_string(now.tv_nsec) + "-" + std::to_string(++trash_seq_));
}

// Moved (or, by `link_only`, hard-linked) into the trash, which the worker empties.
void FilePool::to_trash(const fs::path& path, bool link_only) const {
    const fs::path name = trash_name();
    if ((link_only ? ::link(path.c_str(), name.c_str()) : ::rename(path.c_str(), name.c_str())) < 0) {
        if (errno == ENOENT) return;
        throw_storage_errno("discarding " + path.string(), errno);
    }
    std::lock_guard lock(bg_mutex_);
    bg_trash_ = true;
    start_worker();
}

void FilePool::discard(const fs::path& path) const {
    if (present(path)) to_trash(path, false);
}

void FilePool::discard_link(const fs::path& path) const { to_trash(path, true); }

void FilePool::discard_entries(const fs::path& dir) const {
    std::error_code ec;
    std::vector<fs::path> entries;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
        entries.push_back(it->path());
    if (ec && ec != std::errc::no_such_file_or_directory)
        throw StorageError("reading " + dir.string() + ": " + ec.message());
    for (const auto& e : entries) discard(e);
}

void FilePool::worker() const {
    std::unique_lock lock(bg_mutex_);
    for (;;) {
        bg_cv_.wait(lock, [&] { return bg_stop_ || !bg_jobs_.empty() || bg_trash_; });
        if (bg_stop_) return;
        bg_busy_ = true;
        if (!bg_jobs_.empty()) {
            std::string uuid = bg_jobs_.front();
            bg_jobs_.pop_front();
            if (!bg_running_.insert(uuid).second) {  // a start is on it
                bg_busy_ = false;
                continue;
            }
            lock.unlock();
            take_pending(uuid);
            lock.lock();
            bg_running_.erase(uuid);
        } else {
            bg_trash_ = false;
            lock.unlock();
            std::error_code ec;
            std::vector<fs::path> entries;
            for (fs::directory_iterator it(dir_ / "trash", ec), end; !ec && it != end; it.increment(ec))
                entries.push_back(it->path());
            for (const auto& e : entries) {
                {
                    std::lock_guard check(bg_mutex_);
                    if (bg_stop_ || !bg_jobs_.empty()) {  // revisions first
                        bg_trash_ = true;
                        break;
                    }
                }
                try {
                    remove_tree(e);
                } catch (const StorageError&) {
                    // e.g. something mounted inside: left for whoever looks
                }
            }
            lock.lock();
        }
        bg_busy_ = false;
        bg_idle_cv_.notify_all();
    }
}

void FilePool::flush() {
    std::unique_lock lock(bg_mutex_);
    bg_trash_ = true;
    start_worker();
    bg_idle_cv_.wait(lock, [&] {
        return bg_stop_ || (bg_jobs_.empty() && !bg_trash_ && !bg_busy_ && bg_running_.empty());
    });
}

// The qube's pending revisions, kept now (or waited for, if the background
// thread is on them).
void FilePool::settle(const std::string& uuid) const {
    {
        std::unique_lock lock(bg_mutex_);
        bg_idle_cv_.wait(lock, [&] { return !bg_running_.count(uuid); });
        bg_jobs_.erase(std::remove(bg_jobs_.begin(), bg_jobs_.end(), uuid), bg_jobs_.end());
        if (!present(vm_dir(uuid) / "revisions.pending")) return;
        bg_running_.insert(uuid);
    }
    take_pending(uuid);
    std::lock_guard lock(bg_mutex_);
    bg_running_.erase(uuid);
    bg_idle_cv_.notify_all();
}

void FilePool::cancel(const std::string& uuid) {
    std::unique_lock lock(bg_mutex_);
    bg_idle_cv_.wait(lock, [&] { return !bg_running_.count(uuid); });
    bg_jobs_.erase(std::remove(bg_jobs_.begin(), bg_jobs_.end(), uuid), bg_jobs_.end());
}

// revisions.pending: "time=<when stopped>" and the volumes, a line each.
void FilePool::take_pending(const std::string& uuid) const {
    const fs::path dir = vm_dir(uuid), marker = dir / "revisions.pending";
    auto text = read_small(marker);
    if (!text) return;
    std::istringstream in(*text);
    std::string line;
    time_t saved_at = ::time(nullptr);
    std::string error;
    while (std::getline(in, line)) {
        if (line.rfind("time=", 0) == 0) {
            try {
                saved_at = static_cast<time_t>(std::stoll(line.substr(5)));
            } catch (const std::exception&) {
            }
            continue;
        }
        if (line != "root" && line != "private") continue;
        try {
            snapshot(uuid, line, saved_at);
        } catch (const std::exception& e) {
            error += (error.empty() ? "" : "; ") + line + ": " + e.what();
        }
    }
    // A failure is not retried (it would hold up the next start): it is
    // written down next to the volumes.
    try {
        if (error.empty()) {
            ::unlink((dir / "revisions.error").c_str());
        } else {
            write_small(dir / "revisions.error", error + "\n");
        }
    } catch (const StorageError&) {
    }
    ::unlink(marker.c_str());
}

int FilePool::userns_for(uid_t owner) {
    std::lock_guard lock(userns_mutex_);
    auto it = userns_.find(owner);
    if (it != userns_.end()) return it->second;
    if (userns_.size() >= 4096) {  // a bound; they are cheap to make again
        for (auto& [o, fd] : userns_) ::close(fd);
        userns_.clear();
    }
    int fd = make_userns_fd(owner, kIdsPerQube);
    userns_.emplace(owner, fd);
    return fd;
}

bool FilePool::use_idmap() const {
    if (!options_.idmapped_mounts) return false;
    std::lock_guard lock(probe_mutex_);
    if (!idmap_works_) idmap_works_ = idmapped_mounts_work(dir_ / "run");
    return *idmap_works_;
}

std::vector<std::string> FilePool::volumes(const std::string& klass) const {
    if (!has_volumes(parse_klass(klass))) return {};
    return {"root", "private", "volatile"};
}

// ---- create, clone, remove ---------------------------------------------------

void FilePool::create(const std::string& uuid, const std::string& klass) {
    Klass k = parse_klass(klass);
    fs::path dir = vm_dir(uuid);
    if (!has_volumes(k)) return;
    if (present(dir)) throw StorageError("volumes of " + uuid + " exist already");
    // Made aside and renamed: a crash leaves no half qube.
    fs::path tmp = dir_ / "vm" / (".new-" + uuid);
    remove_tree(tmp);
    try {
        make_dir(tmp, 0700);
        if (has_own_root(k)) {
            make_dir(tmp / "root", 0700);
            new_image(tmp / "root.img", kRootImgSize, kDefaultBytesPerInode);
            bump_stamp(tmp / "root.changed");
        }
        if (k != Klass::Disp) {
            make_dir(tmp / "private", 0700);
            new_image(tmp / "private.img", kPrivateImgSize, kPrivateBytesPerInode);
        }
        make_dir(tmp / "volatile", 0700);
        new_image(tmp / "volatile.img", k == Klass::Disp ? kVolatileImgSize + kPrivateImgSize : kVolatileImgSize,
                  kDefaultBytesPerInode, false);
        if (::rename(tmp.c_str(), dir.c_str()) < 0) throw_storage_errno("creating " + dir.string(), errno);
    } catch (...) {
        try {
            remove_tree(tmp);
        } catch (...) {
        }
        throw;
    }
    if (k != Klass::Disp) make_empty_home(uuid);
}

// A private volume starts with an empty home/ (a fresh file system: nothing
// of a qube in it yet).
void FilePool::make_empty_home(const std::string& uuid) const {
    hold(uuid, "private");
    try {
        base::UniqueFd top = base::open_trusted_dir(volume_path(uuid, "private"));
        base::ensure_dir_beneath(top.get(), "home", 0755, "private volume of " + uuid);
    } catch (const std::exception& e) {
        release(uuid, "private");
        throw StorageError(std::string("making home/ in the private volume: ") + e.what());
    }
    release(uuid, "private");
}

void FilePool::clone(const std::string& src_uuid, const std::string& dst_uuid, const std::string& klass) {
    Klass k = parse_klass(klass);
    fs::path src = vm_dir(src_uuid), dst = vm_dir(dst_uuid);
    if (!has_volumes(k)) return;
    if (!is_dir(src)) throw StorageError("no volumes of " + src_uuid);
    if (present(dst)) throw StorageError("volumes of " + dst_uuid + " exist already");
    // From a running qube: the state it was last stopped with, where a copy
    // of it is kept (Qubes exports the committed image), else the live one
    // (its file system frozen while it is copied).
    settle(src_uuid);
    const bool running = is_started(src_uuid);
    auto copy = [&](const std::string& volume, const fs::path& to) {
        if (!present(image_path(src_uuid, volume))) throw StorageError("no " + volume + " volume of " + src_uuid);
        if (running) {
            auto head = read_small(src / "revisions" / (volume + ".head"));
            if (head && is_revision_name(*head) && present(src / "revisions" / volume / *head))
                return copy_image(src / "revisions" / volume / *head, to);
        }
        copy_volume(src_uuid, volume, to);
    };
    fs::path tmp = dir_ / "vm" / (".new-" + dst_uuid);
    remove_tree(tmp);
    try {
        make_dir(tmp, 0700);
        if (has_own_root(k)) {
            make_dir(tmp / "root", 0700);
            copy("root", tmp / "root.img");
            if (present(src / "root.host-usr")) write_small(tmp / "root.host-usr", "1\n");
            bump_stamp(tmp / "root.changed");
        }
        if (k != Klass::Disp) {
            make_dir(tmp / "private", 0700);
            copy("private", tmp / "private.img");
        }
        make_dir(tmp / "volatile", 0700);
        const fs::path volatile_src = image_path(src_uuid, "volatile");
        new_image(tmp / "volatile.img", present(volatile_src) ? image_size(volatile_src) : kVolatileImgSize,
                  kDefaultBytesPerInode, false);
        if (::rename(tmp.c_str(), dst.c_str()) < 0) throw_storage_errno("creating " + dst.string(), errno);
    } catch (...) {
        try {
            remove_tree(tmp);
        } catch (...) {
        }
        throw;
    }
}

namespace {
// Whether a class's volume keeps its data (Qubes' save_on_stop).
bool saves_on_stop(Klass k, const std::string& volume) {
    if (volume == "root") return has_own_root(k);
    if (volume == "private") return k != Klass::Disp;
    return false;
}
}  // namespace

void FilePool::replace_image(const std::string& uuid, const std::string& volume,
                             const std::function<void(const fs::path&)>& make) {
    if (is_started(uuid)) throw StorageError("volume " + volume_vid(uuid, volume) + " is in use: its qube runs");
    const fs::path image = image_path(uuid, volume);
    if (!present(image)) throw StorageError("no " + volume + " volume of " + uuid);
    fs::path tmp = image;
    tmp += ".import";
    ::unlink(tmp.c_str());
    try {
        make(tmp);
    } catch (...) {
        ::unlink(tmp.c_str());
        throw;
    }
    // Swapped while nothing holds it (a snapshot of it in a running qube, a
    // copy being made): the lock keeps new holders out meanwhile.
    std::lock_guard lock(mount_mutex_);
    auto held = holds_.find(uuid + "/" + volume);
    if ((held != holds_.end() && held->second > 0) || is_mount_root(volume_path(uuid, volume))) {
        ::unlink(tmp.c_str());
        throw StorageError("volume " + volume_vid(uuid, volume) + " is in use");
    }
    // The old image gets a second name in the trash first, then the new one
    // takes its place in one rename: a kill -9 leaves one or the other.
    discard_link(image);
    if (::rename(tmp.c_str(), image.c_str()) < 0) throw_storage_errno("replacing " + image.string(), errno);
    if (volume == "root") bump_stamp(vm_dir(uuid) / "root.changed");
}

void FilePool::import_volume(const std::string& dst_uuid, const std::string& dst_klass, const std::string& src_uuid,
                             const std::string& src_klass, const std::string& volume) {
    check_volume(volume);
    const Klass dk = parse_klass(dst_klass), sk = parse_klass(src_klass);
    if (!has_volumes(sk) || (volume != "volatile" && !saves_on_stop(sk, volume)))
        throw StorageError("Can not import snapshot volume " + volume_vid(src_uuid, volume) + " in to pool " +
                           options_.name + " ");
    if (!has_volumes(dk) || !saves_on_stop(dk, volume)) return;
    const fs::path src = vm_dir(src_uuid);
    settle(src_uuid);
    const bool running = is_started(src_uuid);
    replace_image(dst_uuid, volume, [&](const fs::path& to) {
        if (running) {
            auto head = read_small(src / "revisions" / (volume + ".head"));
            if (head && is_revision_name(*head) && present(src / "revisions" / volume / *head))
                return copy_image(src / "revisions" / volume / *head, to);
        }
        copy_volume(src_uuid, volume, to);
    });
    if (volume == "root") {
        if (present(src / "root.host-usr"))
            write_small(vm_dir(dst_uuid) / "root.host-usr", "1\n");
        else
            ::unlink((vm_dir(dst_uuid) / "root.host-usr").c_str());
    }
}

void FilePool::clear(const std::string& uuid, const std::string& klass, const std::string& volume) {
    check_volume(volume);
    const Klass k = parse_klass(klass);
    if (!has_volumes(k) || !saves_on_stop(k, volume))
        throw StorageError("Can not import into save_on_stop=False volume " + volume_vid(uuid, volume));
    const uint64_t size = image_size(image_path(uuid, volume));
    replace_image(uuid, volume, [&](const fs::path& to) {
        new_image(to, size, volume == "private" ? kPrivateBytesPerInode : kDefaultBytesPerInode);
    });
    if (volume == "root") ::unlink((vm_dir(uuid) / "root.host-usr").c_str());
    if (volume == "private") {
        make_empty_home(uuid);
    }
}

fs::path FilePool::import_path(const std::string& uuid, const std::string& volume) const {
    check_volume(volume);
    return vm_dir(uuid) / (volume + "-import.img");
}

fs::path FilePool::begin_import(const std::string& uuid, const std::string& klass, const std::string& volume,
                                std::optional<uint64_t> size) {
    check_volume(volume);
    const Klass k = parse_klass(klass);
    if (!has_volumes(k) || !saves_on_stop(k, volume))
        throw StorageError("Can not import into save_on_stop=False volume " + volume_vid(uuid, volume));
    if (is_started(uuid))
        throw StorageError("volume " + volume_vid(uuid, volume) + " is in use: its qube runs");
    const uint64_t bytes = size ? *size : image_size(image_path(uuid, volume));
    const fs::path path = import_path(uuid, volume);
    ::unlink(path.c_str());  // an import that never ended
    base::UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) throw_storage_errno("creating " + path.string(), errno);
    if (::ftruncate(fd.get(), static_cast<off_t>(bytes)) < 0) {
        int err = errno;
        ::unlink(path.c_str());
        throw_storage_errno("creating " + path.string() + " of " + std::to_string(bytes) + " bytes", err);
    }
    return path;
}

void FilePool::end_import(const std::string& uuid, const std::string& klass, const std::string& volume,
                          bool success) {
    check_volume(volume);
    const fs::path path = import_path(uuid, volume);
    if (!present(path)) throw StorageError("no import of volume " + volume_vid(uuid, volume) + " was begun");
    if (!success) {
        ::unlink(path.c_str());
        return;
    }
    const Klass k = parse_klass(klass);
    if (!has_volumes(k) || !saves_on_stop(k, volume)) {
        ::unlink(path.c_str());
        throw StorageError("Can not import into save_on_stop=False volume " + volume_vid(uuid, volume));
    }
    // The host mounts its volumes: whatever came must be an ext4 file system
    // e2fsck finds clean (read-only check) before it is ever mounted.
    try {
        run_e2fsprogs("e2fsck", {"-f", "-n", "--", path.string()});
    } catch (const StorageError&) {
        ::unlink(path.c_str());
        throw StorageError("the data is not an ext4 file system without errors (e2fsck -fn found problems)");
    }
    try {
        replace_image(uuid, volume, [&](const fs::path& to) {
            if (::rename(path.c_str(), to.c_str()) < 0)
                throw_storage_errno("renaming " + path.string(), errno);
        });
    } catch (...) {
        ::unlink(path.c_str());
        throw;
    }
    if (volume == "root") ::unlink((vm_dir(uuid) / "root.host-usr").c_str());
}

void FilePool::teardown(const std::string& uuid) {
    fs::path run = run_dir(uuid);
    for (const char* m : {"root", "private", ".lower", ".private-lower"}) unmount_all(run / m);
}

void FilePool::remove(const std::string& uuid) {
    fs::path run = run_dir(uuid), dir = vm_dir(uuid);
    cancel(uuid);
    teardown(uuid);
    // Whatever else is mounted in its folders: its volumes (held by nothing
    // once it and its qubes are gone), or left by an older run.
    {
        std::lock_guard lock(mount_mutex_);
        for (const char* volume : kVolumes) holds_.erase(uuid + "/" + volume);
        for (const fs::path& root : {run, dir})
            for (const fs::path& m : mounts_under(root)) unmount_all(m);
    }
    remove_tree(run);
    discard(dir);
    discard(dir_ / "vm" / (".new-" + uuid));
}

// ---- start, stop -------------------------------------------------------------

StartedVolumes FilePool::start(const std::string& uuid, const std::string& klass,
                               const std::optional<std::string>& template_uuid, uid_t owner) {
    if (parse_klass(klass) == Klass::Disp)
        throw StorageError(
            "a DispVM's storage starts from its template chain (disposable template, TemplateVM)");
    std::vector<std::string> chain;
    if (template_uuid) chain.push_back(*template_uuid);
    return start(uuid, klass, chain, owner);
}

namespace {

// The mount points a backend needs in an own root: through an id-mapped
// mount, host root cannot make them. Made beneath the root's descriptor
// (the root is the qube's: names in it are not followed).
void make_root_mount_points(const fs::path& root) {
    base::UniqueFd top = base::open_trusted_dir(root);
    for (const char* d : {"proc", "sys", "dev", "run", "tmp", "usr", "rw", "home"}) {
        const bool tmp = std::strcmp(d, "tmp") == 0;
        if (::mkdirat(top.get(), d, 0755) < 0) {
            if (errno == EEXIST) continue;
            throw_storage_errno("making /" + std::string(d) + " in " + root.string(), errno);
        }
        if (tmp) {  // made just now by us: set its sticky mode through a descriptor
            base::UniqueFd fd = base::open_beneath(top.get(), d, O_RDONLY | O_DIRECTORY, base::FileKind::Directory,
                                                   root.string());
            if (::fchmod(fd.get(), 01777) < 0) throw_storage_errno("setting the mode of /tmp", errno);
        }
    }
}

}  // namespace

StartedVolumes FilePool::start(const std::string& uuid, const std::string& klass,
                               const std::vector<std::string>& templates, uid_t owner) {
    Klass k = parse_klass(klass);
    if (!has_volumes(k)) throw StorageError(klass + " has no volumes to start");
    const fs::path dir = vm_dir(uuid), run = run_dir(uuid);
    if (!is_dir(dir)) throw StorageError("no volumes of " + uuid);
    if (present(run / "state")) throw StorageError("the volumes of " + uuid + " are started already");
    settle(uuid);  // the revisions of the last stop, before anything changes
    if ((k == Klass::App && templates.size() != 1) || (k == Klass::Disp && templates.size() != 2))
        throw StorageError(klass + " " + uuid + ": wrong template chain (" +
                           std::to_string(templates.size()) + " given)");

    RunState state;
    state.klass = klass;
    state.owner = owner;
    state.idmap = owner != 0 && use_idmap();
    if (k == Klass::App || k == Klass::Disp) state.root_source = templates.back();
    if (k == Klass::Disp) state.private_source = templates.front();
    const uint32_t count = kIdsPerQube;
    const int userns = state.idmap ? userns_for(owner) : -1;
    StartedVolumes out;
    out.root = run / "root";
    std::vector<std::pair<std::string, std::string>> held;
    try {
        teardown(uuid);
        make_dir(run, 0700);
        make_dir(run / "root", 0755);
        if (!present(image_path(uuid, "volatile"))) refresh_volatile(uuid);  // e.g. a crash in a stop
        for (const auto& [owner_uuid, volume] : state.held(uuid)) {
            if (owner_uuid != uuid && !present(image_path(owner_uuid, volume)))
                throw StorageError(owner_uuid == state.root_source
                                       ? "the template " + owner_uuid + " has no root volume"
                                       : "the disposable template " + owner_uuid + " has no private volume");
            hold(owner_uuid, volume);
            held.emplace_back(owner_uuid, volume);
        }
        // The scratch layers, in the fresh volatile file system.
        const fs::path volatile_dir = dir / "volatile";
        base::UniqueFd scratch = base::open_trusted_dir(volatile_dir);
        auto scratch_dir = [&](const char* name, mode_t mode, uid_t uid) {
            base::ensure_dir_beneath(scratch.get(), name, mode, "volatile volume");
            base::UniqueFd d = base::open_beneath(scratch.get(), name, O_RDONLY | O_DIRECTORY,
                                                  base::FileKind::Directory, "volatile volume");
            // After chown, which drops set-id bits; mkdir's mode went through the umask.
            if (::fchown(d.get(), uid, uid) < 0 || ::fchmod(d.get(), mode) < 0)
                throw_storage_errno(std::string("setting up ") + name, errno);
            return volatile_dir / name;
        };

        // The root.
        if (has_own_root(k)) {
            const fs::path root = dir / "root";
            if (!is_empty_volume(root)) make_root_mount_points(root);
            uid_t on_disk = owner_of(root).value_or(0);
            if (state.idmap) {
                if (on_disk != 0) shift_owner(root, on_disk - on_disk % count, 0, count);
                idmapped_bind(root, run / "root", userns);
            } else {
                if (on_disk != owner) shift_owner(root, on_disk - on_disk % count, owner, count);
                plain_bind(root, run / "root");
            }
            out.host_usr = present(dir / "root.host-usr");
        } else {
            const std::string& tpl = state.root_source;
            const fs::path tpl_root = vm_dir(tpl) / "root";
            state.root_stamp = stamp_ns(vm_dir(tpl) / "root.changed");
            const fs::path upper = scratch_dir("root-upper", 0755, owner), work = scratch_dir("root-work", 0700, 0);
            fs::path lower = tpl_root;
            if (state.idmap) {
                lower = run / ".lower";
                make_dir(lower, 0700);
                idmapped_bind(tpl_root, lower, userns);
            }
            mount_overlay(lower, upper, work, run / "root");
            out.host_usr = present(vm_dir(tpl) / "root.host-usr");
        }

        // The private volume.
        if (k == Klass::Disp) {
            const std::string& dvm = state.private_source;
            const fs::path source = vm_dir(dvm) / "private";
            state.private_stamp = stamp_ns(vm_dir(dvm) / "private.changed");
            struct stat st;
            mode_t mode = ::stat(source.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0755;
            const fs::path upper = scratch_dir("private-upper", mode, owner),
                           work = scratch_dir("private-work", 0700, 0);
            fs::path lower = source;
            if (state.idmap) {
                lower = run / ".private-lower";
                make_dir(lower, 0700);
                idmapped_bind(source, lower, userns);
            }
            make_dir(run / "private", 0755);
            mount_overlay(lower, upper, work, run / "private");
            out.private_dir = run / "private";
        } else {
            const fs::path priv = dir / "private";
            uid_t on_disk = owner_of(priv).value_or(0);
            if (state.idmap) {
                if (on_disk != 0) shift_owner(priv, on_disk - on_disk % count, 0, count);
                make_dir(run / "private", 0755);
                idmapped_bind(priv, run / "private", userns);
                out.private_dir = run / "private";
            } else {
                if (on_disk != owner) shift_owner(priv, on_disk - on_disk % count, owner, count);
                out.private_dir = priv;
            }
        }
        write_small(run / "state", state.text());
    } catch (...) {
        try {
            teardown(uuid);
            for (auto it = held.rbegin(); it != held.rend(); ++it) release(it->first, it->second);
            refresh_volatile(uuid);
        } catch (...) {
        }
        throw;
    }
    return out;
}

bool FilePool::is_started(const std::string& uuid) const {
    return present(run_dir(uuid) / "state");
}

void FilePool::stop(const std::string& uuid) {
    const fs::path dir = vm_dir(uuid), run = run_dir(uuid);
    auto state = RunState::read(run / "state");
    teardown(uuid);
    if (state) {
        for (const auto& [owner_uuid, volume] : state->held(uuid)) release(owner_uuid, volume);
    } else {
        // Nothing started (as far as this pool knows): only what a start left.
        std::lock_guard lock(mount_mutex_);
        for (const char* volume : kVolumes)
            if (!holds_.count(uuid + "/" + volume)) unmount_volume(volume_path(uuid, volume));
    }
    if (is_dir(dir) && (state || !present(image_path(uuid, "volatile")))) refresh_volatile(uuid);
    if (state) {
        Klass k = Klass::App;
        try {
            k = parse_klass(state->klass);
        } catch (const StorageError&) {
        }
        std::string pending = "time=" + std::to_string(::time(nullptr)) + "\n";
        if (has_own_root(k)) {
            bump_stamp(dir / "root.changed");
            pending += "root\n";
        }
        if (has_own_private(k)) {
            bump_stamp(dir / "private.changed");
            pending += "private\n";
        }
        if (has_own_root(k) || has_own_private(k)) {
            write_small(dir / "revisions.pending", pending);
            std::lock_guard lock(bg_mutex_);
            bg_jobs_.push_back(uuid);
            start_worker();
        }
    }
    // The mount points stay for the next start; the state goes last.
    if (::unlink((run / "state").c_str()) < 0 && errno != ENOENT)
        throw_storage_errno("stopping " + uuid, errno);
}

// ---- revisions ---------------------------------------------------------------

// A volume's revisions are copies of its image (reflinks where the host
// file system has them, else sparse copies), one made at every stop with the
// file system frozen: later writes to the volume never change them. The newest copy (its name in revisions/<volume>.head) is the
// state the volume was stopped with, the one Qubes calls the volume itself;
// the others are what Qubes lists as revisions: earlier saved states, named by
// when they were saved.
void FilePool::snapshot(const std::string& uuid, const std::string& volume, time_t saved_at) const {
    const fs::path dir = vm_dir(uuid);
    const fs::path revs = dir / "revisions" / volume, head_file = dir / "revisions" / (volume + ".head");
    const int keep = revisions_to_keep(uuid, volume);
    if (keep <= 0) {
        discard(revs);
        discard(head_file);
        return;
    }
    make_dir(dir / "revisions", 0700);
    make_dir(revs, 0700);
    std::vector<std::string> names = all_revisions(revs);
    time_t t = saved_at;
    if (!names.empty()) t = std::max(t, *parse_iso_name(names.back()) + 1);
    const std::string name = iso_name(t);
    const fs::path tmp = revs / (".new-" + name);
    ::unlink(tmp.c_str());
    copy_volume(uuid, volume, tmp);
    if (::rename(tmp.c_str(), (revs / name).c_str()) < 0) throw_storage_errno("keeping a revision", errno);
    write_small(head_file, name);
    names.push_back(name);
    // Keep the head and the `keep` newest before it.
    std::vector<std::string> listed(names.begin(), names.end() - 1);
    while (static_cast<int>(listed.size()) > keep) {
        discard(revs / listed.front());
        listed.erase(listed.begin());
    }
}

std::vector<std::string> FilePool::revisions(const std::string& uuid, const std::string& volume) const {
    check_volume(volume);
    settle(uuid);
    const fs::path dir = vm_dir(uuid);
    std::vector<std::string> names = all_revisions(dir / "revisions" / volume);
    auto head = read_small(dir / "revisions" / (volume + ".head"));
    if (head) names.erase(std::remove(names.begin(), names.end(), *head), names.end());
    return names;
}

void FilePool::revert(const std::string& uuid, const std::string& volume, const std::string& revision) {
    check_volume(volume);
    const fs::path dir = vm_dir(uuid);
    if (!present(image_path(uuid, volume))) throw StorageError("no " + volume + " volume of " + uuid);
    if (is_started(uuid)) throw StorageError("cannot revert a volume of a running qube");
    settle(uuid);
    std::vector<std::string> listed = revisions(uuid, volume);
    std::string rev = revision;
    if (rev.empty()) {
        if (listed.empty()) throw StorageError("no revision of " + volume + " to revert to");
        rev = listed.back();
    }
    if (std::find(listed.begin(), listed.end(), rev) == listed.end())
        throw StorageError("Missing revision '" + rev + "' for volume vm/" + uuid + "/" + volume);
    const fs::path revs = dir / "revisions" / volume, head_file = dir / "revisions" / (volume + ".head");
    const fs::path current = image_path(uuid, volume), chosen = revs / rev;
    auto head = read_small(head_file);
    {
        // Swap the images in one step (the old state is then where the
        // revision was), while nothing has the volume mounted: a qube
        // running on it (a template's root) keeps it as it is.
        std::lock_guard lock(mount_mutex_);
        if (holds_.count(uuid + "/" + volume) || is_mount_root(volume_path(uuid, volume)))
            throw StorageError("cannot revert " + volume + " of " + uuid + ": qubes running on it use it");
        if (::renameat2(AT_FDCWD, chosen.c_str(), AT_FDCWD, current.c_str(), RENAME_EXCHANGE) < 0)
            throw_storage_errno("reverting " + current.string(), errno);
    }
    const bool keep = revisions_to_keep(uuid, volume) > 0;
    if (keep && !head) {
        // The current state has no copy yet: it becomes a revision itself,
        // named by when it was saved.
        time_t t = ::time(nullptr);
        auto changed = stamp_time(dir / (volume + ".changed"));
        if (changed) t = std::chrono::system_clock::to_time_t(std::chrono::file_clock::to_sys(*changed));
        std::string name = iso_name(t);
        std::vector<std::string> names = all_revisions(revs);
        while (std::find(names.begin(), names.end(), name) != names.end() && name != rev)
            name = iso_name(*parse_iso_name(name) + 1);
        if (name != rev && ::rename(chosen.c_str(), (revs / name).c_str()) < 0)
            throw_storage_errno("keeping the reverted state", errno);
    } else {
        // Its copy is the head (which now lists as a revision), or none is kept.
        discard(chosen);
    }
    discard(head_file);
    bump_stamp(dir / (volume + ".changed"));
}

void FilePool::set_revisions_to_keep(const std::string& uuid, const std::string& volume, int count) {
    check_volume(volume);
    if (count < -1) throw StorageError("Invalid value for revisions_to_keep");
    const fs::path dir = vm_dir(uuid);
    if (!is_dir(dir)) throw StorageError("no volumes of " + uuid);
    write_small(dir / (volume + ".revisions_to_keep"), std::to_string(count) + "\n");
}

void FilePool::set_revisions_to_keep(int count) {
    if (count < -1) throw StorageError("Invalid value for revisions_to_keep");
    write_small(dir_ / "revisions_to_keep", std::to_string(count) + "\n");
    options_.revisions_to_keep = count;
}

int FilePool::revisions_to_keep(const std::string& uuid, const std::string& volume) const {
    check_volume(volume);
    auto text = read_small(vm_dir(uuid) / (volume + ".revisions_to_keep"));
    if (text) {
        try {
            return std::stoi(*text);
        } catch (const std::exception&) {
        }
    }
    return options_.revisions_to_keep;
}

// ---- resize ------------------------------------------------------------------

void FilePool::resize(const std::string& uuid, const std::string& klass, const std::string& volume, uint64_t size) {
    Klass k = parse_klass(klass);
    check_volume(volume);
    if (!has_volumes(k)) throw StorageError(klass + " has no volume '" + volume + "'");
    const bool snapshot = (volume == "root" && !has_own_root(k)) || (volume == "private" && k == Klass::Disp);
    if (snapshot)
        // Qubes' file pool, word for word (its message lacks a space).
        throw StorageError("Cannot resize volume based on a template - resizethe template instead");
    const fs::path image = image_path(uuid, volume);
    if (!present(image)) throw StorageError("no " + volume + " volume of " + uuid);
    const uint64_t now = image_size(image);
    if (size < now)
        throw StorageError("For your own safety, shrinking of " + volume +
                           " is disabled. If you really know what you are doing, use `truncate` on vm/" + uuid +
                           "/" + volume + " manually.");
    if (size == now) return;
    if (size % 4096 != 0 || size > kMaxVolumeSize)
        throw StorageError("a volume's size must be a multiple of 4096 bytes, at most " +
                           std::to_string(kMaxVolumeSize));
    settle(uuid);
    // Not mounted: the image extended and its file system grown offline.
    // Mounted (a qube runs on it): grown online, where this host lets us
    // (CAP_SYS_RESOURCE); else the loop device is told and the file system
    // grows when nothing holds it any more (at the qube's stop).
    std::unique_lock lock(mount_mutex_);
    extend_image(image, size);
    const fs::path pending = vm_dir(uuid) / (volume + ".grow");
    if (!is_mount_root(volume_path(uuid, volume))) {
        grow_image_filesystem(image);
        ::unlink(pending.c_str());
        return;
    }
    if (!grow_mounted_filesystem(volume_path(uuid, volume))) write_small(pending, std::to_string(size) + "\n");
}

// ---- info --------------------------------------------------------------------

VolumeInfo FilePool::info(const std::string& uuid, const std::string& klass, const std::string& volume,
                          const std::optional<std::string>& template_uuid) const {
    std::vector<std::string> chain;
    if (template_uuid) chain.push_back(*template_uuid);
    return info(uuid, klass, volume, chain);
}

// The values qubes/vm/{templatevm,standalonevm,appvm,dispvm}.py configure
// for each class, as the file-reflink pool reports them.
VolumeInfo FilePool::info(const std::string& uuid, const std::string& klass, const std::string& volume,
                          const std::vector<std::string>& templates) const {
    Klass k = parse_klass(klass);
    check_volume(volume);
    if (!has_volumes(k)) throw StorageError(klass + " has no volume '" + volume + "'");
    const fs::path dir = vm_dir(uuid), run = run_dir(uuid);
    const auto state = RunState::read(run / "state");
    const bool running = state.has_value();
    auto vid = [](const std::string& id, const std::string& vol) { return "vm/" + id + "/" + vol; };

    VolumeInfo i;
    i.pool = options_.name;
    i.vid = vid(uuid, volume);
    i.revisions_to_keep = revisions_to_keep(uuid, volume);
    i.ephemeral = false;  // the pool's ephemeral_volatile is off
    i.path = image_path(uuid, volume).string();
    // The volume's size is its image's; its usage, the host disk the image takes.
    auto size_of = [&](const std::string& id, const std::string& vol, uint64_t fallback) {
        const fs::path image = image_path(id, vol);
        return present(image) ? image_size(image) : fallback;
    };
    if (volume == "root") {
        i.size = kRootImgSize;
        if (has_own_root(k)) {
            i.rw = true;
            i.save_on_stop = true;
            i.size = size_of(uuid, "root", kRootImgSize);
            i.usage = image_allocated(image_path(uuid, "root"));
        } else {
            // A snapshot of the TemplateVM's root (a DispVM's too: Qubes
            // follows the chain to the volume that has no source); the qube
            // writes to it (rw, as Qubes reports it), its changes go to
            // volatile and are gone at its stop.
            i.rw = true;
            i.snap_on_start = true;
            const std::string tpl =
                running ? state->root_source : (templates.empty() ? "" : templates.back());
            if (!tpl.empty()) i.source = vid(tpl, "root");
            i.path = (run / "root").string();
            if (!tpl.empty()) i.size = size_of(tpl, "root", kRootImgSize);
            if (running && !tpl.empty()) {
                i.usage = image_allocated(image_path(tpl, "root"));
                i.is_outdated = stamp_ns(vm_dir(tpl) / "root.changed") != state->root_stamp;
            }
        }
    } else if (volume == "private") {
        i.size = kPrivateImgSize;
        i.rw = true;
        if (k == Klass::Disp) {
            i.snap_on_start = true;
            const std::string dvm =
                running ? state->private_source : (templates.empty() ? "" : templates.front());
            if (!dvm.empty()) i.source = vid(dvm, "private");
            i.path = (run / "private").string();
            if (!dvm.empty()) i.size = size_of(dvm, "private", kPrivateImgSize);
            if (running && !dvm.empty()) {
                i.usage = image_allocated(image_path(dvm, "private"));
                i.is_outdated = stamp_ns(vm_dir(dvm) / "private.changed") != state->private_stamp;
            }
        } else {
            i.save_on_stop = true;
            i.size = size_of(uuid, "private", kPrivateImgSize);
            i.usage = image_allocated(image_path(uuid, "private"));
        }
    } else {  // volatile
        i.size = size_of(uuid, "volatile", k == Klass::Disp ? kVolatileImgSize + kPrivateImgSize : kVolatileImgSize);
        i.rw = true;
        i.usage = image_allocated(image_path(uuid, "volatile"));
    }
    return i;
}

// ---- templates' roots --------------------------------------------------------

void build_into_empty_root(const fs::path& top_dir, const std::function<void(const fs::path&)>& build) {
    if (!is_empty_volume(top_dir)) throw StorageError("the root volume " + top_dir.string() + " is not empty");
    const fs::path built = top_dir / ".aerie-new-root";
    build(built);
    base::UniqueFd top(::open(top_dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    base::UniqueFd from(::open(built.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!top || !from) throw_storage_errno("opening " + built.string(), errno);
    std::vector<std::string> names;
    std::error_code ec;
    for (fs::directory_iterator it(built, ec), end; !ec && it != end; it.increment(ec))
        names.push_back(it->path().filename().string());
    if (ec) throw StorageError("reading " + built.string() + ": " + ec.message());
    for (const auto& n : names)
        if (::renameat(from.get(), n.c_str(), top.get(), n.c_str()) < 0)
            throw_storage_errno("moving " + n + " into the root volume", errno);
    struct stat st;
    if (::fstat(from.get(), &st) < 0 || ::fchown(top.get(), st.st_uid, st.st_gid) < 0 ||
        ::fchmod(top.get(), st.st_mode & 07777) < 0)
        throw_storage_errno("setting up the root volume's top", errno);
    if (::unlinkat(top.get(), ".aerie-new-root", AT_REMOVEDIR) < 0)
        throw_storage_errno("removing " + built.string(), errno);
}

void FilePool::fill_root(const std::string& uuid, const std::function<void(const fs::path&)>& build) {
    const fs::path dir = vm_dir(uuid), root = dir / "root";
    if (!present(image_path(uuid, "root"))) throw StorageError("no root volume of " + uuid);
    if (is_started(uuid)) throw StorageError("cannot fill the root of a running qube");
    settle(uuid);
    hold(uuid, "root");
    try {
        build_into_empty_root(root, build);
    } catch (...) {
        release(uuid, "root");
        throw;
    }
    release(uuid, "root");
    // A new root: the revisions of the empty one mean nothing.
    discard(dir / "revisions" / "root");
    discard(dir / "revisions" / "root.head");
    bump_stamp(dir / "root.changed");
}

void FilePool::make_host_template_root(const std::string& uuid, const HostTemplateOptions& options) {
    fill_root(uuid, [&](const fs::path& root) {
        try {
            create_host_template(root, options);
            write_small(vm_dir(uuid) / "root.host-usr", "1\n");
        } catch (const StorageError&) {
            throw;
        } catch (const std::exception& e) {
            throw StorageError(e.what());
        }
    });
}

void FilePool::make_debootstrap_root(const std::string& uuid, const DebootstrapOptions& options) {
    fill_root(uuid, [&](const fs::path& root) { build_debootstrap_root(root, options); });
}

fs::file_time_type FilePool::root_changed(const std::string& uuid) const {
    const fs::path dir = vm_dir(uuid);
    if (!is_dir(dir)) throw StorageError("no volumes of " + uuid);
    return stamp_time(dir / "root.changed").value_or(fs::file_time_type::min());
}

bool FilePool::root_outdated(const std::string& uuid) const {
    auto state = RunState::read(run_dir(uuid) / "state");
    if (!state || state->root_source.empty()) return false;
    return stamp_ns(vm_dir(state->root_source) / "root.changed") != state->root_stamp;
}

bool FilePool::snapshots_outdated(const std::string& uuid) const {
    auto state = RunState::read(run_dir(uuid) / "state");
    if (!state) return false;
    if (!state->root_source.empty() && stamp_ns(vm_dir(state->root_source) / "root.changed") != state->root_stamp)
        return true;
    return !state->private_source.empty() &&
           stamp_ns(vm_dir(state->private_source) / "private.changed") != state->private_stamp;
}

}  // namespace aerie::storage
