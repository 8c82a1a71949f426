#include "backend/ns/cgroup.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <set>
#include <sstream>
#include <thread>

#include "backend/backend.hpp"
#include "backend/ns/util.hpp"

namespace aerie::backend::ns {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

const std::vector<std::string> kV1Controllers = {"memory", "cpu", "cpuacct", "pids", "freezer"};

std::vector<std::string> split(const std::string& text, char sep) {
    std::vector<std::string> out;
    std::string cur;
    std::istringstream in(text);
    while (std::getline(in, cur, sep)) out.push_back(cur);
    if (!text.empty() && text.back() == sep) out.emplace_back();
    return out;
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(const std::string& s) {
    std::string out;
    for (size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '\\' && i + 3 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1])) &&
            std::isdigit(static_cast<unsigned char>(s[i + 2])) &&
            std::isdigit(static_cast<unsigned char>(s[i + 3]))) {
            out.push_back(static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
            i += 3;
        } else {
            out.push_back(s[i]);
        }
    }
    return out;
}

struct CgroupMount {
    fs::path mountpoint;
    std::string root;  // the mount's root inside the hierarchy
    bool v2 = false;
    std::set<std::string> controllers;  // v1
};

std::vector<CgroupMount> cgroup_mounts(const std::string& mountinfo) {
    std::vector<CgroupMount> out;
    std::istringstream in(mountinfo);
    std::string line;
    while (std::getline(in, line)) {
        std::istringstream words(line);
        std::vector<std::string> f;
        std::string w;
        while (words >> w) f.push_back(w);
        auto dash = std::find(f.begin(), f.end(), "-");
        if (dash == f.end() || f.size() < 5 || dash + 3 > f.end()) continue;
        const std::string& type = *(dash + 1);
        if (type != "cgroup" && type != "cgroup2") continue;
        CgroupMount m;
        m.root = unescape(f[3]);
        m.mountpoint = unescape(f[4]);
        m.v2 = type == "cgroup2";
        if (!m.v2) {
            for (const auto& opt : split(*(dash + 3), ','))
                if (std::find(kV1Controllers.begin(), kV1Controllers.end(), opt) != kV1Controllers.end())
                    m.controllers.insert(opt);
            if (m.controllers.empty()) continue;  // e.g. name=systemd
        }
        out.push_back(m);
    }
    return out;
}

// The directory of `path` (a cgroup path from /proc/self/cgroup) under mount `m`.
std::optional<fs::path> under_mount(const CgroupMount& m, const std::string& path) {
    std::string root = m.root == "/" ? "" : m.root;
    if (path.compare(0, root.size(), root) != 0) return std::nullopt;
    std::string rest = path.substr(root.size());
    if (!rest.empty() && rest[0] != '/') return std::nullopt;
    fs::path dir = m.mountpoint;
    if (!rest.empty() && rest != "/") dir /= rest.substr(1);
    return dir;
}

std::string parent_group_dir_name(const std::string& group) {
    return group + ".daemon";
}

void make_dir(const fs::path& dir) {
    if (::mkdir(dir.c_str(), 0755) < 0 && errno != EEXIST)
        throw_errno("creating cgroup " + dir.string(), errno);
}

uint64_t read_number(const fs::path& path) {
    auto text = try_read_file(path);
    if (!text) return 0;
    return std::strtoull(text->c_str(), nullptr, 10);
}

// memory.limit_in_bytes with memory.memsw.limit_in_bytes (where swap is
// accounted) equal to it: swap counts within the limit. memsw may never be
// below the limit, so a raise goes through memsw first.
void write_v1_memory_limit(const fs::path& dir, uint64_t bytes) {
    std::string v = std::to_string(bytes);
    int err = write_file_errno(dir / "memory.limit_in_bytes", v);
    if (err == EINVAL) {
        write_file_errno(dir / "memory.memsw.limit_in_bytes", v);
        err = write_file_errno(dir / "memory.limit_in_bytes", v);
    }
    if (err) throw_errno("limiting memory of " + dir.string(), err);
    write_file_errno(dir / "memory.memsw.limit_in_bytes", v);
}

