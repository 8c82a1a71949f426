// Storage: a file pool of volumes, as Qubes' `file` pool (sparse images on
// loop devices; its `file-reflink` idea where the host file system has
// reflinks: the images' copies then share extents). Every qube has up to
// three volumes, each an ext4 file system in a sparse image file whose size
// is the volume's size (bytes and inodes: a qube cannot fill the host's disk):
//   root      TemplateVM and StandaloneVM: its own (writable while it runs);
//             AppVM and DispVM: a copy-on-write view (overlay) of the
//             template's root, made at start and thrown away at shutdown
//   private   persistent; mounted at /rw inside the qube, /home comes from it;
//             a DispVM's is a copy-on-write view of its disposable template's
//             private (Qubes: snap_on_start), thrown away at shutdown
//   volatile  scratch space for the copy-on-write layers; a fresh image
//             after every stop
// Layout:
//   <pool>/vm/<uuid>/{root,private,volatile}.img  the images
//   <pool>/vm/<uuid>/{root,private,volatile}      their mount points (pool
//                                                 folders, empty while the
//                                                 volume is not mounted)
//   <pool>/vm/<uuid>/revisions/<volume>/<time>    revisions (image copies)
//   <pool>/vm/<uuid>/<volume>.revisions_to_keep   a volume's own setting
//   <pool>/vm/<uuid>/<volume>.changed             mtime: when it last changed
//   <pool>/vm/<uuid>/root.host-usr                the root is a host template
//   <pool>/run/<uuid>/{root,private,state}        the views' mount points;
//                                                 state while started
//   <pool>/blank/<size>-<bytes per inode>.img     empty file systems to copy
//   <pool>/trash/                                 what is being deleted
//
// Mounting: a volume is mounted (loop device with autoclear, nodev, nosuid
// except roots) while something holds it: its qube running, a qube running on
// it as a snapshot (one superblock for a template's root, shared read-only
// into its AppVMs' overlays), a revision or clone being copied. The last
// holder unmounts it, so nothing of a halted qube stays mounted.
//
// Ownership: on disk, volumes keep the ids the qube sees (its root is 0, its
// user 1000). At start they are shown to the qube through id-mapped mounts
// (uid u on disk appears as owner + u). Where id-mapped mounts do not work,
// the private volume and an own root are chowned into the owner's range
// instead (a descriptor walk, only when the top folder shows the wrong owner).
//
// Revisions: at every stop of a save_on_stop volume (an own root, a private
// volume other than a DispVM's) a copy of its image is kept, made in the
// background with the file system frozen (FIFREEZE): a real snapshot that no
// later write changes. The newest copy stands for the volume itself (Qubes'
// committed image); the older ones are what ListSnapshots lists. Revert swaps
// image files. Nothing of the pool walks or resolves names inside a volume's
// file system (beyond the mount points a start makes in a fresh or own root,
// through safe_dir.hpp).
//
// A template's root changed while its AppVMs run (the TemplateVM running)
// changes under their views: is_outdated/root_outdated() tell.
//
// Calls for different qubes may run at once (threads); calls for one qube
// must not. The pool folder is made 0700.
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

// Qubes' qubes.config.defaults: the sizes new volumes get.
inline constexpr uint64_t kRootImgSize = 10ull * 1024 * 1024 * 1024;
inline constexpr uint64_t kPrivateImgSize = 2ull * 1024 * 1024 * 1024;
inline constexpr uint64_t kVolatileImgSize = 10ull * 1024 * 1024 * 1024;
// Sizes Resize takes: whole 4 KiB blocks, at most 16 TiB (ext4 with 4 KiB
// blocks and no 64bit feature's bound).
inline constexpr uint64_t kMaxVolumeSize = 16ull * 1024 * 1024 * 1024 * 1024 - 4096;
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

