#include "storage/accounts.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "storage/error.hpp"

namespace aerie::storage {

namespace fs = std::filesystem;

namespace {

constexpr const char* kUserId = "1000";

std::vector<std::string> read_lines(const fs::path& path) {
    std::ifstream in(path);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
}

std::vector<std::string> fields_of(const std::string& line) {
    std::vector<std::string> fields;
    std::istringstream in(line);
    for (std::string field; std::getline(in, field, ':');) fields.push_back(field);
    return fields;
}

// Writes beside and renames: the file is whole or untouched.
void write_lines(const fs::path& path, const std::vector<std::string>& lines) {
    fs::path tmp = path;
    tmp += ".aerie-tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        for (const auto& line : lines) out << line << '\n';
        if (!out) throw StorageError("writing " + tmp.string());
    }
    std::error_code ec;
    auto perms = fs::status(path, ec).permissions();
    if (!ec) fs::permissions(tmp, perms, ec);
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) (void)!::chown(tmp.c_str(), st.st_uid, st.st_gid);
    fs::rename(tmp, path);
}

// Removes entries named `name` or (field 3) with id 1000; returns the names
// removed, so the shadow files can follow.
std::vector<std::string> drop_conflicts(std::vector<std::string>& lines, bool* has_user) {
    std::vector<std::string> removed, kept;
    *has_user = false;
    for (const auto& line : lines) {
        auto f = fields_of(line);
        bool is_user = !f.empty() && f[0] == "user";
        bool id_taken = f.size() > 2 && f[2] == kUserId;
        if (is_user && id_taken) {
            *has_user = true;
            kept.push_back(line);
        } else if (is_user || id_taken) {
            removed.push_back(f[0]);
        } else {
            kept.push_back(line);
        }
    }
    lines = kept;
    return removed;
}

void drop_names(const fs::path& path, const std::vector<std::string>& names) {
    if (names.empty() || !fs::exists(path)) return;
    auto lines = read_lines(path);
    std::vector<std::string> kept;
    for (const auto& line : lines) {
        auto f = fields_of(line);
        bool drop = !f.empty() && std::find(names.begin(), names.end(), f[0]) != names.end();
        if (!drop) kept.push_back(line);
    }
    write_lines(path, kept);
}

}  // namespace

void ensure_qube_user(const fs::path& etc) {
    const std::string days = std::to_string(::time(nullptr) / 86400);

    auto group = read_lines(etc / "group");
    bool group_ok = false;
    auto gone_groups = drop_conflicts(group, &group_ok);
    if (!group_ok) group.push_back("user:x:1000:");
    write_lines(etc / "group", group);
    if (fs::exists(etc / "gshadow")) {
        drop_names(etc / "gshadow", gone_groups);
        if (!group_ok) {
            auto lines = read_lines(etc / "gshadow");
            lines.push_back("user:!::");
            write_lines(etc / "gshadow", lines);
        }
    }

    auto passwd = read_lines(etc / "passwd");
    bool user_ok = false;
    auto gone_users = drop_conflicts(passwd, &user_ok);
    if (!user_ok) passwd.push_back("user:x:1000:1000:user:/home/user:/bin/bash");
    write_lines(etc / "passwd", passwd);
    if (fs::exists(etc / "shadow")) {
        drop_names(etc / "shadow", gone_users);
        if (!user_ok) {
            auto lines = read_lines(etc / "shadow");
            lines.push_back("user:!:" + days + ":0:99999:7:::");
            write_lines(etc / "shadow", lines);
        }
    }
}

}  // namespace aerie::storage