// The budget of all qubes on the parent <own>/<group> of one v1 hierarchy
// (`controllers`: those mounted there). Written at every start: the folder
// goes with its last qube and comes back with the next one.
void write_v1_budget(const fs::path& base, const std::set<std::string>& controllers,
                     const QubesBudget& budget) {
    if (controllers.count("pids") && budget.pids_max)
        write_file(base / "pids.max", std::to_string(budget.pids_max));
    if (controllers.count("memory") && budget.memory_bytes) write_v1_memory_limit(base, budget.memory_bytes);
    if (controllers.count("cpu")) {
        // cpu.shares 1024 is every other group's weight (cgroup v2's 100).
        if (budget.cpu_weight)
            write_file_errno(base / "cpu.shares", std::to_string(budget.cpu_weight * 1024 / 100));
        if (budget.cpu_quota_milli) {
            uint64_t period = read_number(base / "cpu.cfs_period_us");
            if (!period) period = 100000;
            // EINVAL when a qube adopted from an older daemon has more: its
            // own quota still bounds it, the next start of it fits.
            write_file_errno(base / "cpu.cfs_quota_us",
                             std::to_string(budget.cpu_quota_milli * period / 1000));
        }
    }
}

void write_v2_budget(const fs::path& base, const QubesBudget& budget) {
    if (budget.pids_max) write_file(base / "pids.max", std::to_string(budget.pids_max));
    if (budget.memory_bytes) write_file(base / "memory.max", std::to_string(budget.memory_bytes));
    if (budget.cpu_quota_milli && fs::exists(base / "cpu.max"))
        write_file(base / "cpu.max", std::to_string(budget.cpu_quota_milli * 100) + " 100000");
    if (budget.cpu_weight && fs::exists(base / "cpu.weight"))
        write_file(base / "cpu.weight", std::to_string(budget.cpu_weight));
}

}  // namespace

CgroupLayout parse_cgroup_layout(const std::string& mountinfo, const std::string& proc_cgroup,
                                 const std::function<std::string(const fs::path&)>& read) {
    CgroupLayout layout;
    auto mounts = cgroup_mounts(mountinfo);
    // hierarchy lines: "id:controllers:path"
    std::optional<std::string> v2_path;
    std::vector<std::pair<std::set<std::string>, std::string>> v1_paths;
    std::istringstream in(proc_cgroup);
    std::string line;
    while (std::getline(in, line)) {
        size_t a = line.find(':');
        size_t b = a == std::string::npos ? a : line.find(':', a + 1);
        if (b == std::string::npos) continue;
        std::string ctrls = line.substr(a + 1, b - a - 1);
        std::string path = line.substr(b + 1);
        if (line.compare(0, a, "0") == 0 && ctrls.empty()) {
            v2_path = path;
            continue;
        }
        std::set<std::string> set;
        for (const auto& c : split(ctrls, ','))
            if (std::find(kV1Controllers.begin(), kV1Controllers.end(), c) != kV1Controllers.end())
                set.insert(c);
        if (!set.empty()) v1_paths.emplace_back(set, path);
    }

    if (v2_path) {
        for (const auto& m : mounts) {
            if (!m.v2) continue;
            auto dir = under_mount(m, *v2_path);
            if (!dir) continue;
            std::string ctrls = read(*dir / "cgroup.controllers");
            std::set<std::string> have;
            std::istringstream words(ctrls);
            std::string w;
            while (words >> w) have.insert(w);
            if (have.count("memory") && have.count("pids")) {
                layout.version = 2;
                layout.unified = *dir;
                return layout;
            }
        }
    }
    for (const auto& m : mounts) {
        if (m.v2) continue;
        for (const auto& [set, path] : v1_paths) {
            if (set != m.controllers) continue;
            auto dir = under_mount(m, path);
            if (!dir) continue;
            for (const auto& c : set) layout.v1.emplace(c, *dir);
        }
    }
    if (!layout.v1.empty()) layout.version = 1;
    return layout;
}

CgroupLayout detect_cgroup_layout() {
    return parse_cgroup_layout(try_read_file("/proc/self/mountinfo").value_or(""),
                               try_read_file("/proc/self/cgroup").value_or(""),
                               [](const fs::path& p) { return try_read_file(p).value_or(""); });
}

