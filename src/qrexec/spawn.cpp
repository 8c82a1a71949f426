#include "qrexec/spawn.hpp"

#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace aerie::qrexec {

std::string current_user_name() {
    passwd* pw = ::getpwuid(::geteuid());
    return pw ? pw->pw_name : std::to_string(::geteuid());
}

namespace {

std::pair<UniqueFd, UniqueFd> make_pipe() {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) < 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    return {UniqueFd(p[0]), UniqueFd(p[1])};
}

// A connected socket pair in make_pipe's shape: first read by one side,
// second written by the other (both ways work).
std::pair<UniqueFd, UniqueFd> make_socket_pair() {
    int p[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) < 0)
        throw std::runtime_error(std::string("socketpair: ") + std::strerror(errno));
    return {UniqueFd(p[0]), UniqueFd(p[1])};
}

}  // namespace

Spawned spawn_process(const SpawnRequest& req) {
    if (req.argv.empty()) throw std::runtime_error("nothing to run");

    // Resolve the user before forking (getpwnam is not async-signal-safe).
    uid_t uid = ::geteuid();
    gid_t gid = ::getegid();
    std::string home = "/";
    std::string shell = "/bin/sh";
    bool switch_user = false;
    if (req.user) {
        passwd* pw = ::getpwnam(req.user->c_str());
        if (!pw) throw std::runtime_error("unknown user: " + *req.user);
        uid = pw->pw_uid;
        gid = pw->pw_gid;
        home = pw->pw_dir ? pw->pw_dir : "/";
        if (pw->pw_shell && *pw->pw_shell) shell = pw->pw_shell;
        switch_user = uid != ::geteuid();
    }
    std::string cwd = req.cwd.empty() ? home : req.cwd;

    std::vector<char*> argv, envp;
    for (const auto& a : req.argv) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    const char* path = req.argv[0].c_str();
    if (!req.argv0.empty()) argv[0] = const_cast<char*>(req.argv0.c_str());
    // The user's own login variables, as the agent's PAM session gives them in Qubes.
    std::vector<std::string> login;
    if (req.user)
        login = {"HOME=" + home, "USER=" + *req.user, "LOGNAME=" + *req.user, "SHELL=" + shell};
    auto overridden = [&](const std::string& e) {
        for (const char* key : {"HOME=", "USER=", "LOGNAME=", "SHELL="})
            if (e.rfind(key, 0) == 0) return true;
        return false;
    };
    for (const auto& e : req.env)
        if (login.empty() || !overridden(e)) envp.push_back(const_cast<char*>(e.c_str()));
    for (auto& e : login) envp.push_back(e.data());
    envp.push_back(nullptr);

    Spawned out;
    std::pair<UniqueFd, UniqueFd> in, so, se;
    UniqueFd devnull;
    if (req.null_stdio) {
        devnull.reset(::open("/dev/null", O_RDWR | O_CLOEXEC));
    } else {
        in = req.stdio_sockets ? make_socket_pair() : make_pipe();
        so = req.stdio_sockets ? make_socket_pair() : make_pipe();
        se = make_pipe();
    }
    std::string user_name = req.user.value_or("");
    // The child's stdin, stdout and stderr.
    int fd0 = req.null_stdio ? devnull.get() : in.first.get();
    int fd1 = req.null_stdio ? devnull.get() : req.inherit_stdout ? 1 : so.second.get();
    int fd2 = req.null_stdio ? devnull.get() : req.inherit_stderr ? 2 : se.second.get();
    // Our ends of its pipes, once it runs.
    auto started = [&](pid_t pid) {
        out.pid = pid;
        if (!req.null_stdio) {
            out.stdin_w = std::move(in.second);
            if (!req.inherit_stdout) out.stdout_r = std::move(so.first);
            if (!req.inherit_stderr) out.stderr_r = std::move(se.first);
        }
        return std::move(out);
    };

    if (!switch_user) {
        // No identity change: posix_spawn (vfork-like) is much cheaper than
        // fork for a process with many mappings, and it is what most calls need.
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        posix_spawn_file_actions_init(&fa);
        posix_spawnattr_init(&attr);
        posix_spawn_file_actions_adddup2(&fa, fd0, 0);
        if (fd1 != 1) posix_spawn_file_actions_adddup2(&fa, fd1, 1);
        if (fd2 != 2) posix_spawn_file_actions_adddup2(&fa, fd2, 2);
        posix_spawn_file_actions_addchdir_np(&fa, cwd.c_str());
        sigset_t none, defaults;
        sigemptyset(&none);
        sigemptyset(&defaults);
        sigaddset(&defaults, SIGPIPE);
        sigaddset(&defaults, SIGCHLD);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &defaults);
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        pid_t pid = -1;
        int rc = ::posix_spawn(&pid, path, &fa, &attr, argv.data(), envp.data());
        posix_spawn_file_actions_destroy(&fa);
        posix_spawnattr_destroy(&attr);
        if (rc != 0) throw std::runtime_error("cannot run " + req.argv[0] + ": " + std::strerror(rc));
        return started(pid);
    }

    pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
    if (pid == 0) {
        // Child: only async-signal-safe calls from here on.
        if (::dup2(fd0, 0) < 0 || (fd1 != 1 && ::dup2(fd1, 1) < 0) || (fd2 != 2 && ::dup2(fd2, 2) < 0))
            ::_exit(125);
        ::setsid();
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        ::signal(SIGPIPE, SIG_DFL);
        ::signal(SIGCHLD, SIG_DFL);
        if (switch_user) {
            if (::initgroups(user_name.c_str(), gid) < 0 || ::setgid(gid) < 0 || ::setuid(uid) < 0)
                ::_exit(125);
        }
        if (::chdir(cwd.c_str()) < 0 && ::chdir("/") < 0) ::_exit(125);
        ::execve(path, argv.data(), envp.data());
        ::_exit(127);
    }
    return started(pid);
}

}  // namespace aerie::qrexec
