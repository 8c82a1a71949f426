// Admin daemon benchmarks: aeried from this build on a fresh state directory,
// measured over its raw Unix sockets (one connection per request, as qubesd
// clients do):
//  - admin.vm.property.Get round trip (p50/p99 over 2,000 calls);
//  - admin.vm.property.Set round trip, each a durable store write (p50/p99
//    over 1,000 calls);
//  - with 1,000 qubes defined: admin.vm.List and internal.GetSystemInfo
//    (median of 20 calls each).
// Figures go to --json-out=PATH, else $AERIE_BENCH_DIR/admin.json, else
// admin.json next to this executable (build/bench).
#include <fcntl.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <climits>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "admin_socket.hpp"

extern char** environ;

namespace {

using namespace aerie::bench;

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

constexpr int kGetSamples = 2000;
constexpr int kSetSamples = 1000;
constexpr int kQubes = 1000;  // besides dom0
constexpr int kListSamples = 20;

fs::path self_dir() {
    char self[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    return fs::path(std::string(self, n > 0 ? static_cast<size_t>(n) : 0)).parent_path();
}

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "bench_admin: %s\n", what.c_str());
    std::exit(1);
}

pid_t spawn(const std::vector<std::string>& argv, const std::string& log) {
    std::vector<char*> a;
    for (auto& s : argv) a.push_back(const_cast<char*>(s.c_str()));
    a.push_back(nullptr);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 2, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    pid_t pid;
    int rc = posix_spawn(&pid, a[0], &fa, nullptr, a.data(), environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc != 0) die("cannot start " + argv[0] + ": " + std::strerror(rc));
    return pid;
}




// Calls and insists on a success reply; the body.
std::string must(const std::string& socket_path, const std::string& request) {
    std::string reply = call(socket_path, request);
    if (!success(reply)) {
        std::string shown = request.substr(0, request.find('\0'));
        die("no success reply to " + shown + ": " + (reply.empty() ? "(none)" : reply.substr(0, 200)));
    }
    return reply.substr(2);
}

double micros_since(Clock::time_point t0) {
    return std::chrono::duration<double, std::micro>(Clock::now() - t0).count();
}

double percentile(std::vector<double> v, double p) {
    std::sort(v.begin(), v.end());
    size_t i = std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())));
    return v[i];
}

std::string json_out_path(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (std::strncmp(argv[i], "--json-out=", 11) == 0) return argv[i] + 11;
    if (const char* dir = std::getenv("AERIE_BENCH_DIR")) return std::string(dir) + "/admin.json";
    return self_dir() / "admin.json";
}

}  // namespace