QubeCgroup QubeCgroup::create(const CgroupLayout& layout, const std::string& group, const std::string& name,
                              const CgroupLimits& limits, const QubesBudget& budget) {
    QubeCgroup cg;
    cg.version_ = layout.version;
    if (layout.version == 2) {
        fs::path own = layout.unified;
        // A cgroup that holds processes cannot hand controllers to children
        // (cgroup v2's "no internal processes"): the daemon then moves itself
        // into a leaf <own>/<group>.daemon, as systemd's delegation expects.
        if (own.filename() == parent_group_dir_name(group)) own = own.parent_path();
        std::string want = "+memory +pids";
        std::string ctrls = try_read_file(own / "cgroup.controllers").value_or("");
        if (ctrls.find("cpu") != std::string::npos) want += " +cpu";
        int err = write_file_errno(own / "cgroup.subtree_control", want);
        if (err == EBUSY) {
            fs::path leaf = own / parent_group_dir_name(group);
            make_dir(leaf);
            write_file(leaf / "cgroup.procs", std::to_string(::getpid()));
            err = write_file_errno(own / "cgroup.subtree_control", want);
        }
        if (err) throw_errno("enabling cgroup controllers in " + own.string(), err);
        fs::path base = own / group;
        make_dir(base);
        write_file(base / "cgroup.subtree_control", want);
        write_v2_budget(base, budget);
        fs::path dir = base / name;
        make_dir(dir);
        cg.dirs_["unified"] = dir;
        if (limits.maxmem_bytes) write_file(dir / "memory.max", std::to_string(limits.maxmem_bytes));
        if (limits.memory_bytes) write_file_errno(dir / "memory.low", std::to_string(limits.memory_bytes));
        if (limits.vcpus > 0 && fs::exists(dir / "cpu.max"))
            write_file(dir / "cpu.max", std::to_string(limits.vcpus * 100000) + " 100000");
        if (limits.pids_max) write_file(dir / "pids.max", std::to_string(limits.pids_max));
        return cg;
    }
    if (layout.version != 1)
        throw BackendError("no usable cgroup hierarchy (neither v2 with memory and pids, nor v1)");
    std::map<fs::path, std::set<std::string>> hierarchies;  // own dir -> its controllers
    for (const auto& [controller, own] : layout.v1) hierarchies[own].insert(controller);
    std::map<fs::path, fs::path> made;  // own dir -> qube dir (co-mounted controllers share one)
    for (const auto& [controller, own] : layout.v1) {
        auto it = made.find(own);
        if (it == made.end()) {
            fs::path base = own / group;
            make_dir(base);
            fs::path dir = base / name;
            make_dir(dir);
            it = made.emplace(own, dir).first;
        }
        cg.dirs_[controller] = it->second;
    }
    try {
        // The parent's first: v1 clamps the qube's CPU quota to it.
        for (const auto& [own, controllers] : hierarchies) write_v1_budget(own / group, controllers, budget);
        if (auto dir = cg.dir_of("memory")) {
            if (limits.maxmem_bytes) {
                write_file(*dir / "memory.limit_in_bytes", std::to_string(limits.maxmem_bytes));
                // Swap counts within maxmem (where swap accounting exists).
                write_file_errno(*dir / "memory.memsw.limit_in_bytes", std::to_string(limits.maxmem_bytes));
            }
            if (limits.memory_bytes)
                write_file(*dir / "memory.soft_limit_in_bytes", std::to_string(limits.memory_bytes));
        }
        if (auto dir = cg.dir_of("cpu"); dir && limits.vcpus > 0) {
            uint64_t period = read_number(*dir / "cpu.cfs_period_us");
            if (!period) period = 100000;
            uint64_t quota = period * static_cast<uint64_t>(limits.vcpus);
            // v1 refuses a child more CPU time than its parent has.
            int64_t parent = std::strtoll(
                try_read_file(dir->parent_path() / "cpu.cfs_quota_us").value_or("-1").c_str(), nullptr, 10);
            if (parent > 0) quota = std::min(quota, static_cast<uint64_t>(parent));
            write_file(*dir / "cpu.cfs_quota_us", std::to_string(quota));
        }
        if (auto dir = cg.dir_of("pids"); dir && limits.pids_max)
            write_file(*dir / "pids.max", std::to_string(limits.pids_max));
        if (auto dir = cg.dir_of("freezer")) write_file_errno(*dir / "freezer.state", "THAWED");
    } catch (...) {
        cg.remove(0ms);
        throw;
    }
    return cg;
}

QubeCgroup QubeCgroup::from_dirs(int version, std::map<std::string, fs::path> dirs) {
    QubeCgroup cg;
    cg.version_ = version;
    cg.dirs_ = std::move(dirs);
    return cg;
}

std::vector<fs::path> QubeCgroup::distinct_dirs() const {
    std::vector<fs::path> out;
    for (const auto& [c, d] : dirs_)
        if (std::find(out.begin(), out.end(), d) == out.end()) out.push_back(d);
    return out;
}

