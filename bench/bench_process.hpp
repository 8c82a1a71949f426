// What the benchmarks that run a whole Aerie (aeried, qubes) share: starting
// programs, reading /proc, figures, and removing a benchmark's folder with
// every process and mount under it.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

extern char** environ;

namespace aerie::bench {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

inline fs::path self_dir() {
    char self[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    return fs::path(std::string(self, n > 0 ? static_cast<size_t>(n) : 0)).parent_path();
}

// The argv array of `args` (which must outlive it), null-terminated.
inline std::vector<char*> argv_of(const std::vector<std::string>& args) {
    std::vector<char*> a;
    for (auto& s : args) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    return a;
}

// argv[0] with our environment plus `extra_env`; stdin from /dev/null,
// stdout and stderr appended to `log`. -1 (and `error`) when it cannot start.
inline pid_t spawn_logged(const std::vector<std::string>& argv, const std::string& log,
                          const std::vector<std::string>& extra_env, std::string& error) {
    std::vector<char*> a = argv_of(argv);
    std::vector<std::string> env_store;
    for (char** e = environ; *e; ++e) env_store.emplace_back(*e);
    for (auto& e : extra_env) env_store.push_back(e);
    std::vector<char*> env;
    for (auto& e : env_store) env.push_back(e.data());
    env.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    pid_t pid;
    int rc = posix_spawn(&pid, a[0], &fa, nullptr, a.data(), env.data());
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) {
        error = "cannot start " + argv[0] + ": " + std::strerror(rc);
        return -1;
    }
    return pid;
}

// The floor a start stands on: one process started and reaped (posix_spawn of
// /bin/true, then waitpid), in ms. This machine's speed swings from day to
// day; a figure divided by it does not.
inline double spawn_floor_sample_ms() {
    std::vector<char*> a = argv_of({"/bin/true"});
    char* no_env[] = {nullptr};
    auto t0 = std::chrono::steady_clock::now();
    pid_t pid;
    if (posix_spawn(&pid, a[0], nullptr, nullptr, a.data(), no_env) != 0) return 0;
    int status;
    ::waitpid(pid, &status, 0);
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

inline std::string read_text(const fs::path& path) {
    std::ifstream in(path);
    return std::string((std::istreambuf_iterator<char>(in)), {});
}

inline double ms_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

inline double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0;
    std::sort(v.begin(), v.end());
    size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
    return v[i];
}

inline bool zombie_or_gone(pid_t pid) {
    std::string stat = read_text("/proc/" + std::to_string(pid) + "/stat");
    size_t paren = stat.rfind(')');
    return paren == std::string::npos || paren + 2 >= stat.size() || stat[paren + 2] == 'Z';
}

// Processes (not zombies) whose command line names `needle`.
inline std::vector<std::pair<pid_t, std::string>> processes_naming(const std::string& needle) {
    std::vector<std::pair<pid_t, std::string>> out;
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator("/proc", ec)) {
        std::string name = entry.path().filename();
        if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
        pid_t pid = std::atoi(name.c_str());
        if (pid == ::getpid()) continue;
        std::string cmdline = read_text(entry.path() / "cmdline");
        std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
        if (cmdline.find(needle) != std::string::npos && !zombie_or_gone(pid)) out.emplace_back(pid, cmdline);
    }
    return out;
}

inline std::vector<std::string> mounts_under(const std::string& dir) {
    std::vector<std::string> out;
    std::ifstream in("/proc/self/mountinfo");
    for (std::string line; std::getline(in, line);) {
        std::istringstream fields(line);
        std::string f[5];
        for (auto& x : f) fields >> x;
        if (f[4] == dir || f[4].rfind(dir + "/", 0) == 0) out.push_back(f[4]);
    }
    return out;
}

// Kills what names `root`, unmounts what is under it, removes it. False when
// mounts are left (the folder is then kept).
inline bool remove_world(const std::string& root) {
    for (auto& [pid, cmdline] : processes_naming(root)) ::kill(pid, SIGKILL);
    auto mounts = mounts_under(root);
    for (auto it = mounts.rbegin(); it != mounts.rend(); ++it) ::umount2(it->c_str(), MNT_DETACH);
    if (!mounts_under(root).empty()) return false;
    std::error_code ec;
    fs::remove_all(root, ec);
    return true;
}

// --json-out=PATH, else $AERIE_BENCH_DIR/NAME.json, else NAME.json next to
// the executable (build/bench).
inline std::string json_out_path(int argc, char** argv, const std::string& name) {
    for (int i = 1; i < argc; ++i)
        if (std::strncmp(argv[i], "--json-out=", 11) == 0) return argv[i] + 11;
    if (const char* dir = std::getenv("AERIE_BENCH_DIR")) return std::string(dir) + "/" + name + ".json";
    return self_dir() / (name + ".json");
}

}  // namespace aerie::bench
