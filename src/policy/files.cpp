#include "policy/files.hpp"

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace aerie::policy {

namespace fs = std::filesystem;

PolicyFiles::Kind DiskFiles::kind(const std::string& path) const {
    std::error_code ec;
    auto st = fs::status(path, ec);
    if (ec || !fs::exists(st)) return Kind::Missing;
    if (fs::is_regular_file(st)) return Kind::File;
    if (fs::is_directory(st)) return Kind::Directory;
    return Kind::Other;
}

std::vector<std::string> DiskFiles::list(const std::string& dir) const {
    std::error_code ec;
    std::vector<std::string> names;
    fs::directory_iterator it(dir, ec);
    if (ec) throw FileReadError("cannot list directory " + dir + ": " + ec.message());
    for (; it != fs::directory_iterator(); it.increment(ec)) {
        if (ec) break;
        names.push_back(it->path().filename().string());
    }
    if (ec) throw FileReadError("cannot list directory " + dir + ": " + ec.message());
    return names;
}

std::string DiskFiles::read(const std::string& path, size_t max_bytes) const {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw FileReadError("cannot read " + path + ": " + std::strerror(errno));
    std::string data;
    char buf[65536];
    while (in) {
        in.read(buf, sizeof buf);
        data.append(buf, static_cast<size_t>(in.gcount()));
        if (data.size() > max_bytes)
            throw FileReadError("cannot read " + path + ": larger than " +
                                std::to_string(max_bytes) + " bytes");
    }
    if (in.bad()) throw FileReadError("cannot read " + path + ": " + std::strerror(errno));
    return data;
}

std::string DiskFiles::resolve(const std::string& path) const {
    std::error_code ec;
    auto p = fs::weakly_canonical(fs::absolute(path, ec), ec);
    if (ec) return fs::path(path).lexically_normal().string();
    return p.string();
}

void MemoryFiles::add_file(const std::string& path, std::string content) {
    files_[path] = std::move(content);
    for (auto p = fs::path(path).parent_path(); !p.empty() && p != p.root_path(); p = p.parent_path())
        dirs_.insert(p.string());
}

void MemoryFiles::add_dir(const std::string& path) {
    for (auto p = fs::path(path); !p.empty() && p != p.root_path(); p = p.parent_path())
        dirs_.insert(p.string());
}

PolicyFiles::Kind MemoryFiles::kind(const std::string& path) const {
    auto norm = resolve(path);
    if (files_.count(norm)) return Kind::File;
    if (dirs_.count(norm)) return Kind::Directory;
    return Kind::Missing;
}

std::vector<std::string> MemoryFiles::list(const std::string& dir) const {
    auto norm = resolve(dir);
    if (!dirs_.count(norm)) throw FileReadError("cannot list directory " + dir + ": No such file or directory");
    std::set<std::string> names;
    auto collect = [&](const std::string& p) {
        auto fp = fs::path(p);
        if (fp.parent_path().string() == norm) names.insert(fp.filename().string());
    };
    for (const auto& [p, _] : files_) collect(p);
    for (const auto& p : dirs_) collect(p);
    return {names.begin(), names.end()};
}

std::string MemoryFiles::read(const std::string& path, size_t max_bytes) const {
    auto it = files_.find(resolve(path));
    if (it == files_.end()) throw FileReadError("cannot read " + path + ": No such file or directory");
    if (it->second.size() > max_bytes)
        throw FileReadError("cannot read " + path + ": larger than " + std::to_string(max_bytes) +
                            " bytes");
    return it->second;
}

std::string MemoryFiles::resolve(const std::string& path) const {
    auto p = fs::path(path).lexically_normal().string();
    if (p.size() > 1 && p.back() == '/') p.pop_back();
    return p;
}

}  // namespace aerie::policy
