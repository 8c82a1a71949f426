#include "qrexec/data_pump.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

#include "qrexec/caller_io.hpp"
#include "qrexec/vchan.hpp"

namespace aerie::qrexec {

namespace {

constexpr size_t kMaxQueuedOutput = 1 << 20;   // pause the channel above this
constexpr size_t kMaxChannelBacklog = 4 << 20;  // stop reading local input above this

// Regular files and /dev/null cannot be waited on with epoll; they are read
// and written directly (they never block for long).
bool pollable(int fd) {
    int ep = ::epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) return false;
    epoll_event ev{};
    ev.events = EPOLLIN;
    bool ok = ::epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0;
    ::close(ep);
    return ok;
}

std::unique_ptr<asio::posix::stream_descriptor> wrap(asio::io_context& io, UniqueFd& fd) {
    if (!fd || !pollable(fd.get())) return nullptr;
    int flags = ::fcntl(fd.get(), F_GETFL);
    ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK);
    return std::make_unique<asio::posix::stream_descriptor>(io, fd.release());
}

}  // namespace

std::shared_ptr<DataPump> DataPump::create(asio::io_context& io, UniqueFd channel, Role role,
                                           Local local) {
    return std::shared_ptr<DataPump>(new DataPump(io, std::move(channel), role, std::move(local)));
}

DataPump::DataPump(asio::io_context& io, UniqueFd channel, Role role, Local local)
    : io_(io),
      chan_(MessageConn::create(io, std::move(channel), {})),
      role_(role),
      local_(std::move(local)) {
    if (local_.stdin_is_socket && local_.output)
        saved_stdin_.reset(::fcntl(local_.output.get(), F_DUPFD_CLOEXEC, 3));
    input_.sd = wrap(io, local_.input);
    errors_.sd = wrap(io, local_.errors);
    output_.sd = wrap(io, local_.output);
    if (role_ == Role::Caller) {
        // The caller's stderr destination is local_.errors; it is written, not read.
        errout_.sd = std::move(errors_.sd);
        errors_.eof = true;
    }
    input_.eof = !input_.sd && !local_.input;
    if (role_ == Role::Service && !errors_.sd && !local_.errors) errors_.eof = true;
}

void DataPump::start(Done done) {
    done_ = std::move(done);
    auto self = shared_from_this();
    chan_->start([self](const Header& h, std::string_view payload, UniqueFd) { self->on_message(h, payload); },
                 [self](const std::string&) {
                     if (self->finished_) return;
                     // A caller that has the exit code still writes out what it queued.
                     if (self->role_ == Role::Caller && self->exit_code_)
                         self->maybe_finish();
                     else
                         self->finish(self->exit_code_.value_or(self->role_ == Role::Caller ? 255 : 0));
                 });
    chan_->on_drained([self] {
        for (bool errors : {false, true}) {
            Reader& r = errors ? self->errors_ : self->input_;
            if (!r.waiting_drain) continue;
            r.waiting_drain = false;
            self->read_input(errors);
        }
    });
    chan_->send(encode_hello(kProtocolVersion));
    // A service side without a stderr of its own (a socket service, a
    // command whose stderr stays local) ends that stream at once, as Qubes'.
    if (role_ == Role::Service && (local_.stderr_kept_local || local_.output_is_socket))
        send_eof(MsgType::DataStderr);
    MsgType input_stream = role_ == Role::Caller ? MsgType::DataStdin : MsgType::DataStdout;
    // Sent before the peer's HELLO tells its version: in chunks any version takes.
    for (size_t at = 0; at < local_.prefix.size(); at += kMaxDataChunkV2)
        chan_->send(encode_data(input_stream, std::string_view(local_.prefix).substr(at, kMaxDataChunkV2)));
    local_.prefix.clear();
    // Nothing to send: the other side must still see the stream end.
    if (role_ == Role::Caller && input_.eof) chan_->send(encode_data(MsgType::DataStdin, {}));
    read_input(false);
    if (role_ == Role::Service) read_input(true);
    if (role_ == Role::Service && local_.output_is_socket) watch_hangup();
    maybe_finish();
}

