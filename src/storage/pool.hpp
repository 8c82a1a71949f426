// Storage: a file-based pool of volumes, as Qubes' "file-reflink" pool
// (varlibqubes) but with directories. Every qube has up to three volumes:
//   root      TemplateVM and StandaloneVM: its own (writable while it runs);
//             AppVM and DispVM: a copy-on-write view of the template's root,
//             made at start and thrown away at shutdown
//   private   persistent; mounted at /rw inside the qube, /home comes from it;
//             a DispVM's is a copy-on-write view of its disposable template's
//             private (Qubes: snap_on_start), thrown away at shutdown
//   volatile  scratch space for the copy-on-write layers; emptied at each
//             start and stop
// Layout:
//   <pool>/vm/<uuid>/{root,private,volatile}     the volumes
//   <pool>/vm/<uuid>/revisions/<volume>/<time>   revisions (snapshots)
//   <pool>/vm/<uuid>/<volume>.revisions_to_keep  a volume's own setting
//   <pool>/vm/<uuid>/<volume>.changed            mtime: when it last changed
//   <pool>/run/<uuid>/{root,private,state}       the views' mount points;
//                                                 state while started
//   <pool>/trash/                                 what is being deleted
//
// Ownership: on disk, volumes keep the ids the qube sees (its root is 0, its
// user 1000). At start they are shown to the qube through id-mapped mounts
// (uid u on disk appears as owner + u), so a template's root is the qube's own
// in every qube based on it, its private is written with the qube's ids, and
// nothing is chowned. Where id-mapped mounts do not work (kernel or
// filesystem), the private volume and an own root are chowned into the
// owner's range instead (a walk only when the top folder shows the wrong
// owner), and a template's root shows as nobody inside.
//
// Through an id-mapped mount host root cannot make files (EOVERFLOW): the
// mount points a backend needs in an own root (proc sys dev run tmp usr rw
// home) are made on disk before its start; others must exist already.
//
// Revisions: at every stop of a save_on_stop volume (an own root, a private
// volume other than a DispVM's) a copy of it is kept, as reflinks where the
// filesystem has them, else as hard links (`cp -al`). The newest copy stands
// for the volume itself (Qubes' committed image); the older ones are what
// ListSnapshots lists. A hard-linked copy shares a file's later in-place
// writes (a file replaced by rename, as editors, dpkg and apt do, or removed,
// keeps its old content in the revision).
//
// A template's root changed while its AppVMs run (the TemplateVM running,
// a revert) changes under their views (overlayfs leaves that undefined, and
// Qubes gives them the old snapshot): is_outdated/root_outdated() tell.
//
// Calls for different qubes may run at once (threads); calls for one qube
// must not. The pool folder is made 0700: a template's root holds set-uid
// programs owned by host root.
#pragma once

#include <sys/types.h>

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "storage/error.hpp"
#include "storage/host_template.hpp"