// The template builders make a root folder that must not exist yet: this
// has `build` make it inside `top` (the mounted, empty root volume: only
// lost+found) and moves its entries up to the volume's top (one file
// system: renames between two descriptors). Throws StorageError.
void build_into_empty_root(const std::filesystem::path& top,
                           const std::function<void(const std::filesystem::path&)>& build);

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
    // admin.pool.Set.revisions_to_keep: the pool's default for volumes
    // without their own (kept in the pool folder, over the options' value).
    void set_revisions_to_keep(int count);
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
    // admin.vm.volume.CloneTo (Qubes' import_volume): the data of
    // `src_uuid`'s `volume` (the state of its last stop where a revision of a
    // running one is kept, as clone()) replaces `dst_uuid`'s volume of the
    // same name. Only a save_on_stop volume takes data (the others: nothing
    // to do, as in Qubes); a snapshot volume (snap_on_start) cannot be the
    // source. `dst_uuid` must not be started, nor its volume held.
    void import_volume(const std::string& dst_uuid, const std::string& dst_klass, const std::string& src_uuid,
                       const std::string& src_klass, const std::string& volume);
    // admin.vm.volume.Clear: a save_on_stop volume becomes an empty file
    // system of the same size (a private one with an empty home/, as made).
    // The qube must not be started, nor the volume held.
    void clear(const std::string& uuid, const std::string& klass, const std::string& volume);
    // admin.vm.volume.Import / ImportWithSize (Qubes' import_data): a new
    // sparse file of `size` bytes (the volume's size when not given) beside
    // the volume's image, for the caller to write the data into; its path.
    // Only a save_on_stop volume of a qube that is not started takes data.
    // An earlier import of the volume that never ended is thrown away.
    std::filesystem::path begin_import(const std::string& uuid, const std::string& klass,
                                       const std::string& volume, std::optional<uint64_t> size);
    // Its end: on success the written file, once e2fsck finds a clean ext4
    // file system in it, replaces the volume's image (one rename: a kill -9
    // leaves the old or the new, never neither); otherwise it is removed.
    void end_import(const std::string& uuid, const std::string& klass, const std::string& volume,
                    bool success);
    std::filesystem::path import_path(const std::string& uuid, const std::string& volume) const;
    // The vid admin.vm.volume.Info reports for a qube's volume.
    static std::string volume_vid(const std::string& uuid, const std::string& volume) {
        return "vm/" + uuid + "/" + volume;
    }
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
    // admin.vm.volume.Resize: grows the volume's image and file system to
    // `size` bytes (a multiple of 4096), online if mounted. Smaller than now:
    // refused (Qubes' error); a snapshot volume (a template's root seen by an
    // AppVM, a DispVM's private) is resized through its source.
    void resize(const std::string& uuid, const std::string& klass, const std::string& volume, uint64_t size);

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

    // A volume's mount point (its files while it is mounted) and its image.
    std::filesystem::path volume_path(const std::string& uuid, const std::string& volume) const;
    std::filesystem::path image_path(const std::string& uuid, const std::string& volume) const;
    // Mounts the volume at volume_path() if nothing holds it yet and counts
    // one holder more (e.g. to fill a halted template's root; the qube's own
    // start and stop hold and release theirs); the last release unmounts it.
    void hold(const std::string& uuid, const std::string& volume) const;
    void release(const std::string& uuid, const std::string& volume) const;

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
    std::filesystem::path trash_name() const;
    void to_trash(const std::filesystem::path& path, bool link_only) const;
    void discard(const std::filesystem::path& path) const;
    // Like discard, but the file keeps its name too (a second link in the trash).
    void discard_link(const std::filesystem::path& path) const;
    void discard_entries(const std::filesystem::path& dir) const;
    void start_worker() const;  // with bg_mutex_ held
    void worker() const;
    void fill_root(const std::string& uuid, const std::function<void(const std::filesystem::path&)>& build);
    // A copy of an empty file system of that size, as the image `dst`.
    // (`journal` false: a scratch volume's.)
    void make_empty_home(const std::string& uuid) const;
    void new_image(const std::filesystem::path& dst, uint64_t size, uint64_t bytes_per_inode,
                   bool journal = true) const;
    // The image copied, the file system frozen meanwhile if mounted.
    void copy_volume(const std::string& uuid, const std::string& volume, const std::filesystem::path& dst) const;
    void refresh_volatile(const std::string& uuid) const;
    // A save_on_stop volume's image replaced by `make(tmp)`'s, the volume
    // neither in use nor held.
    void replace_image(const std::string& uuid, const std::string& volume,
                       const std::function<void(const std::filesystem::path&)>& make);

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
    // Holders of each mounted volume ("<uuid>/<volume>"), and the lock of
    // every mount or unmount of a volume; the blank images' lock.
    mutable std::mutex mount_mutex_, blank_mutex_;
    mutable std::map<std::string, int> holds_;
};

}  // namespace aerie::storage