// As Qubes: a socket service that shut both directions (or closed) is done
// with its stdin; once its output ended too the call ends, without waiting
// for the caller's stdin to end.
void DataPump::watch_hangup() {
    if (finished_ || !output_.sd || output_.closed) return;
    pollfd p{output_.sd->native_handle(), 0, 0};
    if (::poll(&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLERR))) {
        service_hung_up_ = true;
        if (!output_.writing) output_.queue.clear();  // else the write under way fails and drops it
        close_output(MsgType::DataStdin);
        maybe_finish();
        return;
    }
    auto self = shared_from_this();
    output_.sd->async_wait(asio::posix::stream_descriptor::wait_error, [self](const asio::error_code& ec) {
        if (!ec) self->watch_hangup();
    });
}

void DataPump::on_message(const Header& h, std::string_view payload) {
    if (finished_) {
        // A service side that ended before the caller's HELLO ends its
        // direction only once that came (as Qubes' agent, which reads it
        // before anything else): a Qubes caller whose vchan saw our end
        // first could not send its HELLO.
        if (linger_after_hello_ && h.type == static_cast<uint32_t>(MsgType::Hello)) {
            linger_after_hello_ = false;
            end_channel();
        }
        return;  // a service side lingering until the caller closes
    }
    // The bulk of a stream: data messages go straight from the receive
    // buffer to their destination, without a decoded copy.
    auto type = static_cast<MsgType>(h.type);
    bool incoming_data = role_ == Role::Caller
                             ? (type == MsgType::DataStdout || type == MsgType::DataStderr)
                             : type == MsgType::DataStdin;
    if (version_ != 0 && incoming_data && payload.size() <= kMaxDataChunk) {
        if (!payload.empty()) {
            write_output(type, payload);
        } else if (role_ == Role::Caller) {
            close_output(type);
        } else {
            peer_stdin_eof_ = true;
            close_output(type);
            maybe_finish();
        }
        return;
    }
    Message m;
    try {
        m = decode_message(h, payload);
    } catch (const ProtocolError& e) {
        chan_->close(e.what());
        return;
    }
    if (version_ == 0) {
        auto* hello = std::get_if<Hello>(&m);
        if (!hello || hello->version < kMinProtocolVersion) {
            chan_->close("data channel: expected HELLO");
            return;
        }
        version_ = hello->version;
        if (version_ < 3) chunk_ = kMaxDataChunkV2;
        return;
    }
    if (auto* e = std::get_if<ExitCode>(&m); e && role_ == Role::Caller) {
        exit_code_ = static_cast<int>(e->code);
        maybe_finish();
        return;
    }
    chan_->close(std::string("data channel: unexpected ") + msg_type_name(h.type));
}

void DataPump::read_input(bool errors) {
    Reader& r = errors ? errors_ : input_;
    if (r.eof || r.reading || r.waiting_drain || finished_) return;
    MsgType stream = role_ == Role::Caller ? MsgType::DataStdin
                     : errors             ? MsgType::DataStderr
                                          : MsgType::DataStdout;
    if (chan_->pending_write_bytes() > kMaxChannelBacklog) {
        r.waiting_drain = true;
        return;
    }
    r.buf.resize(chunk_);
    r.reading = true;
    auto self = shared_from_this();
    auto handle = [self, errors, stream, generation = r.generation](const asio::error_code& ec, size_t n) {
        Reader& rr = errors ? self->errors_ : self->input_;
        if (rr.generation != generation) return;  // its descriptor was replaced
        rr.reading = false;
        if (self->finished_) return;
        if (n > 0) self->chan_->send_message(stream, std::string_view(rr.buf.data(), n));
        if (ec || n == 0) {
            rr.eof = true;
            self->send_eof(stream);
            self->maybe_finish();
            return;
        }
        self->read_input(errors);
    };
    if (r.sd) {
        r.sd->async_read_some(asio::buffer(r.buf), handle);
    } else {
        // Not pollable (regular file): read directly, one chunk per turn.
        UniqueFd& fd = errors ? local_.errors : local_.input;
        ssize_t n = ::read(fd.get(), r.buf.data(), r.buf.size());
        asio::error_code ec = n < 0 ? asio::error_code(errno, asio::system_category()) : asio::error_code();
        asio::post(io_, [handle, ec, n] { handle(ec, n > 0 ? static_cast<size_t>(n) : 0); });
    }
}