namespace aerie::storage {

struct DebootstrapOptions;

// Qubes' qubes.config.defaults: nominal sizes (directories are not limited).
inline constexpr uint64_t kRootImgSize = 10ull * 1024 * 1024 * 1024;
inline constexpr uint64_t kPrivateImgSize = 2ull * 1024 * 1024 * 1024;
// Qubes' file and file-reflink pools keep one revision unless told otherwise.
inline constexpr int kDefaultRevisionsToKeep = 1;
// The ids of one qube's user namespace (backend.hpp: kQubeIdsPerQube).
inline constexpr uint32_t kIdsPerQube = 65536;

// What admin.vm.volume.Info reports (Qubes' keys, in its order).
struct VolumeInfo {
    std::string pool, vid;
    uint64_t size = 0, usage = 0;
    bool rw = true;
    std::string source;  // the vid of the volume a snap_on_start one is made from
    std::string path;
    bool save_on_stop = false, snap_on_start = false;
    int revisions_to_keep = 0;
    bool ephemeral = false;
    bool is_outdated = false;  // Qubes appends it: a running snapshot's source changed since
};
// The reply body of admin.vm.volume.Info: "pool=varlibqubes\nvid=...\n...",
// Python's spelling of values (True/False, "" for no source).
std::string format_volume_info(const VolumeInfo& info);

// The volumes a qube runs with, ready for the backend.
struct StartedVolumes {
    std::filesystem::path root;         // the directory to use as "/" (a mount point)
    std::filesystem::path private_dir;  // to bind at /rw (and its home/ at /home)
    bool host_usr = false;              // bind the host's /usr read-only at /usr (host_template_mounts())
};

struct PoolOptions {
    std::string name = "varlibqubes";
    int revisions_to_keep = kDefaultRevisionsToKeep;  // the pool's default for its volumes
    // Show volumes through id-mapped mounts where they work; false: always
    // chown (the fallback), e.g. to test it.
    bool idmapped_mounts = true;
};

class FilePool {
public:
    explicit FilePool(std::filesystem::path dir, std::string name = "varlibqubes");
    FilePool(std::filesystem::path dir, PoolOptions options);
    ~FilePool();
    FilePool(const FilePool&) = delete;
    FilePool& operator=(const FilePool&) = delete;

    const std::string& name() const { return options_.name; }
    const std::filesystem::path& dir() const { return dir_; }
    int revisions_to_keep() const { return options_.revisions_to_keep; }
    // Whether volumes are shown through id-mapped mounts here (else chowned).
    bool idmapped_mounts() const { return use_idmap(); }

    // Creates the volumes of a new qube of class `klass` (TemplateVM and
    // StandaloneVM: root (empty), private, volatile; AppVM: private,
    // volatile; DispVM: volatile; RemoteVM, AdminVM: none). A private
    // volume starts with an empty home/.
    void create(const std::string& uuid, const std::string& klass);
    // The volumes of `src` copied for a new qube `dst` (qvm-clone): private,
    // and root for TemplateVM/StandaloneVM, with owners, modes, links, device
    // nodes and extended attributes; a fresh volatile; no revisions. From a
    // running `src`: the state of its last stop where a revision of it is
    // kept (as Qubes copies the committed image), else the live folders.
    void clone(const std::string& src_uuid, const std::string& dst_uuid, const std::string& klass);
    // Everything of the qube, unmounting first.
    void remove(const std::string& uuid);

    // Before a start. `templates`: the template chain, nearest first: for an
    // AppVM {its TemplateVM}; for a DispVM {its disposable template (an
    // AppVM), that one's TemplateVM}; empty for the others. `owner`: the
    // host uid (and gid) the qube's root user maps to; its user namespace maps
    // kIdsPerQube ids from there. Throws StorageError if already started.
    StartedVolumes start(const std::string& uuid, const std::string& klass,
                         const std::vector<std::string>& templates, uid_t owner);
    // The same with one template: AppVM only (a DispVM needs the chain).
    StartedVolumes start(const std::string& uuid, const std::string& klass,
                         const std::optional<std::string>& template_uuid, uid_t owner);
    // After the qube stopped: unmount (detached if busy), empty volatile, and
    // keep a revision of each save_on_stop volume when its revisions_to_keep
    // > 0 (named by this moment; made in the background, see flush()).
    // Without a start before: only removes what a start left behind.
    void stop(const std::string& uuid);
    bool is_started(const std::string& uuid) const;

