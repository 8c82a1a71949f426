// qfile-agent: the sender behind qvm-copy (Qubes' program of that name),
// started by qrexec-client-vm with the qubes.Filecopy call on stdin/stdout:
//   qfile-agent [--ignore-symlinks] [--] FILE...
// Progress as Qubes' (PROGRESS_TYPE=console with FILECOPY_TOTAL_BYTES: "sent
// N/M KB" on stderr; gui: byte counts on the descriptor SAVED_FD_1). Exit
// code 0 when the receiver confirmed everything with a matching checksum, else
// 1 with the reason on stderr.
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "qfile/packer.hpp"

using namespace aerie;

namespace {

constexpr std::uint64_t kProgressStep = 15 * 1000 * 1000;

class Progress {
public:
    Progress() {
        const char* type = std::getenv("PROGRESS_TYPE");
        const char* total = std::getenv("FILECOPY_TOTAL_BYTES");
        const char* saved = std::getenv("SAVED_FD_1");
        if (type && !std::strcmp(type, "console") && total) {
            console_ = true;
            total_ = std::strtoull(total, nullptr, 10);
        } else if (type && !std::strcmp(type, "gui") && saved) {
            gui_fd_ = static_cast<int>(std::strtoul(saved, nullptr, 10));
        }
    }

    void add(std::uint64_t n) {
        done_ += n;
        if (done_ > shown_ + kProgressStep) show(false);
    }

    void show(bool last) {
        shown_ = done_;
        if (console_) {
            std::fprintf(stderr, "sent %llu/%llu KB\r%s",
                         static_cast<unsigned long long>((done_ + 1023) / 1024),
                         static_cast<unsigned long long>((total_ + 1023) / 1024), last ? "\n" : "");
            std::fflush(stderr);
        } else if (gui_fd_ >= 0) {
            std::string line = std::to_string(done_) + "\n";
            if (::write(gui_fd_, line.data(), line.size()) < 0 && errno == EPIPE) std::exit(32);
        }
    }

private:
    bool console_ = false;
    int gui_fd_ = -1;
    std::uint64_t total_ = 0, done_ = 0, shown_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
    ::signal(SIGPIPE, SIG_IGN);
    bool ignore_symlinks = false;
    bool options_done = false;
    std::vector<std::string> files;
    for (int i = 1; i < argc; ++i) {
        if (!options_done && !std::strcmp(argv[i], "--ignore-symlinks")) {
            ignore_symlinks = true;
        } else if (!options_done && !std::strcmp(argv[i], "--")) {
            options_done = true;
        } else {
            if (!*argv[i]) {
                std::fprintf(stderr, "qfile-agent: Invalid empty argument %d\n", i);
                return 1;
            }
            files.push_back(argv[i]);
        }
    }
    Progress progress;
    progress.show(false);
    qfile::Packer packer(1, 0);
    packer.on_progress([&](std::uint64_t n) { progress.add(n); });
    try {
        for (const auto& f : files) packer.send(f, ignore_symlinks);
        packer.finish();
    } catch (const qfile::PackError& e) {
        std::fprintf(stderr, "%s\n", e.what());
        return 1;
    }
    progress.show(true);
    return 0;
}