void DataPump::write_output(MsgType stream, std::string_view bytes) {
    Writer& w = (role_ == Role::Caller && stream == MsgType::DataStderr) ? errout_ : output_;
    if (w.closed || w.closing) return;
    std::string filtered;
    if (role_ == Role::Caller &&
        (stream == MsgType::DataStderr ? local_.filter_errors : local_.filter_output)) {
        filtered.assign(bytes);
        replace_unprintable(filtered.data(), filtered.size());
        bytes = filtered;
    }
    if (w.sd && w.queue.empty() && !w.writing) {
        // Fast path: straight to the descriptor; queue only what does not fit.
        ssize_t n;
        do {
            n = ::write(w.sd->native_handle(), bytes.data(), bytes.size());
        } while (n < 0 && errno == EINTR);
        if (n == static_cast<ssize_t>(bytes.size())) return;
        if (n > 0) {
            bytes.remove_prefix(static_cast<size_t>(n));
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            w.closing = true;  // the reader went away
            pump_writer(w, stream);
            return;
        }
    }
    w.queue.emplace_back(bytes);
    size_t queued = 0;
    for (const auto& q : w.queue) queued += q.size();
    if (queued > kMaxQueuedOutput) chan_->pause_reading();
    pump_writer(w, stream);
}

void DataPump::pump_writer(Writer& w, MsgType stream) {
    if (w.writing || w.closed) return;
    if (w.queue.empty()) {
        // Resuming may deliver more data (and start a write) or the EOF:
        // decide only on the state after it.
        chan_->resume_reading();
        if (w.writing || !w.queue.empty() || w.closed) return;
        if (w.closing) {
            w.closed = true;
            UniqueFd& fd = (&w == &errout_) ? local_.errors : local_.output;
            if ((local_.output_is_socket || local_.stdin_is_socket) && &w == &output_) {
                int raw = w.sd ? w.sd->native_handle() : fd.get();
                ::shutdown(raw, SHUT_WR);
            }
            asio::error_code ec;
            if (w.sd) w.sd->close(ec);
            fd.reset();
            maybe_finish();
        } else if (exit_code_) {
            maybe_finish();
        }
        return;
    }
    w.writing = true;
    auto self = shared_from_this();
    Writer* wp = &w;
    auto handle = [self, wp, stream](const asio::error_code& ec, size_t) {
        wp->writing = false;
        if (ec) {  // the reader went away: drop what it will never read
            wp->queue.clear();
            wp->closing = true;
        } else {
            wp->queue.pop_front();
        }
        self->pump_writer(*wp, stream);
    };
    if (w.sd) {
        asio::async_write(*w.sd, asio::buffer(w.queue.front()), handle);
    } else {
        UniqueFd& fd = (&w == &errout_) ? local_.errors : local_.output;
        bool ok = !fd || write_all(fd.get(), w.queue.front().data(), w.queue.front().size());
        asio::error_code ec = ok ? asio::error_code() : asio::error::broken_pipe;
        asio::post(io_, [handle, ec] { handle(ec, 0); });
    }
}

void DataPump::close_output(MsgType stream) {
    Writer& w = (role_ == Role::Caller && stream == MsgType::DataStderr) ? errout_ : output_;
    if (w.closed) return;
    w.closing = true;
    pump_writer(w, stream);
}

