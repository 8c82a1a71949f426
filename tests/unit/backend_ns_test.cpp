// The ns driver with real qubes (needs root): start, state, stats, pause,
// shutdown, kill, setup errors, adoption after a restart, and start timings.
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "backend/ns/ns_backend.hpp"
#include "storage/host_template.hpp"

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using namespace aerie;
using backend::BackendError;
using backend::PowerState;
using backend::ns::NsBackend;
using backend::ns::NsOptions;

namespace {

fs::path g_dir;
fs::path g_template;

class NsQubes : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        if (::geteuid() != 0) return;
        g_dir = fs::temp_directory_path() / ("aerie-ns-unit-" + std::to_string(::getpid()));
        fs::remove_all(g_dir);
        fs::create_directories(g_dir);
        ::chmod(g_dir.c_str(), 0755);
        g_template = g_dir / "tpl";
        storage::create_host_template(g_template);
    }
    static void TearDownTestSuite() {
        if (!g_dir.empty()) fs::remove_all(g_dir);
    }
    void SetUp() override {
        if (::geteuid() != 0) GTEST_SKIP() << "needs root";
        opt_.runtime_base =
            g_dir / ("run-" + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
        opt_.cgroup_group = "aerie-unit-" + std::to_string(::getpid());
        backend_ = std::make_unique<NsBackend>(opt_);
    }
    void TearDown() override {
        if (!backend_) return;
        for (const auto& q : backend_->adopt()) {
            try {
                backend_->kill(q.name);
            } catch (...) {
            }
        }
    }

    backend::QubeSpec spec(const std::string& name, int qid, std::vector<std::string> argv) {
        backend::QubeSpec s;
        s.name = name;
        s.qid = qid;
        s.root = g_template;
        s.root_read_only = true;
        s.mounts = storage::host_template_mounts();
        s.init_argv = std::move(argv);
        s.memory_mib = 64;
        s.maxmem_mib = 256;
        s.vcpus = 1;
        return s;
    }
    // aerie-qube-init as PID 1, running argv.
    backend::QubeSpec with_init(const std::string& name, int qid, std::vector<std::string> argv) {
        auto s = spec(name, qid, {"/run/aerie/init", "--grace-ms", "500", "--"});
        for (auto& a : argv) s.init_argv.push_back(a);
        s.mounts.push_back({fs::path(AERIE_BIN_DIR) / "aerie-qube-init", "/run/aerie/init", true});
        return s;
    }
    static bool alive(pid_t pid) {
        auto st = backend::ns::read_proc_stat(pid);
        return st && st->state != 'Z';
    }
    void expect_gone(const std::map<std::string, fs::path>& dirs, pid_t pid, const std::string& name) {
        for (const auto& [c, d] : dirs) EXPECT_FALSE(fs::exists(d)) << d;
        EXPECT_FALSE(alive(pid));
        EXPECT_FALSE(fs::exists(opt_.runtime_base / name));
        EXPECT_EQ(backend_->state(name), PowerState::Halted);
    }

    NsOptions opt_;
    std::unique_ptr<NsBackend> backend_;
};

}  // namespace

TEST_F(NsQubes, StartReportStatsKill) {
    auto q = backend_->start(spec("unit-a", 11, {"/usr/bin/sleep", "1000"}));
    EXPECT_EQ(q.name, "unit-a");
    EXPECT_TRUE(alive(q.init_pid));
    EXPECT_EQ(backend_->state("unit-a"), PowerState::Running);
    auto st = backend_->stats("unit-a");
    EXPECT_EQ(st.processes, 1u);
    EXPECT_GT(st.memory_bytes, 0u);
    EXPECT_GE(backend_->exit_fd("unit-a"), 0);
    auto dirs = backend_->cgroup_dirs("unit-a");
    ASSERT_FALSE(dirs.empty());
    for (const auto& [c, d] : dirs) EXPECT_TRUE(fs::is_directory(d)) << d;
    EXPECT_TRUE(fs::exists(opt_.runtime_base / "unit-a" / "qube.json"));
    // The qube's root is the qube's root id, mapped to its range.
    auto status = backend::ns::try_read_file("/proc/" + std::to_string(q.init_pid) + "/status").value_or("");
    EXPECT_NE(status.find("Uid:\t" + std::to_string(backend::qube_uid_base(11))), std::string::npos)
        << status;
    EXPECT_NE(status.find("NoNewPrivs:\t1"), std::string::npos);
    EXPECT_NE(status.find("Seccomp:\t2"), std::string::npos);

    backend_->kill("unit-a");
    expect_gone(dirs, q.init_pid, "unit-a");
    EXPECT_THROW(backend_->kill("unit-a"), BackendError);
}

