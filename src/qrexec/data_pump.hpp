// Moves a call's stdio over its data channel: the service side streams the
// service's stdout/stderr and exit code and feeds it stdin; the caller side
// does the reverse. Each direction closes on its own (EOF is an empty data
// message), and local writes that block pause the channel (back-pressure).
#pragma once

#include <asio.hpp>

#include <functional>
#include <memory>
#include <optional>

#include "qrexec/message_conn.hpp"

namespace aerie::qrexec {

class DataPump : public std::enable_shared_from_this<DataPump> {
public:
    enum class Role { Caller, Service };

    struct Local {
        UniqueFd input;   // caller: what to send as stdin; service: the service's stdout
        UniqueFd output;  // caller: where stdout goes; service: the service's stdin
        UniqueFd errors;  // caller: where stderr goes; service: the service's stderr
        // The output is a socket shared with input: EOF is shutdown(SHUT_WR).
        bool output_is_socket = false;
        // Service side, socket services: finish when the service closes its end,
        // or when the caller's stdin ends.
        bool exit_on_service_eof = false;
        bool exit_on_client_eof = false;
        // Sent before anything read from `input` (qrexec-client -p).
        std::string prefix;
        // Caller side: bytes of the service's stdout / stderr that are not
        // printable ASCII (tab, newline, return, backspace, bell aside)
        // become '_' before they reach `output` / `errors`, as Qubes'
        // qrexec-client -t / -T (a terminal).
        bool filter_output = false;
        bool filter_errors = false;
        // Service side, a process whose stderr stays this process's own
        // (qrexec-client serving a call in dom0): the channel carries none,
        // and that stream ends at once, as for a socket service.
        bool stderr_kept_local = false;
        // Service side, a process: its stdin is a socket, so it may ask
        // (use_stdin_socket) to send its output through it too.
        bool stdin_is_socket = false;
        // Service side, a call that failed before its service ran: read on
        // (and drop) what the caller still sends until it closes.
        bool linger = false;
        // Service side, a socket service that hung up before the caller's
        // stdin ended: the same (a long-lived agent; a one-call process such
        // as qrexec-client ends at once instead).
        bool linger_after_hangup = false;
    };

    // done(exit code): for the caller the service's exit code (255 if the
    // channel broke first); for the service side, after the exit code is sent.
    using Done = std::function<void(int exit_code)>;

    static std::shared_ptr<DataPump> create(asio::io_context& io, UniqueFd channel, Role role,
                                            Local local);
    void start(Done done);
    // Service side: the service process ended with this code. Its stdin
    // ends now (what was not written to it yet is dropped), so a process
    // it left behind sees EOF, as with Qubes' agent.
    void set_exit_code(int code);
    // Service side (SIGUSR1 from the service in Qubes): from now on its
    // output is read from its stdin socket; its stdout is no longer read.
    void use_stdin_socket();
    // Ends everything now (e.g. timeout).
    void abort();

private:
    DataPump(asio::io_context& io, UniqueFd channel, Role role, Local local);
    void on_message(const Header& h, std::string_view payload);
    void read_input(bool errors);
    void write_output(MsgType stream, std::string_view bytes);
    void close_output(MsgType stream);
    void maybe_finish();
    // Sends a stream's EOF (an empty data message); stdout and stderr once each.
    void send_eof(MsgType stream);
    void finish(int code);
    void end_channel();

    struct Reader {
        std::unique_ptr<asio::posix::stream_descriptor> sd;
        bool eof = false;
        bool reading = false;        // a read is outstanding
        bool waiting_drain = false;  // paused until the channel's queue drains
        uint64_t generation = 0;     // a read issued before a switch of descriptor is stale
        std::vector<char> buf;
    };
    struct Writer {
        std::unique_ptr<asio::posix::stream_descriptor> sd;
        std::deque<std::string> queue;
        bool writing = false;
        bool closing = false;  // close once the queue drains
        bool closed = false;
    };
    void pump_writer(Writer& w, MsgType stream);
    // Socket services: notices the service shutting down its reading side
    // (or closing), after which nothing more goes to it.
    void watch_hangup();


    asio::io_context& io_;
    std::shared_ptr<MessageConn> chan_;
    Role role_;
    Local local_;
    Reader input_, errors_;
    Writer output_, errout_;
    Done done_;
    uint32_t version_ = 0;  // peer's, once its HELLO arrived
    size_t chunk_ = kMaxDataChunk;
    std::optional<int> exit_code_;
    bool peer_stdin_eof_ = false;
    bool stdout_eof_sent_ = false;
    bool stderr_eof_sent_ = false;
    bool service_hung_up_ = false;  // a socket service reads no more
    bool finished_ = false;
    bool linger_after_hello_ = false;  // finished before the caller's HELLO came
    UniqueFd saved_stdin_;  // the service's stdin socket, for use_stdin_socket
    bool switched_ = false;
};

}  // namespace aerie::qrexec
