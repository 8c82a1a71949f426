// qfile-unpacker: the receiver behind qubes.Filecopy (Qubes' program of that
// name, with its options):
//   qfile-unpacker [--allow-all-names] [--allow-unsafe-symlinks] [-v]
//                  [--max-bytes N] [--max-files N] [UID [DIR]]
// reads a qfile stream on stdin, creates it in DIR (default
// ~/QubesIncoming/$QREXEC_REMOTE_DOMAIN) and answers on stdout. Its exit code
// is the error code it answered (0 on success). It runs as the calling user:
// it needs no privilege, since every name is resolved beneath the incoming
// directory's descriptor (unpacker.hpp) rather than by chroot.
#include <fcntl.h>
#include <getopt.h>
#include <pwd.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "base/safe_dir.hpp"
#include "qfile/incoming.hpp"
#include "qfile/unpacker.hpp"

using namespace aerie;

namespace {

enum Opt {
    kAllowAllNames = 256,
    kNoAllowAllNames,
    kAllowUnsafeSymlinks,
    kNoAllowUnsafeSymlinks,
    kMaxBytes,
    kMaxFiles,
};

[[noreturn]] void fatal(const std::string& msg) {
    std::fprintf(stderr, "qfile-unpacker: %s\n", msg.c_str());
    std::exit(1);
}

std::uint64_t number(const char* text, const char* what) {
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(text, &end, 10);
    if (*text < '0' || *text > '9' || errno || *end) fatal(std::string("bad ") + what + ": " + text);
    return v;
}

}  // namespace

int main(int argc, char** argv) {
    static const option longopts[] = {
        {"allow-all-names", no_argument, nullptr, kAllowAllNames},
        {"no-allow-all-names", no_argument, nullptr, kNoAllowAllNames},
        {"allow-unsafe-symlinks", no_argument, nullptr, kAllowUnsafeSymlinks},
        {"no-allow-unsafe-symlinks", no_argument, nullptr, kNoAllowUnsafeSymlinks},
        {"verbose", no_argument, nullptr, 'v'},
        {"wait-for-space", required_argument, nullptr, 'w'},
        {"max-bytes", required_argument, nullptr, kMaxBytes},
        {"max-files", required_argument, nullptr, kMaxFiles},
        {nullptr, 0, nullptr, 0},
    };
    qfile::UnpackOptions options;
    int opt;
    while ((opt = getopt_long(argc, argv, "+vw:", longopts, nullptr)) != -1) {
        switch (opt) {
            case kAllowAllNames:
                options.name_flags |= qfile::kAllowUnsafeCharacters;
                break;
            case kNoAllowAllNames:
                options.name_flags &= ~qfile::kAllowUnsafeCharacters;
                break;
            case kAllowUnsafeSymlinks:
                options.name_flags |= qfile::kAllowUnsafeSymlinks;
                break;
            case kNoAllowUnsafeSymlinks:
                options.name_flags &= ~qfile::kAllowUnsafeSymlinks;
                break;
            case 'v':
                break;  // accepted for compatibility
            case 'w':
                number(optarg, "space amount");
                break;  // accepted; a full disk fails with ENOSPC
            case kMaxBytes:
                options.max_bytes = number(optarg, "byte limit");
                break;
            case kMaxFiles:
                options.max_files = number(optarg, "file limit");
                break;
            default:
                return 1;
        }
    }
    if (argc - optind > 2) fatal("wrong number of arguments (expected at most UID and DIR)");
    uid_t uid = ::getuid();
    if (optind < argc && argv[optind][0] != '\0' && number(argv[optind], "user ID") != uid)
        fatal("Refusing to change to UID other than the caller's UID");
    const char* dir = argc - optind == 2 ? argv[optind + 1] : nullptr;

    ::signal(SIGPIPE, SIG_IGN);
    base::UniqueFd incoming;
    try {
        if (dir) {
            incoming = base::open_trusted_dir(dir);
        } else {
            const passwd* pw = ::getpwuid(uid);
            if (!pw) fatal("no account for the user ID " + std::to_string(uid));
            const char* source = std::getenv("QREXEC_REMOTE_DOMAIN");
            if (!source) fatal("Cannot get remote domain name");
            incoming = qfile::open_incoming_dir(pw->pw_dir, source);
        }
    } catch (const std::exception& e) {
        fatal(std::string("incoming directory: ") + e.what());
    }
    qfile::Unpacker unpacker(incoming.get(), options);
    // The answer tells the sender why (its stderr reaches the caller too:
    // it stays quiet, as Qubes' receiver does, not to say it twice).
    auto result = unpacker.run(0, 1);
    return static_cast<int>(result.error_code & 0xff);
}
