#include "qrexec/caller_io.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "qrexec/protocol.hpp"
#include "qrexec/vchan.hpp"

namespace aerie::qrexec {

namespace {

volatile sig_atomic_t g_child_exited = 0;
volatile sig_atomic_t g_use_stdin_socket = 0;

void on_sigchld(int) {
    g_child_exited = 1;
}

void on_sigusr1(int) {
    g_use_stdin_socket = 1;
    ::signal(SIGUSR1, SIG_IGN);  // one switch per call
}

void set_nonblock(int fd) {
    int flags = ::fcntl(fd, F_GETFL);
    if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

uint32_t get_u32(const char* p) {
    auto b = [p](int i) { return static_cast<uint32_t>(static_cast<unsigned char>(p[i])); };
    return b(0) | (b(1) << 8) | (b(2) << 16) | (b(3) << 24);
}

// The service's HELLO; returns the version both sides use, or 0.
uint32_t handshake(int channel) {
    std::string hello = encode_hello(kProtocolVersion);
    if (!write_all(channel, hello.data(), hello.size())) return 0;
    char raw[kHeaderSize + 4];
    if (!read_all(channel, raw, sizeof raw)) return 0;
    if (get_u32(raw) != static_cast<uint32_t>(MsgType::Hello) || get_u32(raw + 4) != 4) {
        std::fprintf(stderr, "qrexec-client-vm: expected HELLO, got %s (%u bytes)\n",
                     msg_type_name(get_u32(raw)), get_u32(raw + 4));
        return 0;
    }
    uint32_t version = std::min(get_u32(raw + 8), kProtocolVersion);
    return version < kMinProtocolVersion ? 0 : version;
}

constexpr size_t kMaxQueued = 1 << 20;  // stop reading local input above this

class CallerLoop {
public:
    CallerLoop(int channel, const CallerStreams& s, uint32_t version)
        : chan_(channel),
          to_local_(s.to_local),
          from_local_(s.from_local),
          saved_to_local_(s.to_local),
          single_socket_(s.to_local >= 0 && s.to_local == s.from_local),
          local_pid_(s.local_pid),
          filter_stdout_(s.filter_stdout),
          filter_stderr_(s.filter_stderr),
          chunk_(version < 3 ? kMaxDataChunkV2 : kMaxDataChunk) {
        for (size_t at = 0; at < s.prefix.size(); at += chunk_)
            queue_stdin(std::string_view(s.prefix).substr(at, chunk_));
    }

    int run();

private:
    void queue_stdin(std::string_view bytes) { out_ += encode_data(MsgType::DataStdin, bytes); }
    void close_to_local();
    void close_from_local();
    bool read_channel();     // false: the channel ended
    bool handle_messages();  // false: a protocol violation
    void read_local();
    void write_local();
    void write_channel();
    void reap_local();

    int chan_;
    int to_local_, from_local_, saved_to_local_;
    bool single_socket_;
    pid_t local_pid_;
    bool filter_stdout_, filter_stderr_;
    size_t chunk_;
    std::string in_, out_, to_local_queue_;
    bool chan_eof_ = false;
    bool chan_write_broken_ = false;
    int remote_status_ = -1;
    int local_status_ = -1;
};

// Ending the direction toward the local side: a socket (or a descriptor we
// opened, above 2) is shut down for writing, so the same socket can still be
// read; our own stdout is closed.
void CallerLoop::close_to_local() {
    if (to_local_ < 0) return;
    to_local_queue_.clear();
    if (single_socket_ || to_local_ > 2) {
        if (::shutdown(to_local_, SHUT_WR) < 0 && errno == ENOTSOCK && !single_socket_) {
            ::close(to_local_);
            saved_to_local_ = -1;
        }
    } else {
        ::close(to_local_);
        saved_to_local_ = -1;
    }
    to_local_ = -1;
}

void CallerLoop::close_from_local() {
    if (from_local_ < 0) return;
    if (single_socket_ || from_local_ > 2) {
        if (::shutdown(from_local_, SHUT_RD) < 0 && errno == ENOTSOCK && !single_socket_)
            ::close(from_local_);
    } else {
        ::close(from_local_);
    }
    from_local_ = -1;
}

bool CallerLoop::read_channel() {
    char buf[65536];
    for (;;) {
        ssize_t n = ::read(chan_, buf, sizeof buf);
        if (n > 0) {
            in_.append(buf, static_cast<size_t>(n));
            if (static_cast<size_t>(n) < sizeof buf || in_.size() > 4 * sizeof buf) return true;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
        return false;
    }
}

bool CallerLoop::handle_messages() {
    size_t at = 0;
    // Nothing more is taken while local output is pending (back-pressure; an
    // EOF or the exit code must not overtake the data before it).
    while (to_local_queue_.empty() && in_.size() - at >= kHeaderSize) {
        Header h;
        try {
            h = decode_header(std::string_view(in_).substr(at, kHeaderSize), kMaxDataChunk);
        } catch (const ProtocolError& e) {
            std::fprintf(stderr, "qrexec-client-vm: %s\n", e.what());
            return false;
        }
        if (in_.size() - at - kHeaderSize < h.len) break;
        char* payload = in_.data() + at + kHeaderSize;
        at += kHeaderSize + h.len;
        switch (static_cast<MsgType>(h.type)) {
            case MsgType::DataStdout:
                if (to_local_ < 0) break;
                if (h.len == 0) {
                    close_to_local();
                    break;
                }
                if (filter_stdout_) replace_unprintable(payload, h.len);
                to_local_queue_.assign(payload, h.len);
                break;
            case MsgType::DataStderr:
                if (h.len == 0) break;
                if (filter_stderr_) replace_unprintable(payload, h.len);
                write_all(2, payload, h.len);
                break;
            case MsgType::DataExitCode:
                if (h.len != 4) {
                    std::fprintf(stderr, "qrexec-client-vm: malformed exit code\n");
                    return false;
                }
                remote_status_ = static_cast<int>(get_u32(payload));
                // The service is gone: nothing more is read locally.
                if (from_local_ >= 0) {
                    queue_stdin({});
                    close_from_local();
                }
                break;
            default:
                std::fprintf(stderr, "qrexec-client-vm: unexpected %s on the data channel\n",
                             msg_type_name(h.type));
                return false;
        }
    }
    in_.erase(0, at);
    return true;
}

void CallerLoop::read_local() {
    std::string buf(chunk_, '\0');
    ssize_t n;
    do {
        n = ::read(from_local_, buf.data(), buf.size());
    } while (n < 0 && errno == EINTR);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n > 0) {
        queue_stdin(std::string_view(buf.data(), static_cast<size_t>(n)));
        return;
    }
    queue_stdin({});  // EOF (or an error): the service's stdin ends
    close_from_local();
}

void CallerLoop::write_local() {
    ssize_t n;
    do {
        n = ::write(to_local_, to_local_queue_.data(), to_local_queue_.size());
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        to_local_queue_.erase(0, static_cast<size_t>(n));
    } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        close_to_local();  // the reader went away
    }
}

void CallerLoop::write_channel() {
    ssize_t n;
    do {
        n = ::send(chan_, out_.data(), out_.size(), MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n > 0) {
        out_.erase(0, static_cast<size_t>(n));
    } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
        // The service no longer reads; still take what it sent (its exit code).
        chan_write_broken_ = true;
        out_.clear();
        close_from_local();
    }
}

void CallerLoop::reap_local() {
    g_child_exited = 0;
    if (local_pid_ <= 0 || local_status_ >= 0) return;
    int status = 0;
    if (::waitpid(local_pid_, &status, WNOHANG) != local_pid_) return;
    local_status_ = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
    close_to_local();  // the program's stdin
}

int CallerLoop::run() {
    set_nonblock(chan_);
    if (from_local_ >= 0) set_nonblock(from_local_);
    if (to_local_ >= 0 && !single_socket_) set_nonblock(to_local_);

    sigset_t block, during_poll;
    sigemptyset(&block);
    sigaddset(&block, SIGCHLD);
    sigaddset(&block, SIGUSR1);
    ::sigprocmask(SIG_BLOCK, &block, &during_poll);
    sigdelset(&during_poll, SIGCHLD);
    sigdelset(&during_poll, SIGUSR1);

    for (;;) {
        if (g_child_exited) reap_local();
        if (to_local_ < 0 && from_local_ < 0 && (!local_pid_ || local_status_ >= 0) && remote_status_ >= 0)
            break;
        if (chan_eof_ && to_local_queue_.empty()) {
            if (!handle_messages()) break;
            if (to_local_queue_.empty()) break;  // nothing more will come
        }
        // The program asked to use its stdin socket both ways.
        if (g_use_stdin_socket && !single_socket_ && local_pid_ > 0) {
            g_use_stdin_socket = 0;
            close_from_local();
            from_local_ = saved_to_local_;
            single_socket_ = true;
        }

        enum { kToLocal, kFromLocal, kChannel, kCount };
        pollfd fds[kCount];
        fds[kToLocal] = {to_local_, static_cast<short>(to_local_queue_.empty() ? 0 : POLLOUT), 0};
        bool take_input = from_local_ >= 0 && out_.size() < kMaxQueued && !chan_write_broken_;
        fds[kFromLocal] = {take_input ? from_local_ : -1, POLLIN, 0};
        short chan_events = 0;
        if (!chan_eof_ && to_local_queue_.empty()) chan_events |= POLLIN;
        if (!out_.empty()) chan_events |= POLLOUT;
        fds[kChannel] = {chan_events ? chan_ : -1, chan_events, 0};

        int r = ::ppoll(fds, kCount, nullptr, &during_poll);
        if (r < 0) {
            if (errno == EINTR) continue;
            std::perror("qrexec-client-vm: poll");
            break;
        }
        if (fds[kChannel].revents & POLLOUT) write_channel();
        if (fds[kChannel].revents & (POLLIN | POLLHUP | POLLERR)) {
            if (!read_channel()) chan_eof_ = true;
            if (!handle_messages()) break;
        }
        if (to_local_ >= 0 && (fds[kToLocal].revents & (POLLHUP | POLLERR))) close_to_local();
        if (to_local_ >= 0 && (fds[kToLocal].revents & POLLOUT)) {
            write_local();
            if (to_local_queue_.empty() && !handle_messages()) break;
        }
        if (from_local_ >= 0 && (fds[kFromLocal].revents & (POLLIN | POLLHUP | POLLERR))) read_local();
    }
    // What is still queued for the service goes out (best effort, blocking).
    if (!out_.empty() && !chan_write_broken_) {
        int flags = ::fcntl(chan_, F_GETFL);
        ::fcntl(chan_, F_SETFL, flags & ~O_NONBLOCK);
        write_all(chan_, out_.data(), out_.size());
    }
    // The local side sees the call end.
    close_to_local();
    close_from_local();
    ::sigprocmask(SIG_UNBLOCK, &block, nullptr);
    if (local_pid_ > 0 && local_status_ < 0) {
        int status = 0;
        pid_t r;
        do {
            r = ::waitpid(local_pid_, &status, 0);
        } while (r < 0 && errno == EINTR);
        if (r == local_pid_)
            local_status_ = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
    }
    if (remote_status_ != 0) return remote_status_;
    return local_pid_ > 0 ? local_status_ : 0;
}

}  // namespace

void prepare_caller_signals() {
    struct sigaction sa {};
    sigemptyset(&sa.sa_mask);
    sa.sa_handler = on_sigchld;
    ::sigaction(SIGCHLD, &sa, nullptr);
    sa.sa_handler = on_sigusr1;
    ::sigaction(SIGUSR1, &sa, nullptr);
}

int run_caller(UniqueFd channel, const CallerStreams& streams) {
    uint32_t version = handshake(channel.get());
    if (version == 0) {
        std::fprintf(stderr, "qrexec-client-vm: data channel handshake failed\n");
        return 1;
    }
    CallerLoop loop(channel.get(), streams, version);
    return loop.run();
}

void replace_unprintable(char* data, size_t len) {
    for (size_t i = 0; i < len; ++i) {
        auto c = static_cast<unsigned char>(data[i]);
        bool printable = c >= 0x20 && c <= 0x7e;
        if (!printable && c != '\t' && c != '\n' && c != '\r' && c != '\b' && c != '\a') data[i] = '_';
    }
}

}  // namespace aerie::qrexec
