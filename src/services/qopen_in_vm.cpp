// qopen-in-vm [--view-only] [--] FILE: the caller's side of qubes.OpenInVM,
// run by qvm-open-in-vm as qrexec-client-vm's local program (stdout to the
// service, stdin from it). Sends the name block and the file (Qubes' wire
// format, open_request.hpp), then takes back the edited file: when anything
// comes, it replaces FILE (written beside it, then renamed over it; where
// FILE's folder is not writable, kept in /tmp/file_edited_in_dvm.XXXXXX and
// said on stderr). With --view-only whatever comes is discarded.
#include <fcntl.h>
#include <getopt.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "services/io_util.hpp"
#include "services/open_request.hpp"

using namespace aerie::services;

namespace {

int fail(const std::string& what) {
    std::fprintf(stderr, "qopen-in-vm: %s: %s\n", what.c_str(), std::strerror(errno));
    return 1;
}

// The edited file from stdin into `tmp` (made by mkstemp); nonzero size?
bool receive_into(int tmp, bool* nonempty) {
    struct stat st {};
    bool ok = copy_to_eof(0, tmp) && ::fstat(tmp, &st) == 0;
    *nonempty = st.st_size > 0;
    return ::close(tmp) == 0 && ok;
}

}  // namespace

int main(int argc, char** argv) {
    int view_only = 0;
    const option options[] = {{"view-only", no_argument, &view_only, 1}, {nullptr, 0, nullptr, 0}};
    for (int opt; (opt = ::getopt_long(argc, argv, "", options, nullptr)) != -1;)
        if (opt == '?') return 2;
    if (optind >= argc) {
        std::fprintf(stderr, "qopen-in-vm: no file given\n");
        return 2;
    }
    std::signal(SIGPIPE, SIG_IGN);
    std::string file = argv[optind];
    int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fail("cannot open " + file);
    std::string block = encode_open_name_block(file, view_only);
    if (!aerie::base::write_all(1, block.data(), block.size()) || !copy_to_eof(fd, 1)) return fail("sending the file");
    ::close(fd);
    ::close(1);

    if (view_only) {
        int null = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
        copy_to_eof(0, null);
        return 0;
    }
    std::string tmp_path = file + ".XXXXXX";
    int tmp = ::mkstemp(tmp_path.data());
    bool in_place = tmp >= 0;
    if (!in_place) {
        tmp_path = "/tmp/file_edited_in_dvm.XXXXXX";
        tmp = ::mkstemp(tmp_path.data());
        if (tmp < 0) return fail("cannot make a file for the edited copy");
    }
    bool nonempty = false;
    if (!receive_into(tmp, &nonempty)) return fail("receiving the edited file");
    if (!nonempty) {
        ::unlink(tmp_path.c_str());
        return 0;
    }
    if (!in_place) {
        std::fprintf(
            stderr,
            "qopen-in-vm: %s was edited and the new content received, but its folder is not writable; "
            "the edited file is %s\n",
            file.c_str(), tmp_path.c_str());
        return 0;
    }
    if (::rename(tmp_path.c_str(), file.c_str()) != 0) return fail("replacing " + file);
    return 0;
}
