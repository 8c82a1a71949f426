// qrexec benchmarks on a two-qube world (agents, daemons and a policy daemon
// on this host, each qube with its own socket directory):
//  - a call as a script makes it: one qrexec-client-vm process per call, to
//    an executable service that prints one line (p50/p99 over 1,000 calls);
//  - a call from a long-running program through Aerie's client library, to a
//    Unix socket service (p50/p99 over 1,000 calls);
//  - a 1 GiB stream each way (the lower figure is throughput_mb_s);
//  - 256 calls at once from one qube, counting failures.
// Figures go to --json-out=PATH, else $AERIE_BENCH_DIR/qrexec.json, else
// bench/qrexec.json relative to the working directory.
#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "qrexec/client.hpp"
#include "qrexec/vchan.hpp"

extern char** environ;

namespace {

namespace fs = std::filesystem;
using aerie::qrexec::UniqueFd;
using Clock = std::chrono::steady_clock;

constexpr size_t kGiB = size_t{1} << 30;

std::string bin_dir() {
    char self[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    std::string path(self, n > 0 ? static_cast<size_t>(n) : 0);
    return fs::path(path).parent_path().parent_path() / "bin";
}

pid_t spawn(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env,
            const std::string& log) {
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) env.emplace_back(*e);
    env.insert(env.end(), extra_env.begin(), extra_env.end());
    std::vector<char*> a, e;
    for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    for (auto& s : env) e.push_back(const_cast<char*>(s.c_str()));
    e.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    pid_t pid;
    if (posix_spawn(&pid, a[0], &fa, nullptr, a.data(), e.data()) != 0) {
        std::perror("posix_spawn");
        std::exit(1);
    }
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

void wait_for_path(const std::string& path) {
    for (int i = 0; i < 500 && !fs::exists(path); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    if (!fs::exists(path)) {
        std::fprintf(stderr, "bench_qrexec: %s did not appear\n", path.c_str());
        std::exit(1);
    }
}

void write_file(const std::string& path, const std::string& text, fs::perms perms = fs::perms::owner_read |
                                                                                   fs::perms::owner_write) {
    std::ofstream(path) << text;
    fs::permissions(path, perms);
}

// A Unix socket service run by the benchmark itself.
class SocketService {
public:
    enum class Kind { Hello, Sink, Source };
    SocketService(const std::string& path, Kind kind) : kind_(kind) {
        listener_ = aerie::qrexec::vchan_listen(path);
        thread_ = std::thread([this] { serve(); });
    }
    ~SocketService() {
        ::shutdown(listener_.get(), SHUT_RDWR);
        thread_.join();
    }

private:
    void serve() {
        for (;;) {
            int fd = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
            if (fd < 0) return;
            std::thread([fd, kind = kind_] { handle(UniqueFd(fd), kind); }).detach();
        }
    }
    static void handle(UniqueFd fd, Kind kind) {
        std::vector<char> buf(1 << 20);
        // The service descriptor comes first, up to its NUL.
        size_t have = 0;
        for (;;) {
            ssize_t n = ::read(fd.get(), buf.data() + have, buf.size() - have);
            if (n <= 0) return;
            have += static_cast<size_t>(n);
            if (std::memchr(buf.data(), 0, have)) break;
        }
        if (kind == Kind::Hello) {
            aerie::qrexec::write_all(fd.get(), "hello\n", 6);
        } else if (kind == Kind::Sink) {
            while (::read(fd.get(), buf.data(), buf.size()) > 0) {
            }
        } else {
            std::fill(buf.begin(), buf.end(), 'x');
            for (size_t sent = 0; sent < kGiB; sent += buf.size())
                if (!aerie::qrexec::write_all(fd.get(), buf.data(), buf.size())) break;
        }
    }
    Kind kind_;
    UniqueFd listener_;
    std::thread thread_;
};

double percentile(std::vector<double> v, double p) {
    std::sort(v.begin(), v.end());
    size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
    return v[i];
}

std::string json_out_path(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (std::strncmp(argv[i], "--json-out=", 11) == 0) return argv[i] + 11;
    if (const char* dir = std::getenv("AERIE_BENCH_DIR")) return std::string(dir) + "/qrexec.json";
    return "bench/qrexec.json";
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    std::string bin = bin_dir();
    std::string root = fs::temp_directory_path() / ("aerie-bench-qrexec-" + std::to_string(::getpid()));
    fs::create_directories(root + "/policy.d");
    fs::create_directories(root + "/qubes");
    std::string log = root + "/log";
    std::string user = std::getenv("USER") ? std::getenv("USER") : "root";
    write_file(root + "/policy.d/50-bench.policy", "bench.Echo * work vault allow\nbench.Hello * work vault allow\n"
                                                   "bench.Sink * work vault allow\nbench.Source * work vault allow\n");
    write_file(root + "/sysinfo.json",
               R"({"domains": {"dom0": {"type": "AdminVM", "tags": [], "uuid": "00000000-0000-0000-0000-000000000000", "power_state": "Running"},
                  "work": {"type": "AppVM", "tags": [], "uuid": "00000000-0000-0000-0000-000000000001", "power_state": "Running"},
                  "vault": {"type": "AppVM", "tags": [], "uuid": "00000000-0000-0000-0000-000000000002", "power_state": "Running"}}})");

    std::vector<pid_t> pids;
    pids.push_back(spawn({bin + "/qrexec-policy-daemon", "--socket", root + "/policy.sock", "--path",
                          root + "/policy.d", "--system-info", root + "/sysinfo.json"},
                         {}, log));
    wait_for_path(root + "/policy.sock");
    std::map<std::string, int> qubes{{"work", 1}, {"vault", 2}};
    for (auto& [name, domid] : qubes) {
        std::string dir = root + "/" + name;
        fs::create_directories(dir + "/vchan");
        fs::create_directories(dir + "/rpc");
        std::vector<std::string> env{"VCHAN_SOCKET_DIR=" + dir + "/vchan", "VCHAN_DOMAIN=" + std::to_string(domid),
                                     "QREXEC_SERVICE_PATH=" + dir + "/rpc", "QUBES_RPC_CONFIG_PATH=" + dir + "/rpc-config"};
        pids.push_back(spawn({bin + "/qrexec-agent", "--agent-socket=" + dir + "/agent.sock"}, env, log));
        wait_for_path(dir + "/agent.sock");
        pids.push_back(spawn({bin + "/qrexec-daemon", "--direct", "--socket-dir=" + root + "/qubes",
                              "--policy-socket=" + root + "/policy.sock", std::to_string(domid), name, user},
                             env, log));
        wait_for_path(root + "/qubes/qrexec." + name);
    }
    std::string vault_rpc = root + "/vault/rpc";
    write_file(vault_rpc + "/bench.Echo", "#!/bin/sh\necho hello\n", fs::perms::owner_all);
    SocketService hello(vault_rpc + "/bench.Hello", SocketService::Kind::Hello);
    SocketService sink(vault_rpc + "/bench.Sink", SocketService::Kind::Sink);
    SocketService source(vault_rpc + "/bench.Source", SocketService::Kind::Source);
    std::string work_agent = root + "/work/agent.sock";

    // (a) one qrexec-client-vm process per call.
    std::vector<double> exec_us;
    int exec_failures = 0;
    std::string client_vm = bin + "/qrexec-client-vm";
    for (int i = 0; i < 1000; ++i) {
        auto t0 = Clock::now();
        int out[2];
        if (::pipe2(out, O_CLOEXEC) < 0) return 1;
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
        posix_spawn_file_actions_adddup2(&fa, out[1], 1);
        std::string sock_arg = "--agent-socket=" + work_agent;
        char* args[] = {client_vm.data(), sock_arg.data(), const_cast<char*>("vault"),
                        const_cast<char*>("bench.Echo"), nullptr};
        pid_t pid;
        posix_spawn(&pid, args[0], &fa, nullptr, args, environ);
        posix_spawn_file_actions_destroy(&fa);
        ::close(out[1]);
        char buf[64];
        std::string got;
        ssize_t n;
        while ((n = ::read(out[0], buf, sizeof buf)) > 0) got.append(buf, static_cast<size_t>(n));
        ::close(out[0]);
        int status;
        ::waitpid(pid, &status, 0);
        exec_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
        if (got != "hello\n" || !WIFEXITED(status) || WEXITSTATUS(status) != 0) ++exec_failures;
    }

    // (b) the client library, to a socket service.
    aerie::qrexec::CallRequest req;
    req.agent_socket = work_agent;
    req.target = "vault";
    req.service_and_arg = "bench.Hello";
    std::vector<double> socket_us;
    int socket_failures = 0;
    for (int i = 0; i < 1000; ++i) {
        auto t0 = Clock::now();
        auto r = aerie::qrexec::call_service(req, {});
        socket_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
        if (r.exit_code != 0 || r.output != "hello\n") ++socket_failures;
    }

    // 1 GiB each way.
    auto stream = [&](const char* service, bool up) {
        aerie::qrexec::CallRequest s = req;
        s.service_and_arg = service;
        auto ch = aerie::qrexec::open_call(s);
        if (!ch.channel) return 0.0;
        int p[2];
        if (::pipe2(p, O_CLOEXEC) < 0) return 0.0;
        ::fcntl(p[0], F_SETPIPE_SZ, 1 << 20);
        auto t0 = Clock::now();
        std::thread side;
        int code;
        if (up) {
            side = std::thread([w = p[1]] {
                std::vector<char> buf(1 << 20, 'x');
                for (size_t sent = 0; sent < kGiB; sent += buf.size()) aerie::qrexec::write_all(w, buf.data(), buf.size());
                ::close(w);
            });
            code = aerie::qrexec::run_call(std::move(ch.channel), UniqueFd(p[0]), UniqueFd(), UniqueFd());
        } else {
            std::atomic<size_t> got{0};
            side = std::thread([r = p[0], &got] {
                std::vector<char> buf(1 << 20);
                ssize_t n;
                while ((n = ::read(r, buf.data(), buf.size())) > 0) got += static_cast<size_t>(n);
                ::close(r);
            });
            code = aerie::qrexec::run_call(std::move(ch.channel), UniqueFd(), UniqueFd(p[1]), UniqueFd());
            side.join();
            if (got != kGiB) code = -1;
        }
        if (side.joinable()) side.join();
        double secs = std::chrono::duration<double>(Clock::now() - t0).count();
        return code == 0 ? static_cast<double>(kGiB) / 1e6 / secs : 0.0;
    };
    std::fprintf(stderr, "bench_qrexec: calls done (exec p50 %.0f us, socket p50 %.0f us)\n", percentile(exec_us, 0.5), percentile(socket_us, 0.5));
    double up_mb_s = stream("bench.Sink", true);
    std::fprintf(stderr, "bench_qrexec: up %.0f MB/s\n", up_mb_s);
    double down_mb_s = stream("bench.Source", false);

    // 256 calls at once.
    std::atomic<int> concurrent_failed{0};
    std::vector<std::thread> callers;
    for (int i = 0; i < 256; ++i) {
        callers.emplace_back([&] {
            auto r = aerie::qrexec::call_service(req, {});
            if (r.exit_code != 0 || r.output != "hello\n") ++concurrent_failed;
        });
    }
    for (auto& t : callers) t.join();

    for (pid_t pid : pids) ::kill(pid, SIGTERM);
    for (pid_t pid : pids) ::waitpid(pid, nullptr, 0);
    std::error_code ec;
    fs::remove_all(root, ec);

    char json[1024];
    std::snprintf(json, sizeof json,
                  "{\"exec_call_p50_us\": %.1f, \"exec_call_p99_us\": %.1f, \"socket_call_p50_us\": %.1f, "
                  "\"socket_call_p99_us\": %.1f, \"throughput_mb_s\": %.1f, \"throughput_up_mb_s\": %.1f, "
                  "\"throughput_down_mb_s\": %.1f, \"concurrent_failed_count\": %d, \"sequential_failed_count\": %d}\n",
                  percentile(exec_us, 0.5), percentile(exec_us, 0.99), percentile(socket_us, 0.5),
                  percentile(socket_us, 0.99), std::min(up_mb_s, down_mb_s), up_mb_s, down_mb_s,
                  concurrent_failed.load(), exec_failures + socket_failures);
    std::fputs(json, stdout);
    std::string out = json_out_path(argc, argv);
    fs::create_directories(fs::path(out).parent_path().empty() ? "." : fs::path(out).parent_path(), ec);
    std::ofstream(out) << json;
    return 0;
}
