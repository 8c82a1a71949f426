// Each running qube's QubesDB: the small key-value tree the admin side keeps
// for a qube and the qube reads (Qubes: qubesdb-daemon, /remote/<name> for a
// Qubes Air relay). Here a folder per qube under the lifecycle's runtime
// folder (<runtime>/<name>/qubesdb), shown read-only inside the qube at
// /run/qubes-db: the key /remote/x is the file /run/qubes-db/remote/x. The
// admin daemon writes; a qube can only read.
#pragma once

#include <filesystem>
#include <map>
#include <optional>
#include <string>

namespace aerie::admin {

inline constexpr const char* kQubesDbMountPoint = "/run/qubes-db";

class QubesDb {
public:
    explicit QubesDb(std::filesystem::path dir) : dir_(std::move(dir)) {}
    const std::filesystem::path& dir() const { return dir_; }

    // Makes the keys under `prefix` ("/remote/") exactly `entries` (key
    // names below the prefix -> values). Each file is replaced atomically.
    void replace(const std::string& prefix, const std::map<std::string, std::string>& entries) const;
    std::optional<std::string> read(const std::string& key) const;

private:
    std::filesystem::path dir_;
};

}  // namespace aerie::admin