void DataPump::set_exit_code(int code) {
    exit_code_ = code;
    if (role_ == Role::Service && !output_.closed) {
        output_.closing = true;
        if (output_.writing) {
            asio::error_code ec;
            if (output_.sd) output_.sd->cancel(ec);  // its handler drops the queue and closes
        } else {
            output_.queue.clear();
            pump_writer(output_, MsgType::DataStdin);
        }
    }
    maybe_finish();
}

void DataPump::use_stdin_socket() {
    if (role_ != Role::Service || switched_ || finished_ || !saved_stdin_) return;
    switched_ = true;
    if (stdout_eof_sent_) return;  // its output has ended already
    UniqueFd reader(::fcntl(saved_stdin_.get(), F_DUPFD_CLOEXEC, 3));
    if (!reader) return;
    // The stdout descriptor is dropped (a pending read on it is stale).
    ++input_.generation;
    input_.reading = false;
    input_.waiting_drain = false;
    if (input_.sd) {
        asio::error_code ec;
        ::shutdown(input_.sd->native_handle(), SHUT_RD);
        input_.sd->close(ec);
    }
    local_.input = std::move(reader);
    input_.sd = wrap(io_, local_.input);
    input_.eof = !input_.sd && !local_.input;
    read_input(false);
}


void DataPump::maybe_finish() {
    if (finished_) return;
    if (role_ == Role::Caller) {
        if (exit_code_ && output_.queue.empty() && !output_.writing && errout_.queue.empty() &&
            !errout_.writing)
            finish(*exit_code_);
        return;
    }
    if (local_.output_is_socket && !exit_code_) {
        bool service_done = input_.eof && (peer_stdin_eof_ || service_hung_up_ || local_.exit_on_service_eof);
        bool client_done = peer_stdin_eof_ && local_.exit_on_client_eof;
        if (service_done || client_done) exit_code_ = 0;
    }
    if (!exit_code_) return;
    bool early = local_.output_is_socket && (local_.exit_on_client_eof || local_.exit_on_service_eof);
    if (!early && (!input_.eof || !errors_.eof)) return;
    // Both streams end before the exit code, also when the service never
    // had them (a failure, a socket service), as a Qubes caller expects.
    input_.eof = true;
    send_eof(MsgType::DataStdout);
    send_eof(MsgType::DataStderr);
    chan_->send(encode_exit_code(static_cast<uint32_t>(*exit_code_)));
    finish(*exit_code_);
}

void DataPump::send_eof(MsgType stream) {
    bool& sent = stream == MsgType::DataStderr ? stderr_eof_sent_ : stdout_eof_sent_;
    if (stream == MsgType::DataStdin) {
        chan_->send(encode_data(stream, {}));
        return;
    }
    if (sent) return;
    sent = true;
    chan_->send(encode_data(stream, {}));
}

void DataPump::finish(int code) {
    if (finished_) return;
    finished_ = true;
    asio::error_code ec;
    for (Reader* r : {&input_, &errors_})
        if (r->sd) r->sd->close(ec);
    for (Writer* w : {&output_, &errout_})
        if (w->sd) w->sd->close(ec);
    local_.input.reset();
    local_.output.reset();
    saved_stdin_.reset();
    local_.errors.reset();
    // The service side ends its direction only after the caller's HELLO
    // came (see on_message).
    if (role_ == Role::Service && version_ == 0)
        linger_after_hello_ = true;
    else
        end_channel();
    auto done = std::move(done_);
    if (done) done(code);
}

void DataPump::end_channel() {
    // A call that failed before its service ran, or whose socket service
    // hung up before the caller's stdin ended, lingers until the caller
    // closes (it may still be sending the stdin it wrote before it saw the
    // end; closing under it would reset the channel before it read the exit
    // code); any other ends once its last message is out.
    if (role_ == Role::Service && (local_.linger || (service_hung_up_ && local_.linger_after_hangup)) &&
        !peer_stdin_eof_)
        chan_->linger_after_flush();
    else
        chan_->close_after_flush();
}

void DataPump::abort() {
    chan_->close("aborted");
}

}  // namespace aerie::qrexec
