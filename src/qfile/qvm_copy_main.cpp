// qvm-copy, qvm-move, qvm-copy-to-vm, qvm-move-to-vm (one program, told apart
// by its name; Qubes' options, messages and exit codes):
//   qvm-copy [--without-progress] [--ignore-symlinks] FILE...
//   qvm-copy-to-vm [...] QUBE FILE...
// Checks the files (tree_check.hpp), then calls qubes.Filecopy (or
// qubes.Filecopy+allow-all-names when a name is not safe for display) in the
// target (@default: the policy picks it, or asks) through qrexec-client-vm
// with qfile-agent on its end. The move variants remove the files once the
// receiver confirmed them.
// In dom0 (where no qrexec agent socket exists), as Qubes' dom0 tools:
// qvm-copy-to-vm and qvm-move-to-vm send through "qvm-run --no-gui
// --pass-io --service -- QUBE qubes.Filecopy" (the files arrive in
// ~/QubesIncoming/dom0), qvm-copy and qvm-move are refused.
#include <fcntl.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "qfile/tree_check.hpp"

namespace {

struct Mode {
    bool move;
    bool to_vm;
};

[[noreturn]] void usage(const std::string& argv0, const Mode& mode, int status) {
    std::FILE* out = stdout;
    if (mode.to_vm)
        std::fprintf(
            out, "usage: %s [--without-progress] [--ignore-symlinks] destination_qube_name FILE [FILE ...]\n",
            argv0.c_str());
    else
        std::fprintf(out, "usage: %s [--without-progress] [--ignore-symlinks] FILE [FILE ...]\n",
                     argv0.c_str());
    std::fprintf(out,
                 "Options:\n"
                 "    --no-ignore-symlinks   Do not ignore symbolic links (default).\n"
                 "    --ignore-symlinks      Ignore symbolic links.\n"
                 "    --with-progress        Show a progress indicator (default).\n"
                 "    --without-progress     Do not show a progress indicator.\n"
                 "    -h, --help             Show this message and exit.\n"
                 "    --                     Stop searching for options.\n"
                 "\n"
                 "    If there is a conflict, later options override earlier options.\n"
                 "\n"
                 "%s FILE to ~/QubesIncoming/[THIS QUBE'S NAME]/ in the destination qube.\n\n"
                 "You will be prompted to select the destination qube. If FILE is a directory, it will be "
                 "copied recursively.\n",
                 mode.move ? "Move" : "Copy");
    if (mode.to_vm)
        std::fprintf(out,
                     "In order to avoid typing target qube name twice, use qvm-copy/qvm-move instead of "
                     "qvm-copy-to-vm/qvm-move-to-vm.\n");
    std::exit(status);
}

// The folder this program lives in (/run/aerie/bin in a qube), where
// qrexec-client-vm and qfile-agent are too.
std::string own_dir() {
    char buf[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return "/run/aerie/bin";
    return std::filesystem::path(std::string(buf, static_cast<std::size_t>(n))).parent_path().string();
}

bool in_dom0() {
    struct stat st {};
    return ::stat("/var/run/qubes/qrexec-agent", &st) != 0 || !S_ISSOCK(st.st_mode);
}

int exit_code(int status) {
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

pid_t spawn(std::vector<std::string> args, int in_fd, int out_fd) {
    std::vector<char*> cargs;
    for (auto& a : args) cargs.push_back(a.data());
    cargs.push_back(nullptr);
    pid_t pid = ::fork();
    if (pid == 0) {
        if ((in_fd >= 0 && ::dup2(in_fd, 0) < 0) || (out_fd >= 0 && ::dup2(out_fd, 1) < 0)) _exit(127);
        ::execv(cargs[0], cargs.data());
        std::perror(cargs[0]);
        _exit(127);
    }
    return pid;
}

int wait_for(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return 1;
    return exit_code(status);
}

// dom0: qfile-agent's stdout into qvm-run's stdin and back, as Qubes'
// dom0 script pipes them. The exit code is qvm-run's if it failed, else
// qfile-agent's.
int send_from_dom0(const std::string& dir, const std::string& target, const std::string& service,
                   const std::vector<std::string>& files, bool ignore_symlinks) {
    int to_run[2], to_agent[2];
    if (::pipe2(to_run, O_CLOEXEC) != 0 || ::pipe2(to_agent, O_CLOEXEC) != 0) {
        std::perror("pipe");
        return 1;
    }
    std::vector<std::string> agent_args = {dir + "/qfile-agent"};
    if (ignore_symlinks) agent_args.push_back("--ignore-symlinks");
    agent_args.push_back("--");
    agent_args.insert(agent_args.end(), files.begin(), files.end());
    pid_t agent = spawn(agent_args, to_agent[0], to_run[1]);
    pid_t run = spawn({dir + "/qvm-run", "--no-gui", "--pass-io", "--service", "--", target, service},
                      to_run[0], to_agent[1]);
    for (int fd : {to_run[0], to_run[1], to_agent[0], to_agent[1]}) ::close(fd);
    if (agent < 0 || run < 0) return 1;
    int agent_rc = wait_for(agent);
    int run_rc = wait_for(run);
    return run_rc != 0 ? run_rc : agent_rc;
}

}  // namespace

int main(int argc, char** argv) {
    std::string argv0 = argv[0];
    std::string name = std::filesystem::path(argv0).filename().string();
    Mode mode{};
    if (name == "qvm-copy")
        mode = {false, false};
    else if (name == "qvm-move")
        mode = {true, false};
    else if (name == "qvm-copy-to-vm")
        mode = {false, true};
    else if (name == "qvm-move-to-vm")
        mode = {true, true};
    else {
        std::printf("Invoked with unrecognized name %s, cannot determine operation to perform\n",
                    argv0.c_str());
        return 1;
    }

    const bool dom0 = in_dom0();
    if (dom0 && !mode.to_vm) {
        std::printf("%s is not supported in dom0; use %s-to-vm instead.\n", name.c_str(), name.c_str());
        return 1;
    }
    bool progress = !dom0, ignore_symlinks = false;
    int i = 1;
    for (; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--without-progress")
            progress = false;
        else if (a == "--with-progress")
            progress = true;
        else if (a == "--ignore-symlinks")
            ignore_symlinks = true;
        else if (a == "--no-ignore-symlinks")
            ignore_symlinks = false;
        else if (a == "-h" || a == "--help")
            usage(argv0, mode, 0);
        else if (a == "--") {
            ++i;
            break;
        } else if (!a.empty() && a[0] == '-')
            usage(argv0, mode, 1);
        else
            break;
    }
    std::vector<std::string> rest(argv + i, argv + argc);
    if (rest.size() < (mode.to_vm ? 2u : 1u)) usage(argv0, mode, 1);

    std::string target = "@default";
    if (mode.to_vm) {
        if (!dom0)
            std::fprintf(stderr,
                         "In order to avoid typing target qube name twice, use qvm-copy/qvm-move instead of "
                         "qvm-copy-to-vm/qvm-move-to-vm.\n");
        target = rest.front();
        rest.erase(rest.begin());
    }
    // One trailing "/" of each source goes, as the shell's ${@%/} does.
    for (auto& s : rest)
        if (s.size() > 1 && s.back() == '/') s.pop_back();

    aerie::qfile::TreeCheck check;
    try {
        check = aerie::qfile::check_trees(rest, ignore_symlinks);
    } catch (const aerie::qfile::TreeCheckError& e) {
        std::fprintf(stderr, "%s: %s\n", name.c_str(), e.what());
        return 1;
    }
    std::string service = check.all_names_safe ? "qubes.Filecopy" : "qubes.Filecopy+allow-all-names";
    if (progress) {
        ::setenv("PROGRESS_TYPE", "console", 1);
        ::setenv("FILECOPY_TOTAL_BYTES", std::to_string(check.total_bytes).c_str(), 1);
    } else {
        ::setenv("PROGRESS_TYPE", "none", 1);
        ::unsetenv("FILECOPY_TOTAL_BYTES");
    }

    std::string dir = own_dir();
    int code;
    if (dom0) {
        ::setenv("PROGRESS_TYPE", "none", 1);
        code = send_from_dom0(dir, target, service, rest, ignore_symlinks);
    } else {
        std::vector<std::string> args = {
            dir + "/qrexec-client-vm", "--filter-escape-chars-stderr", "--", target, service,
            dir + "/qfile-agent"};
        if (ignore_symlinks) args.push_back("--ignore-symlinks");
        args.push_back("--");
        args.insert(args.end(), rest.begin(), rest.end());
        pid_t pid = spawn(args, -1, -1);
        if (pid < 0) {
            std::perror("fork");
            return 1;
        }
        code = wait_for(pid);
    }
    if (code != 0) return code;
    if (mode.move) {
        for (const auto& s : rest) {
            std::error_code ec;
            std::filesystem::remove_all(s, ec);
            if (ec) {
                std::fprintf(stderr, "%s: removing %s: %s\n", name.c_str(), s.c_str(), ec.message().c_str());
                return 1;
            }
        }
    }
    return 0;
}
