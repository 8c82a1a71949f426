// aerie-qube-init: PID 1 inside a qube.
//
//   aerie-qube-init [--grace-ms N] [--] COMMAND [ARG...] [--also COMMAND [ARG...]]...
//
// Starts COMMAND (normally Aerie's qrexec agent) and every --also command,
// each in its own session, reaps every process that ends up its child, and
// waits. It exits when
//   - COMMAND ends: the others get SIGTERM, then SIGKILL after the grace
//     period (default 2000 ms); the exit status is COMMAND's (its exit code, or
//     128 + the signal that killed it), so a dying agent ends the qube with a
//     non-zero status;
//   - it gets SIGTERM, SIGINT, SIGHUP or SIGPWR (the backend's shutdown, or
//     `kill 1` inside): the same, with status 0.
// As PID 1 of a PID namespace it signals everything in the namespace; run
// elsewhere (tests), it becomes a child subreaper and signals only its own
// children's sessions. A --also command that ends is reaped and logged.
//
// Static and small: it is the one process every qube carries.
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <vector>

namespace {

bool g_pid1 = false;
std::vector<pid_t> g_children;
sigset_t g_original_mask;

__attribute__((format(printf, 1, 2))) void log(const char* fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    std::fprintf(stderr, "aerie-qube-init: ");
    std::vfprintf(stderr, fmt, ap);
    std::fputc('\n', stderr);
    va_end(ap);
}

pid_t spawn(char** argv) {
    pid_t pid = ::fork();
    if (pid < 0) {
        log("fork for %s: %s", argv[0], std::strerror(errno));
        return -1;
    }
    if (pid == 0) {
        ::sigprocmask(SIG_SETMASK, &g_original_mask, nullptr);
        ::setsid();
        ::execvp(argv[0], argv);
        std::fprintf(stderr, "aerie-qube-init: cannot run %s: %s\n", argv[0], std::strerror(errno));
        ::_exit(127);
    }
    g_children.push_back(pid);
    return pid;
}

void signal_all(int sig) {
    if (g_pid1) {
        ::kill(-1, sig);  // everything in the PID namespace but us
        return;
    }
    for (pid_t p : g_children) {
        ::kill(-p, sig);
        ::kill(p, sig);
    }
}

// Reaps what has ended; returns false once no child is left.
bool reap_some(pid_t main_pid, bool* main_done, int* main_code) {
    for (;;) {
        int st = 0;
        pid_t p = ::waitpid(-1, &st, WNOHANG);
        if (p == 0) return true;
        if (p < 0) return errno != ECHILD;
        int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        if (p == main_pid && !*main_done) {
            *main_done = true;
            *main_code = code;
        } else {
            for (pid_t c : g_children)
                if (c == p) log("command (pid %d) ended with status %d", static_cast<int>(p), code);
        }
    }
}

[[noreturn]] void stop_everything(int code, long grace_ms, const sigset_t& set, pid_t main_pid) {
    bool main_done = true;
    int ignored = 0;
    signal_all(SIGTERM);
    timespec deadline;
    ::clock_gettime(CLOCK_MONOTONIC, &deadline);
    deadline.tv_sec += grace_ms / 1000;
    deadline.tv_nsec += (grace_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec += 1;
        deadline.tv_nsec -= 1000000000L;
    }
    for (;;) {
        if (!reap_some(main_pid, &main_done, &ignored)) std::exit(code);
        timespec now;
        ::clock_gettime(CLOCK_MONOTONIC, &now);
        long left_ms = (deadline.tv_sec - now.tv_sec) * 1000 + (deadline.tv_nsec - now.tv_nsec) / 1000000L;
        if (left_ms <= 0) break;
        timespec wait{left_ms / 1000, (left_ms % 1000) * 1000000L};
        siginfo_t info;
        ::sigtimedwait(&set, &info, &wait);  // SIGCHLD, or more stop requests
    }
    signal_all(SIGKILL);
    for (;;) {
        int st;
        pid_t p = ::waitpid(-1, &st, 0);
        if (p < 0 && errno == ECHILD) break;
        if (p < 0 && errno != EINTR) break;
    }
    std::exit(code);
}

// The default user's home on the private volume (/home comes from it), made
// on first start as Qubes does; from /etc/passwd, read by hand (a static
// program has no name service).
void make_user_home() {
    FILE* passwd = std::fopen("/etc/passwd", "re");
    if (!passwd) return;
    char line[1024];
    while (std::fgets(line, sizeof line, passwd)) {
        if (std::strncmp(line, "user:", 5) != 0) continue;
        char* fields[7] = {};
        int n = 0;
        for (char* p = line; n < 7 && p; ++n) {
            fields[n] = p;
            p = std::strchr(p, ':');
            if (p) *p++ = '\0';
        }
        if (n < 6) break;
        uid_t uid = static_cast<uid_t>(std::strtoul(fields[2], nullptr, 10));
        gid_t gid = static_cast<gid_t>(std::strtoul(fields[3], nullptr, 10));
        const char* home = fields[5];
        if (std::strncmp(home, "/home/", 6) == 0 && ::mkdir(home, 0700) == 0) (void)!::chown(home, uid, gid);
        break;
    }
    std::fclose(passwd);
}

int usage() {
    std::fprintf(
        stderr, "usage: aerie-qube-init [--grace-ms N] [--] COMMAND [ARG...] [--also COMMAND [ARG...]]...\n");
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    long grace_ms = 2000;
    int i = 1;
    for (; i < argc; ++i) {
        if (std::strcmp(argv[i], "--grace-ms") == 0 && i + 1 < argc) {
            grace_ms = std::strtol(argv[++i], nullptr, 10);
        } else if (std::strcmp(argv[i], "--") == 0) {
            ++i;
            break;
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            return usage();
        } else {
            break;
        }
    }
    if (i >= argc) return usage();
    // Split the rest at each --also: the first command is the main one.
    std::vector<std::vector<char*>> commands(1);
    for (; i < argc; ++i) {
        if (std::strcmp(argv[i], "--also") == 0) {
            commands.emplace_back();
            continue;
        }
        commands.back().push_back(argv[i]);
    }
    for (auto& c : commands) {
        if (c.empty()) return usage();
        c.push_back(nullptr);
    }

    g_pid1 = ::getpid() == 1;
    if (g_pid1) make_user_home();
    if (!g_pid1) ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    sigset_t set;
    sigemptyset(&set);
    for (int s : {SIGCHLD, SIGTERM, SIGINT, SIGHUP, SIGPWR}) sigaddset(&set, s);
    ::sigprocmask(SIG_BLOCK, &set, &g_original_mask);
    // Started with SIGCHLD ignored, children would not become zombies.
    ::signal(SIGCHLD, SIG_DFL);

    pid_t main_pid = spawn(commands[0].data());
    if (main_pid < 0) return 127;
    for (size_t c = 1; c < commands.size(); ++c) spawn(commands[c].data());

    bool main_done = false;
    int main_code = 0;
    for (;;) {
        siginfo_t info;
        int sig = ::sigwaitinfo(&set, &info);
        if (sig < 0) continue;
        if (sig == SIGCHLD) {
            reap_some(main_pid, &main_done, &main_code);
            if (main_done) {
                if (main_code != 0) log("%s ended with status %d; stopping", commands[0][0], main_code);
                stop_everything(main_code, grace_ms, set, main_pid);
            }
            continue;
        }
        stop_everything(0, grace_ms, set, main_pid);
    }
}
