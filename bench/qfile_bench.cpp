// qubes.Filecopy's sender and receiver through pipes (no qrexec): the
// throughput of one 256 MiB file, and files per second for 5,000 small ones
// in 50 folders; each run into a fresh folder under $TMPDIR (or /tmp).
// Figures go to --json-out=PATH, else $AERIE_BENCH_DIR/qfile.json, else
// bench/qfile.json relative to the working directory.
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "qfile/packer.hpp"
#include "qfile/unpacker.hpp"

namespace fs = std::filesystem;
using namespace aerie::qfile;

namespace {

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "bench_qfile: %s\n", what.c_str());
    std::exit(2);
}

// Sends `path` into `dest`; the seconds it took, end to end.
double transfer(const fs::path& path, const fs::path& dest) {
    int to_receiver[2], to_sender[2];
    if (::pipe(to_receiver) != 0 || ::pipe(to_sender) != 0) fail("pipe");
    int dir = ::open(dest.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) fail("open " + dest.string());
    auto t0 = std::chrono::steady_clock::now();
    UnpackResult result;
    std::thread receiver([&] {
        result = Unpacker(dir, {}).run(to_receiver[0], to_sender[1]);
        ::close(to_receiver[0]);
        ::close(to_sender[1]);
    });
    try {
        Packer packer(to_receiver[1], to_sender[0]);
        packer.send(path.string(), false);
        packer.finish();
    } catch (const PackError& e) {
        fail(e.what());
    }
    ::close(to_receiver[1]);
    receiver.join();
    ::close(to_sender[0]);
    ::close(dir);
    if (result.error_code != 0) fail("the receiver answered " + std::to_string(result.error_code));
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string json_out_path(int argc, char** argv) {
    for (int i = 1; i < argc; ++i)
        if (std::strncmp(argv[i], "--json-out=", 11) == 0) return argv[i] + 11;
    if (const char* dir = std::getenv("AERIE_BENCH_DIR")) return std::string(dir) + "/qfile.json";
    return "bench/qfile.json";
}

}  // namespace

int main(int argc, char** argv) {
    ::signal(SIGPIPE, SIG_IGN);
    const char* tmp = std::getenv("TMPDIR");
    std::string tmpl = std::string(tmp ? tmp : "/tmp") + "/aerie-qfile-bench-XXXXXX";
    if (!::mkdtemp(tmpl.data())) fail("mkdtemp");
    fs::path root = tmpl;

    fs::create_directories(root / "src" / "small");
    {
        std::vector<char> block(1 << 20);
        for (std::size_t i = 0; i < block.size(); ++i) block[i] = static_cast<char>(i * 2654435761u >> 24);
        std::ofstream big(root / "src" / "big", std::ios::binary);
        for (int i = 0; i < 256; ++i) big.write(block.data(), static_cast<std::streamsize>(block.size()));
    }
    for (int d = 0; d < 50; ++d) {
        fs::create_directories(root / "src" / "small" / std::to_string(d));
        for (int f = 0; f < 100; ++f)
            std::ofstream(root / "src" / "small" / std::to_string(d) / ("f" + std::to_string(f)))
                << "some text\n";
    }
    double best_big = 1e9, best_small = 1e9;
    for (int run = 0; run < 3; ++run) {
        fs::path dest = root / ("dest" + std::to_string(run));
        fs::create_directories(dest);
        best_big = std::min(best_big, transfer(root / "src" / "big", dest));
        best_small = std::min(best_small, transfer(root / "src" / "small", dest));
    }
    fs::remove_all(root);

    char json[256];
    std::snprintf(json, sizeof json, "{\"one_file_256mib_mb_s\": %.1f, \"small_files_per_s\": %.0f}",
                  256.0 * 1048576 / 1e6 / best_big, 5000.0 / best_small);
    std::printf("%s\n", json);
    std::string out = json_out_path(argc, argv);
    std::ofstream(out) << json << "\n";
    return 0;
}
