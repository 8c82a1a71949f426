#include "admin/qube_command.hpp"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <asio/post.hpp>
#include <asio/posix/stream_descriptor.hpp>
#include <asio/steady_timer.hpp>

#include <cerrno>
#include <array>
#include <cstring>
#include <memory>
#include <vector>

extern char** environ;

namespace aerie::admin {

namespace {

// One run: ends when the process has exited and its stdout reached EOF.
struct Run : std::enable_shared_from_this<Run> {
    Run(asio::io_context& io, int out_fd, int pidfd, pid_t pid, size_t max_output,
        std::function<void(QubeCommandResult)> done)
        : out(io, out_fd), exit_watch(io, pidfd), timer(io), pid(pid), max_output(max_output), done(std::move(done)) {}

    void start(std::chrono::milliseconds timeout) {
        auto self = shared_from_this();
        timer.expires_after(timeout);
        timer.async_wait([self](const asio::error_code& ec) {
            if (ec || self->exited) return;
            self->result.timed_out = true;
            ::kill(self->pid, SIGKILL);
        });
        exit_watch.async_wait(asio::posix::stream_descriptor::wait_read, [self](const asio::error_code&) {
            int status = 0;
            while (::waitpid(self->pid, &status, 0) < 0 && errno == EINTR) {
            }
            self->exited = true;
            self->timer.cancel();
            if (WIFEXITED(status) && !self->result.timed_out) self->result.exit_code = WEXITSTATUS(status);
            self->maybe_finish();
        });
        read();
    }

    void read() {
        auto self = shared_from_this();
        out.async_read_some(asio::buffer(buf), [self](const asio::error_code& ec, size_t n) {
            size_t room = self->max_output - std::min(self->max_output, self->result.output.size());
            self->result.output.append(self->buf.data(), std::min(n, room));
            if (ec) {
                self->eof = true;
                return self->maybe_finish();
            }
            self->read();
        });
    }

    void maybe_finish() {
        if (!exited || !eof || !done) return;
        auto callback = std::move(done);
        done = nullptr;
        callback(std::move(result));
    }

    asio::posix::stream_descriptor out;
    asio::posix::stream_descriptor exit_watch;
    asio::steady_timer timer;
    pid_t pid;
    size_t max_output;
    std::function<void(QubeCommandResult)> done;
    std::array<char, 16384> buf{};
    QubeCommandResult result;
    bool exited = false;
    bool eof = false;
};

}  // namespace

void run_in_qube(asio::io_context& io, QubeCommand command, std::function<void(QubeCommandResult)> done) {
    std::string program = (command.bin_dir / "qrexec-client").string();
    std::vector<std::string> args = {program, "--socket-dir=" + command.qrexec_socket_dir.string(), "-d",
                                     command.qube, command.cmdline};
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    auto fail = [&](const std::string& why) {
        QubeCommandResult r;
        r.error = why;
        asio::post(io, [done = std::move(done), r = std::move(r)]() mutable { done(std::move(r)); });
    };
    int pipe_fds[2];
    if (::pipe2(pipe_fds, O_CLOEXEC) != 0) return fail("pipe: " + std::string(std::strerror(errno)));
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&actions, pipe_fds[1], 1);
    pid_t pid = 0;
    int rc = ::posix_spawn(&pid, program.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(pipe_fds[1]);
    if (rc != 0) {
        ::close(pipe_fds[0]);
        return fail("cannot run " + program + ": " + std::strerror(rc));
    }
    int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
    if (pidfd < 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
        ::close(pipe_fds[0]);
        return fail("pidfd_open: " + std::string(std::strerror(errno)));
    }
    auto run = std::make_shared<Run>(io, pipe_fds[0], pidfd, pid, command.max_output, std::move(done));
    run->start(command.timeout);
}

}  // namespace aerie::admin
