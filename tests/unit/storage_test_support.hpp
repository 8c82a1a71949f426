// What the storage tests share: a pool folder of their own, run-as-uid, small
// file helpers.
#pragma once

#include <grp.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>

#include "storage/mounts.hpp"
#include "storage/tree.hpp"

namespace aerie::storage::test {

namespace fs = std::filesystem;

inline std::string slurp(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

inline void put(const fs::path& p, const std::string& text) {
    std::ofstream(p, std::ios::trunc) << text;
}

inline struct stat lstat_of(const fs::path& p) {
    struct stat st {};
    ::lstat(p.c_str(), &st);
    return st;
}

// Runs `body` in a child as uid/gid `id` (no capabilities left), in the
// folder `dir` (entered first: the pool's 0700 folders stay closed to the
// id, as they are to a qube, which reaches its volumes through its mounts).
// Its exit code (0: body returned true).
inline int as_user(uid_t id, const fs::path& dir, const std::function<bool()>& body) {
    pid_t pid = ::fork();
    if (pid == 0) {
        if (::chdir(dir.c_str()) < 0) _exit(101);
        if (::setgroups(0, nullptr) < 0 || ::setresgid(id, id, id) < 0 || ::setresuid(id, id, id) < 0)
            _exit(100);
        _exit(body() ? 0 : 1);
    }
    int status = 0;
    ::waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

inline bool write_file(const std::string& name, const std::string& text) {
    FILE* f = std::fopen(name.c_str(), "w");
    if (!f) return false;
    std::fputs(text.c_str(), f);
    return std::fclose(f) == 0;
}

// Writes `path` as `id`; with `by_rename`, as editors do (a new file renamed
// over the old one).
inline bool write_as(uid_t id, const fs::path& path, const std::string& text, bool by_rename = false) {
    return as_user(id, path.parent_path(), [&] {
               std::string name = path.filename().string();
               if (!by_rename) return write_file(name, text);
               return write_file(name + ".new", text) &&
                      std::rename((name + ".new").c_str(), name.c_str()) == 0;
           }) == 0;
}

// A folder for one test, with nothing mounted or left in it afterwards.
class TempDir {
public:
    explicit TempDir(const std::string& tag) {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        path_ = fs::path("/tmp") / ("aerie-" + tag + "-" + std::to_string(::getpid()) + "-" + info->name());
        clean();
        fs::create_directories(path_);
    }
    ~TempDir() { clean(); }
    const fs::path& path() const { return path_; }
    void clean() {
        for (const auto& m : mounts_under(path_)) unmount_all(m);
        remove_tree(path_);
    }

private:
    fs::path path_;
};

}  // namespace aerie::storage::test
