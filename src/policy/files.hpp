// Where policy files come from: the real file system, or an in-memory tree
// (tests and fuzzing). The loader sees only this interface.
#pragma once

#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

namespace aerie::policy {

class FileReadError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

class PolicyFiles {
public:
    enum class Kind { Missing, File, Directory, Other };

    virtual ~PolicyFiles() = default;
    // What path is, following symbolic links.
    virtual Kind kind(const std::string& path) const = 0;
    // Entry names (not paths) of a directory; throws FileReadError.
    virtual std::vector<std::string> list(const std::string& dir) const = 0;
    // Whole content of a file, at most max_bytes; throws FileReadError.
    virtual std::string read(const std::string& path, size_t max_bytes) const = 0;
    // Absolute, normalised form of path (symbolic links resolved where possible).
    virtual std::string resolve(const std::string& path) const = 0;
};

class DiskFiles final : public PolicyFiles {
public:
    Kind kind(const std::string& path) const override;
    std::vector<std::string> list(const std::string& dir) const override;
    std::string read(const std::string& path, size_t max_bytes) const override;
    std::string resolve(const std::string& path) const override;
};

// Absolute paths only; directories exist implicitly above every file, or
// explicitly through add_dir().
class MemoryFiles final : public PolicyFiles {
public:
    void add_file(const std::string& path, std::string content);
    void add_dir(const std::string& path);

    Kind kind(const std::string& path) const override;
    std::vector<std::string> list(const std::string& dir) const override;
    std::string read(const std::string& path, size_t max_bytes) const override;
    std::string resolve(const std::string& path) const override;

private:
    std::map<std::string, std::string> files_;
    std::set<std::string> dirs_{"/"};
};

}  // namespace aerie::policy
