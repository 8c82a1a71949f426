// A TemplateVM made from the host's own system, for fast qubes that need no
// distribution of their own (the demo's and the tests' default).
//
// The template's root folder holds only what a qube must have of its own:
// etc/ (what a qube needs of the host's /etc, by an allowlist, and only
// world-readable files of it: name service, the host's system accounts but
// not its people, linker configuration, certificates, alternatives, shell,
// locale and time; fresh shadow files with locked passwords, its own hosts,
// an empty fstab and machine-id; see kEtcAllowlist), var/ (empty skeleton, var/run
// and var/lock pointing into /run), home/, root/, tmp/, srv/, opt/, mnt/,
// media/, rw/ (the private volume's mount point) and the mount points the
// backend fills at start: usr/ (the host's /usr, bound read-only: see
// host_template_mounts()), dev/, proc/, sys/, run/. bin, sbin, lib, lib64 (and
// lib32, libx32 where the host has them) are the merged-/usr links Debian 12
// uses, so nothing is copied of the host's programs and a start costs two
// bind mounts, not a copy.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <vector>

#include "backend/backend.hpp"

namespace aerie::storage {

struct HostTemplateOptions {
    // The system reused: its /etc is copied, its /usr bound.
    std::filesystem::path host_root = "/";
    // Who owns the template's own files. 0: host ids as on the host, so the
    // qubes of the template (each in its own uid range) see them owned by
    // nobody and cannot change them. A qube's uid base (backend::qube_uid_base)
    // hands them to that qube's ids (uid u becomes base + u), for a TemplateVM
    // that maintains its own root.
    uid_t owner_base = 0;
};

// Builds the template root at `root`, which must not exist yet (built next to
// it and renamed into place, so a crash leaves no half template). Throws
// std::runtime_error naming what failed, e.g. a host without merged /usr.
void create_host_template(const std::filesystem::path& root, const HostTemplateOptions& options = {});

// Whether `root` was made by create_host_template.
bool is_host_template(const std::filesystem::path& root);

// The bind mounts every qube of such a template needs (the host's /usr,
// read-only), to add to its QubeSpec::mounts.
std::vector<backend::BindMount> host_template_mounts(const HostTemplateOptions& options = {});

}  // namespace aerie::storage