    std::vector<std::string> volumes(const std::string& klass) const;  // admin.vm.volume.List
    // admin.vm.volume.Info; `templates` as for start() (for the source vids;
    // a started qube's own are used).
    VolumeInfo info(const std::string& uuid, const std::string& klass, const std::string& volume,
                    const std::vector<std::string>& templates) const;
    VolumeInfo info(const std::string& uuid, const std::string& klass, const std::string& volume,
                    const std::optional<std::string>& template_uuid) const;
    // admin.vm.volume.ListSnapshots: revision names (Qubes' form,
    // 2025-05-20T10:11:12Z: when that state was saved), oldest first.
    std::vector<std::string> revisions(const std::string& uuid, const std::string& volume) const;
    // admin.vm.volume.Revert (empty `revision`: the newest). The qube must be
    // stopped. The current state becomes a revision if revisions_to_keep > 0.
    void revert(const std::string& uuid, const std::string& volume, const std::string& revision);
    // admin.vm.volume.Set.revisions_to_keep: -1 (Qubes: snapshots disabled;
    // here the same as 0, volumes being used in place anyway), 0, or more;
    // older revisions go at the next stop.
    void set_revisions_to_keep(const std::string& uuid, const std::string& volume, int count);
    int revisions_to_keep(const std::string& uuid, const std::string& volume) const;

    // Fills a TemplateVM's (empty) root with a template reusing the host's
    // system (host_template.hpp), or a Debian made by debootstrap
    // (debootstrap.hpp: minutes).
    void make_host_template_root(const std::string& uuid, const HostTemplateOptions& options = {});
    void make_debootstrap_root(const std::string& uuid, const DebootstrapOptions& options);
    // When the qube's root volume last changed: made, filled, reverted, or a
    // stop after running writable. min() for a qube without a root.
    std::filesystem::file_time_type root_changed(const std::string& uuid) const;
    // A started AppVM/DispVM whose template's root changed since its start
    // (a disposable to throw away).
    bool root_outdated(const std::string& uuid) const;
    // The same for any snapshot a started qube runs on: its template's root,
    // or a DispVM's disposable template's private volume.
    bool snapshots_outdated(const std::string& uuid) const;

    std::filesystem::path volume_path(const std::string& uuid, const std::string& volume) const;

    // Work a stop leaves to the pool's background thread: the revisions it
    // keeps (a copy of every file's link: the larger the volume, the longer),
    // and deleting what stop, remove, revert and pruning threw away (moved
    // into <pool>/trash first: a rename, whatever the size). A start, revert
    // or revisions() of that qube first waits for (or does) its own part.
    // This waits until all of it is done (tests; a daemon about to exit need
    // not call it: the next pool on the folder finishes what is left). A
    // revision that could not be kept is not tried again (it would hold up
    // the next start): <pool>/vm/<uuid>/revisions.error says why.
    void flush();

private:
    struct RunState;
    std::filesystem::path vm_dir(const std::string& uuid) const;
    std::filesystem::path run_dir(const std::string& uuid) const;
    bool use_idmap() const;
    int userns_for(uid_t owner);
    void snapshot(const std::string& uuid, const std::string& volume, time_t saved_at) const;
    void take_pending(const std::string& uuid) const;
    void settle(const std::string& uuid) const;
    void cancel(const std::string& uuid);
    void teardown(const std::string& uuid);
    void discard(const std::filesystem::path& path) const;
    void discard_entries(const std::filesystem::path& dir) const;
    void start_worker() const;  // with bg_mutex_ held
    void worker() const;
    void fill_root(const std::string& uuid, const std::function<void(const std::filesystem::path&)>& build);

    std::filesystem::path dir_;
    PoolOptions options_;
    mutable std::mutex probe_mutex_;
    mutable std::optional<bool> idmap_works_;
    // A user namespace per owner, for the id-mapped mounts (made once: the
    // helper process that makes one costs milliseconds on a busy host).
    std::mutex userns_mutex_;
    std::map<uid_t, int> userns_;
    // The background thread: pending revisions (uuids), then the trash.
    mutable std::mutex bg_mutex_;
    mutable std::condition_variable bg_cv_, bg_idle_cv_;
    mutable std::thread bg_thread_;
    mutable std::deque<std::string> bg_jobs_;
    mutable std::set<std::string> bg_running_;
    mutable bool bg_trash_ = false, bg_busy_ = false, bg_stop_ = false;
    mutable uint64_t trash_seq_ = 0;
};

}  // namespace aerie::storage