std::optional<fs::path> QubeCgroup::dir_of(const std::string& controller) const {
    auto it = dirs_.find(version_ == 2 ? "unified" : controller);
    if (it == dirs_.end()) return std::nullopt;
    return it->second;
}

void QubeCgroup::join(pid_t pid) const {
    for (const auto& d : distinct_dirs()) write_file(d / "cgroup.procs", std::to_string(pid));
}

std::vector<pid_t> QubeCgroup::procs() const {
    std::set<pid_t> all;
    for (const auto& d : distinct_dirs()) {
        auto text = try_read_file(d / "cgroup.procs");
        if (!text) continue;
        std::istringstream in(*text);
        pid_t p;
        while (in >> p) all.insert(p);
    }
    return {all.begin(), all.end()};
}

bool QubeCgroup::can_freeze() const {
    return version_ == 2 ? !dirs_.empty() : dir_of("freezer").has_value();
}

bool QubeCgroup::frozen() const {
    if (version_ == 2) {
        auto dir = dir_of("unified");
        if (!dir) return false;
        auto text = try_read_file(*dir / "cgroup.events").value_or("");
        return text.find("frozen 1") != std::string::npos;
    }
    auto dir = dir_of("freezer");
    if (!dir) return false;
    auto text = try_read_file(*dir / "freezer.state").value_or("");
    return text.rfind("FROZEN", 0) == 0;
}

void QubeCgroup::freeze(bool frozen_wanted, std::chrono::milliseconds timeout) const {
    if (!can_freeze()) throw BackendError("no cgroup freezer for this qube");
    if (version_ == 2)
        write_file(*dir_of("unified") / "cgroup.freeze", frozen_wanted ? "1" : "0");
    else
        write_file(*dir_of("freezer") / "freezer.state", frozen_wanted ? "FROZEN" : "THAWED");
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
        if (frozen() == frozen_wanted) return;
        if (std::chrono::steady_clock::now() > deadline)
            throw BackendError(std::string("cgroup freezer did not ") + (frozen_wanted ? "freeze" : "thaw") +
                               " in time");
        // v1 stays FREEZING while a task resists; writing again retries.
        if (version_ == 1 && frozen_wanted) write_file_errno(*dir_of("freezer") / "freezer.state", "FROZEN");
        std::this_thread::sleep_for(1ms);
    }
}

void QubeCgroup::kill_all() const {
    if (version_ == 2) {
        auto dir = dir_of("unified");
        if (dir && write_file_errno(*dir / "cgroup.kill", "1") == 0) return;
    }
    for (pid_t p : procs()) ::kill(p, SIGKILL);
    // Frozen (v1) tasks only die once thawed.
    if (version_ == 1) {
        if (auto dir = dir_of("freezer")) write_file_errno(*dir / "freezer.state", "THAWED");
    }
}

uint64_t QubeCgroup::memory_bytes() const {
    auto dir = dir_of("memory");
    if (!dir) return 0;
    return read_number(*dir / (version_ == 2 ? "memory.current" : "memory.usage_in_bytes"));
}

uint64_t QubeCgroup::cpu_usec() const {
    if (version_ == 2) {
        auto dir = dir_of("unified");
        if (!dir) return 0;
        auto text = try_read_file(*dir / "cpu.stat").value_or("");
        std::istringstream in(text);
        std::string key;
        uint64_t v;
        while (in >> key >> v)
            if (key == "usage_usec") return v;
        return 0;
    }
    auto dir = dir_of("cpuacct");
    if (!dir) return 0;
    return read_number(*dir / "cpuacct.usage") / 1000;
}

uint32_t QubeCgroup::process_count() const {
    if (auto dir = dir_of("pids"); dir && fs::exists(*dir / "pids.current"))
        return static_cast<uint32_t>(read_number(*dir / "pids.current"));
    return static_cast<uint32_t>(procs().size());
}

bool QubeCgroup::remove(std::chrono::milliseconds timeout) const {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    bool all_gone = true;
    for (const auto& d : distinct_dirs()) {
        for (;;) {
            if (::rmdir(d.c_str()) == 0 || errno == ENOENT) break;
            if (errno != EBUSY || std::chrono::steady_clock::now() > deadline) {
                all_gone = false;
                break;
            }
            std::this_thread::sleep_for(1ms);
        }
        // The shared <own>/<group> folder goes with its last qube.
        ::rmdir(d.parent_path().c_str());
    }
    return all_gone;
}

}  // namespace aerie::backend::ns
