#include "base/detached_spawn.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>
#include <stdexcept>

namespace aerie::base {

DetachedChild spawn_detached(const std::vector<std::string>& argv, const std::vector<std::string>& env, int output,
                             const std::vector<int>& pass) {
    if (argv.empty()) throw std::runtime_error("nothing to start");
    std::vector<char*> args, envp;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);

    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    if (output >= 0) {
        posix_spawn_file_actions_adddup2(&actions, output, 1);
        posix_spawn_file_actions_adddup2(&actions, output, 2);
    }
    // Passed descriptors first moved above every target, so that placing one
    // at 3 + i never overwrites another still to be placed.
    const int high = 3 + static_cast<int>(pass.size()) + 64;
    for (size_t i = 0; i < pass.size(); ++i) posix_spawn_file_actions_adddup2(&actions, pass[i], high + static_cast<int>(i));
    for (size_t i = 0; i < pass.size(); ++i)
        posix_spawn_file_actions_adddup2(&actions, high + static_cast<int>(i), 3 + static_cast<int>(i));
    posix_spawn_file_actions_addclosefrom_np(&actions, 3 + static_cast<int>(pass.size()));

    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

    pid_t pid = -1;
    int rc = ::posix_spawn(&pid, argv[0].c_str(), &actions, &attr, args.data(), envp.data());
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
    if (rc != 0) throw std::runtime_error("cannot start " + argv[0] + ": " + std::strerror(rc));
    // It cannot have been reaped yet (we are its parent): the pid is its own.
    DetachedChild child;
    child.pid = pid;
    child.pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    return child;
}

}  // namespace aerie::base
