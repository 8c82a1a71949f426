// qubes-vmexec: the program behind qubes.VMExec and qubes.VMRootExec. Its one
// argument is the service argument (vmexec_args.hpp); the decoded command is
// executed directly, never through a shell. Exit codes: 1 for a missing or
// bad argument (as Qubes' agent), else the command's; 127 when the program is
// not found, 126 when it cannot be executed (as a shell reports them).
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "services/vmexec_args.hpp"

namespace {

std::string printable(const std::string& text) {
    std::string out;
    for (unsigned char c : text.substr(0, 200)) {
        if (c >= 0x20 && c < 0x7f) {
            out += static_cast<char>(c);
        } else {
            char buf[8];
            std::snprintf(buf, sizeof buf, "\\x%02x", c);
            out += buf;
        }
    }
    return out;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "This service requires exactly one argument\n");
        return 1;
    }
    std::string error;
    auto words = aerie::services::vmexec_command(argv[1], &error);
    if (!words) {
        std::fprintf(stderr, "qubes.VMExec: refused: %s\n", error.c_str());
        return 1;
    }
    std::vector<char*> args;
    for (auto& word : *words) args.push_back(word.data());
    args.push_back(nullptr);
    ::execvp(args[0], args.data());
    int err = errno;
    std::fprintf(stderr, "qubes.VMExec: cannot run %s: %s\n", printable(words->front()).c_str(),
                 std::strerror(err));
    return err == ENOENT ? 127 : 126;
}
