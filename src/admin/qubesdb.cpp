#include "admin/qubesdb.hpp"

#include <fstream>
#include <set>
#include <stdexcept>

namespace aerie::admin {

namespace fs = std::filesystem;

namespace {

// "/remote/" -> "remote"; keys never climb out of the folder.
fs::path relative(const std::string& key) {
    fs::path path = fs::path(key).relative_path().lexically_normal();
    for (const auto& part : path)
        if (part == "..") throw std::invalid_argument("QubesDB key climbs out: " + key);
    return path;
}

}  // namespace

void QubesDb::replace(const std::string& prefix, const std::map<std::string, std::string>& entries) const {
    fs::path dir = dir_ / relative(prefix);
    fs::create_directories(dir);
    std::set<std::string> wanted;
    for (const auto& [name, value] : entries) {
        if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..")
            throw std::invalid_argument("QubesDB key name: " + name);
        wanted.insert(name);
        fs::path tmp = dir / ("." + name + ".tmp");
        {
            std::ofstream out(tmp, std::ios::trunc);
            out << value;
            if (!out) throw std::runtime_error("cannot write " + tmp.string());
        }
        fs::permissions(tmp, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read |
                                 fs::perms::others_read);
        fs::rename(tmp, dir / name);
    }
    for (const auto& entry : fs::directory_iterator(dir))
        if (!wanted.count(entry.path().filename().string())) fs::remove_all(entry.path());
}

std::optional<std::string> QubesDb::read(const std::string& key) const {
    std::ifstream in(dir_ / relative(key));
    if (!in) return std::nullopt;
    return std::string((std::istreambuf_iterator<char>(in)), {});
}

}  // namespace aerie::admin
