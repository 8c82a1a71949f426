// aerie-open-url: qubes.OpenURL in a qube. Reads the caller's one line, and
// hands an http://, https:// or ftp:// URL to the qube's open handler
// (open_handler.hpp), exiting with its status. Anything else is refused
// with "Invalid URL..." on stderr and exit code 1, as Qubes' service does.
#include <unistd.h>

#include <cstdio>
#include <string>

#include "services/io_util.hpp"
#include "services/open_handler.hpp"
#include "services/open_request.hpp"

using namespace aerie::services;

int main() {
    // Byte by byte up to the newline: what follows it stays unread.
    std::string line;
    char c;
    while (line.size() <= kMaxUrlLine && read_full(0, &c, 1) == 1 && c != '\n') line += c;
    std::string error;
    auto url = parse_open_url_line(line, &error);
    if (!url) {
        std::fprintf(stderr, "%s\n", error.c_str());
        return 1;
    }
    auto handler = find_open_handler();
    if (!handler) {
        std::fprintf(stderr,
                     "qubes.OpenURL: no handler to open URLs with (make ~/.config/aerie/open-handler "
                     "executable, or install xdg-open)\n");
        return 1;
    }
    int status = run_open_handler(*handler, *url, &error);
    if (status < 0) {
        std::fprintf(stderr, "qubes.OpenURL: %s\n", error.c_str());
        return 1;
    }
    return status;
}
