// A TemplateVM root with a Debian of its own, made by debootstrap: a real
// distribution template (apt works in it), unlike the host template. Slow:
// minutes, most of it downloading.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "storage/error.hpp"

namespace aerie::storage {

struct DebootstrapOptions {
    std::string suite = "bookworm";
    std::string variant = "minbase";
    // Empty: the host's Debian mirror, from its apt sources.
    std::string mirror;
    std::vector<std::string> include;  // more packages (--include=)
    // Looked up in PATH unless it holds a '/'.
    std::string program = "debootstrap";
    // Where the host's apt sources are read (sources.list, sources.list.d/).
    std::filesystem::path apt_dir = "/etc/apt";
    // debootstrap's output goes here (appended); empty: our stdout/stderr.
    std::filesystem::path log;
};

// The first enabled "deb" source for `suite` in the host's apt sources
// (one-line *.list and deb822 *.sources files), e.g. "http://deb.debian.org/debian".
// Throws StorageError if there is none.
std::string host_debian_mirror(const std::filesystem::path& apt_dir, const std::string& suite);

// debootstrap --variant=V [--include=a,b] SUITE TARGET MIRROR
std::vector<std::string> debootstrap_argv(const std::filesystem::path& target,
                                          const DebootstrapOptions& options, const std::string& mirror);

// Makes `root` (which must not exist) with debootstrap, then what a qube
// needs of its root (prepare_qube_root). Built next to `root` and renamed
// into place: a failure or a crash leaves no half template. Throws
// StorageError.
void build_debootstrap_root(const std::filesystem::path& root, const DebootstrapOptions& options);

// What a qube needs in a distribution's root: the mount points the backend
// and storage use (proc, sys, dev, run, tmp, usr, rw: the private volume,
// home: from the private volume), no host configuration (fstab, hostname,
// resolv.conf, machine-id made neutral), the account "user" (uid 1000) that
// Qubes' default_user names, and no package files left in apt's cache.
void prepare_qube_root(const std::filesystem::path& root, const std::string& note);

}  // namespace aerie::storage
