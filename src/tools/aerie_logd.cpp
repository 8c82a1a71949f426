// aerie-logd: copies the log pipes aeried hands it into their capped files
// (base/log_service.hpp). Started by aeried: aerie-logd LOG_DIR, with its end
// of the control socket as descriptor 3.
#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>

#include "base/log_service.hpp"

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s LOG_DIR (control socket on descriptor 3)\n", argv[0]);
        return 2;
    }
    ::signal(SIGPIPE, SIG_IGN);
    // Not stopped by a terminal's or session's signals meant for aeried.
    ::signal(SIGHUP, SIG_IGN);
    ::signal(SIGINT, SIG_IGN);
    int dir = ::open(argv[1], O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0) {
        std::fprintf(stderr, "aerie-logd: opening %s: %s\n", argv[1], std::strerror(errno));
        return 1;
    }
    return aerie::base::run_log_service(3, dir);
}