TEST_F(NsQubes, ShutdownKillsAnInitThatIgnoresSigterm) {
    // sleep as PID 1 has no SIGTERM handler: the kernel drops the signal.
    auto q = backend_->start(spec("unit-b", 12, {"/usr/bin/sleep", "1000"}));
    auto dirs = backend_->cgroup_dirs("unit-b");
    auto t0 = std::chrono::steady_clock::now();
    backend_->shutdown("unit-b", 300ms);
    auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_GE(took, 300ms);
    EXPECT_LT(took, 5s);
    expect_gone(dirs, q.init_pid, "unit-b");
}

TEST_F(NsQubes, ShutdownThroughAerieInitTakesDownEveryProcess) {
    auto q = backend_->start(with_init("unit-c", 13, {"/bin/sh", "-c", "sleep 1000 & sleep 1000 & wait"}));
    auto deadline = std::chrono::steady_clock::now() + 5s;
    while (backend_->stats("unit-c").processes < 4 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(5ms);
    EXPECT_EQ(backend_->stats("unit-c").processes, 4u);  // init, sh, 2 x sleep
    auto dirs = backend_->cgroup_dirs("unit-c");
    auto t0 = std::chrono::steady_clock::now();
    backend_->shutdown("unit-c", 5000ms);
    auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    std::printf("shutdown through aerie-qube-init: %.2f ms\n", ms);
    EXPECT_LT(ms, 2000);  // the init's own grace is 500 ms; sh dies on SIGTERM at once
    expect_gone(dirs, q.init_pid, "unit-c");
}

TEST_F(NsQubes, PauseAndUnpause) {
    backend_->start(spec("unit-d", 14, {"/usr/bin/sleep", "1000"}));
    backend_->pause("unit-d");
    EXPECT_EQ(backend_->state("unit-d"), PowerState::Paused);
    backend_->unpause("unit-d");
    EXPECT_EQ(backend_->state("unit-d"), PowerState::Running);
    backend_->pause("unit-d");
    backend_->kill("unit-d");  // a paused qube dies too
    EXPECT_EQ(backend_->state("unit-d"), PowerState::Halted);
}

TEST_F(NsQubes, SetupErrorsNameTheStepAndLeaveNothing) {
    try {
        backend_->start(spec("unit-e", 15, {"/nonexistent/init"}));
        FAIL() << "started";
    } catch (const BackendError& e) {
        EXPECT_STREQ(e.what(), "executing /nonexistent/init in the qube: No such file or directory");
    }
    auto s = spec("unit-e", 15, {"/usr/bin/sleep", "1"});
    s.mounts.push_back({"/nonexistent-source", "/rw", true});
    try {
        backend_->start(s);
        FAIL() << "started";
    } catch (const BackendError& e) {
        EXPECT_NE(std::string(e.what()).find("bind mount of /nonexistent-source on " + g_template.string() +
                                             "/rw: No such file or directory"),
                  std::string::npos)
            << e.what();
    }
    EXPECT_THROW(backend_->start(spec("unit-e", 15, {"sleep", "1"})), BackendError);
    EXPECT_THROW(backend_->start(spec("../x", 15, {"/usr/bin/sleep", "1"})), BackendError);
    EXPECT_THROW(backend_->start(spec("unit-e", -1, {"/usr/bin/sleep", "1"})), BackendError);
    EXPECT_THROW(backend_->start(spec("unit-e", backend::kMaxQid + 1, {"/usr/bin/sleep", "1"})),
                 BackendError);
    EXPECT_FALSE(fs::exists(opt_.runtime_base / "unit-e"));
    EXPECT_EQ(backend_->state("unit-e"), PowerState::Halted);
    auto layout = backend_->cgroup_layout();
    for (const auto& [c, own] : layout.v1) EXPECT_FALSE(fs::exists(own / opt_.cgroup_group / "unit-e")) << c;
    if (layout.version == 2) {
        EXPECT_FALSE(fs::exists(layout.unified / opt_.cgroup_group / "unit-e"));
    }
}

TEST_F(NsQubes, OneQubePerNameAndPerQid) {
    backend_->start(spec("unit-f", 16, {"/usr/bin/sleep", "1000"}));
    EXPECT_THROW(backend_->start(spec("unit-f", 17, {"/usr/bin/sleep", "1000"})), BackendError);
    try {
        backend_->start(spec("unit-g", 16, {"/usr/bin/sleep", "1000"}));
        FAIL() << "started";
    } catch (const BackendError& e) {
        EXPECT_STREQ(e.what(), "qid 16 is in use by unit-f");
    }
    backend_->kill("unit-f");
}

TEST_F(NsQubes, ExitStatusOfPid1AndCrashed) {
    backend_->start(spec("unit-h", 18, {"/bin/sh", "-c", "exit 3"}));
    pollfd p{backend_->exit_fd("unit-h"), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);
    EXPECT_EQ(backend_->exit_status("unit-h"), 3);
    EXPECT_EQ(backend_->state("unit-h"), PowerState::Crashed);
    EXPECT_THROW(backend_->pause("unit-h"), BackendError);
    backend_->cleanup("unit-h");
    EXPECT_EQ(backend_->state("unit-h"), PowerState::Halted);
    EXPECT_FALSE(fs::exists(opt_.runtime_base / "unit-h"));

    // A dying agent ends the qube through aerie-qube-init with its status.
    backend_->start(with_init("unit-h", 18, {"/bin/sh", "-c", "kill -9 $$"}));
    p = {backend_->exit_fd("unit-h"), POLLIN, 0};
    ASSERT_EQ(::poll(&p, 1, 5000), 1);
    EXPECT_EQ(backend_->exit_status("unit-h"), 128 + 9);
    backend_->cleanup("unit-h");
}

TEST_F(NsQubes, RuntimeFolderElsewhereIsLinked) {
    auto s = spec("unit-i", 19, {"/usr/bin/sleep", "1000"});
    s.runtime_dir = g_dir / "elsewhere-unit-i";
    backend_->start(s);
    EXPECT_TRUE(fs::is_symlink(opt_.runtime_base / "unit-i"));
    EXPECT_TRUE(fs::exists(s.runtime_dir / "qube.json"));
    EXPECT_TRUE(fs::exists(s.runtime_dir / "console.log"));
    NsBackend again(opt_);
    auto found = again.adopt();
    ASSERT_EQ(found.size(), 1u);
    again.kill("unit-i");
    EXPECT_FALSE(fs::exists(s.runtime_dir));
    EXPECT_FALSE(fs::exists(fs::symlink_status(opt_.runtime_base / "unit-i")));
}

TEST_F(NsQubes, AdoptedAfterARestartDeadOnesCleanedUp) {
    auto a = backend_->start(spec("unit-j", 20, {"/usr/bin/sleep", "1000"}));
    auto b = backend_->start(spec("unit-k", 21, {"/usr/bin/sleep", "1000"}));
    auto dirs_b = backend_->cgroup_dirs("unit-k");
    // The "daemon" goes away (its backend object), b's PID 1 dies meanwhile.
    backend_.reset();
    ::kill(b.init_pid, SIGKILL);
    int st;
    ::waitpid(b.init_pid, &st, 0);

    backend_ = std::make_unique<NsBackend>(opt_);
    auto found = backend_->adopt();
    ASSERT_EQ(found.size(), 1u);
    EXPECT_EQ(found[0].name, "unit-j");
    EXPECT_EQ(found[0].init_pid, a.init_pid);
    EXPECT_EQ(backend_->state("unit-j"), PowerState::Running);
    EXPECT_EQ(backend_->state("unit-k"), PowerState::Halted);
    for (const auto& [c, d] : dirs_b) EXPECT_FALSE(fs::exists(d)) << d;
    EXPECT_FALSE(fs::exists(opt_.runtime_base / "unit-k"));
    // The adopted one is fully controllable.
    backend_->pause("unit-j");
    EXPECT_EQ(backend_->state("unit-j"), PowerState::Paused);
    backend_->shutdown("unit-j", 200ms);
    EXPECT_FALSE(alive(a.init_pid));
    EXPECT_EQ(backend_->adopt().size(), 0u);
}

TEST_F(NsQubes, PidReuseIsNotAdoption) {
    auto a = backend_->start(spec("unit-l", 22, {"/usr/bin/sleep", "1000"}));
    backend_.reset();
    ::kill(a.init_pid, SIGKILL);
    int st;
    ::waitpid(a.init_pid, &st, 0);
    // The record's pid now names an unrelated process (pid reuse): another
    // start time, so not adopted, and not killed either. Start times count
    // clock ticks (10 ms): the other process starts a few ticks later.
    std::this_thread::sleep_for(30ms);
    pid_t other = ::fork();
    if (other == 0) {
        ::execl("/usr/bin/sleep", "sleep", "1000", nullptr);
        ::_exit(127);
    }
    fs::path rec = opt_.runtime_base / "unit-l" / "qube.json";
    std::string text = backend::ns::read_file(rec);
    auto pos = text.find("\"init_pid\": ");
    ASSERT_NE(pos, std::string::npos);
    text.replace(pos, text.find(',', pos) - pos, "\"init_pid\": " + std::to_string(other));
    backend::ns::write_file_atomic(rec, text, 0600, false);
    backend_ = std::make_unique<NsBackend>(opt_);
    EXPECT_EQ(backend_->adopt().size(), 0u);
    EXPECT_TRUE(alive(other));
    EXPECT_FALSE(fs::exists(opt_.runtime_base / "unit-l"));
    ::kill(other, SIGKILL);
    ::waitpid(other, &st, 0);
}

TEST_F(NsQubes, StartTimesAndIdleOverhead) {
    const int n = 20;
    std::vector<double> start_ms, setup_ms, shutdown_ms;
    std::vector<uint64_t> memory;
    for (int i = 0; i < n; ++i) {
        std::string name = "unit-t" + std::to_string(i);
        backend_->start(with_init(name, 100 + i, {"/usr/bin/sleep", "1000"}));
        auto t = backend_->last_start_timings();
        start_ms.push_back(t.total.count() / 1000.0);
        setup_ms.push_back(t.setup.count() / 1000.0);
    }
    std::this_thread::sleep_for(200ms);
    for (int i = 0; i < n; ++i) memory.push_back(backend_->stats("unit-t" + std::to_string(i)).memory_bytes);
    for (int i = 0; i < n; ++i) {
        auto t0 = std::chrono::steady_clock::now();
        backend_->shutdown("unit-t" + std::to_string(i), 2000ms);
        shutdown_ms.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    auto pct = [](std::vector<double> v, double p) {
        std::sort(v.begin(), v.end());
        return v[static_cast<size_t>(p * (v.size() - 1))];
    };
    std::sort(memory.begin(), memory.end());
    std::printf(
        "ns start (to PID 1 exec) over %d qubes: p50 %.2f ms, p99 %.2f ms (clone..exec p50 %.2f ms)\n", n,
        pct(start_ms, 0.5), pct(start_ms, 0.99), pct(setup_ms, 0.5));
    std::printf("ns shutdown: p50 %.2f ms, p99 %.2f ms\n", pct(shutdown_ms, 0.5), pct(shutdown_ms, 0.99));
    std::printf("idle qube (aerie-qube-init + sleep) memory charged: median %.0f KiB\n",
                memory[n / 2] / 1024.0);
    // Generous bounds: a loaded machine must not make this flaky; the target
    // (p50 < 50 ms) is what the printed figures are for.
    EXPECT_LT(pct(start_ms, 0.5), 250);
    EXPECT_LT(memory[n / 2], 8u << 20);
}