int main(int argc, char** argv) {
    std::signal(SIGPIPE, SIG_IGN);
    fs::path bin = self_dir().parent_path() / "bin";
    std::string root = fs::temp_directory_path() / ("aerie-bench-admin-" + std::to_string(::getpid()));
    fs::remove_all(root);
    fs::create_directories(root);
    std::string sock = root + "/qubesd.sock", internal = root + "/qubesd.internal.sock", log = root + "/log";
    pid_t daemon = spawn({(bin / "aeried").string(), "--state-dir", root + "/state", "--socket", sock,
                          "--internal-socket", internal},
                         log);
    auto stop = [&] {
        ::kill(daemon, SIGTERM);
        ::waitpid(daemon, nullptr, 0);
    };
    std::string list_request = encode("admin.vm.List", "dom0");
    for (int i = 0; !success(call(sock, list_request)); ++i) {
        int status;
        if (i > 1000 || ::waitpid(daemon, &status, WNOHANG) == daemon) {
            std::ifstream in(log);
            std::string text((std::istreambuf_iterator<char>(in)), {});
            die("aeried did not come up:\n" + text);
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }

    must(sock, encode("admin.vm.Create.TemplateVM", "dom0", "name=tpl label=black"));
    must(sock, encode("admin.property.Set+default_template", "dom0", "tpl"));
    must(sock, encode("admin.vm.Create.AppVM", "dom0", "name=work label=red"));

    // Property reads: an AppVM's memory, whose default comes from its template.
    std::string get_request = encode("admin.vm.property.Get+memory", "work");
    for (int i = 0; i < 200; ++i) must(sock, get_request);  // warm-up
    std::vector<double> get_us;
    for (int i = 0; i < kGetSamples; ++i) {
        auto t0 = Clock::now();
        std::string reply = call(sock, get_request);
        get_us.push_back(micros_since(t0));
        if (reply != std::string("0\0default=True type=int 400", 27)) die("unexpected Get reply: " + reply);
    }

    // Property writes: each a committed store transaction.
    std::vector<double> set_us;
    for (int i = 0; i < kSetSamples; ++i) {
        std::string request = encode("admin.vm.property.Set+memory", "work", std::to_string(500 + i % 1000));
        auto t0 = Clock::now();
        std::string reply = call(sock, request);
        set_us.push_back(micros_since(t0));
        if (reply != std::string("0\0", 2)) die("unexpected Set reply: " + reply);
    }
    std::fprintf(stderr, "bench_admin: property Get p50 %.0f us, Set p50 %.0f us\n", percentile(get_us, 0.5),
                 percentile(set_us, 0.5));

    // 1,000 qubes: the template, "work" and 998 more.
    auto t_create = Clock::now();
    for (int i = 2; i < kQubes; ++i)
        must(sock, encode("admin.vm.Create.AppVM", "dom0", "name=q" + std::to_string(i) + " label=blue"));
    double create_s = micros_since(t_create) / 1e6;

    std::vector<double> list_ms, info_ms;
    std::string info_request = encode("internal.GetSystemInfo", "dom0");
    for (int i = 0; i < kListSamples + 2; ++i) {
        auto t0 = Clock::now();
        std::string body = must(sock, list_request);
        double ms = micros_since(t0) / 1000;
        if (std::count(body.begin(), body.end(), '\n') != kQubes + 1) die("admin.vm.List: wrong line count");
        if (i >= 2) list_ms.push_back(ms);  // the first two warm up
    }
    for (int i = 0; i < kListSamples + 2; ++i) {
        auto t0 = Clock::now();
        std::string body = must(internal, info_request);
        double ms = micros_since(t0) / 1000;
        if (body.rfind("{\"domains\":", 0) != 0) die("internal.GetSystemInfo: unexpected reply");
        if (i >= 2) info_ms.push_back(ms);
    }
    // The same read with 1,000 qubes defined, for comparison (not a target).
    std::vector<double> get_loaded_us;
    for (int i = 0; i < 500; ++i) {
        auto t0 = Clock::now();
        must(sock, get_request);
        get_loaded_us.push_back(micros_since(t0));
    }
    std::fprintf(
        stderr,
        "bench_admin: %d creates in %.1f s; with %d qubes: property Get p50 %.0f us, List p50 %.2f ms, "
        "GetSystemInfo p50 %.2f ms\n",
        kQubes - 2, create_s, kQubes + 1, percentile(get_loaded_us, 0.5), percentile(list_ms, 0.5),
        percentile(info_ms, 0.5));

    stop();
    std::error_code ec;
    fs::remove_all(root, ec);

    char json[512];
    std::snprintf(
        json, sizeof json,
        "{\"property_get_p50_us\": %.1f, \"property_get_p99_us\": %.1f, \"property_set_p50_us\": %.1f, "
        "\"property_set_p99_us\": %.1f, \"list_1000_ms\": %.2f, \"system_info_1000_ms\": %.2f}\n",
        percentile(get_us, 0.5), percentile(get_us, 0.99), percentile(set_us, 0.5), percentile(set_us, 0.99),
        percentile(list_ms, 0.5), percentile(info_ms, 0.5));
    std::fputs(json, stdout);
    std::string out = json_out_path(argc, argv);
    fs::create_directories(fs::path(out).parent_path().empty() ? "." : fs::path(out).parent_path(), ec);
    std::ofstream(out) << json;
    return 0;
}
