// One Admin API call from a qrexec daemon, asynchronous: connect to the
// admin daemon's socket (qubesd framing), send
// "METHOD SOURCE name DEST\0PAYLOAD", half-close, read the reply to EOF (with
// a size cap and a deadline), parse it. Used for internal.vm.Start
// (autostart) and for the disposables of @dispvm calls (CreateDisposable,
// Start, Kill). Nothing blocks the daemon's loop.
#pragma once

#include <asio.hpp>
#include <chrono>
#include <functional>
#include <string>
#include <string_view>

namespace aerie::qrexec {

inline constexpr size_t kMaxAdminReply = 65536;

// The admin daemon's main (Admin API) socket: $QUBESD_SOCKET, else
// /var/run/qubesd.sock.
std::string default_admin_socket();

struct AdminCall {
    std::string method;  // with "+ARG" when there is one
    std::string dest;    // a qube name, "uuid:UUID", or "dom0"
    std::string payload;
    std::string source = "dom0";
};

struct AdminResult {
    enum class Kind {
        Success,    // "0\0BODY"
        Exception,  // "2\0TYPE\0TRACEBACK\0MESSAGE\0"
        Refused,    // closed with no reply
        Failed,     // no connection, an I/O error, a timeout, an oversized or malformed reply
    } kind = Kind::Failed;
    std::string body;      // Success
    std::string exc_type;  // Exception: the Qubes exception class
    std::string message;   // Exception: its message; Refused/Failed: what went wrong

    bool ok() const { return kind == Kind::Success; }
    // One line for logs and refusals ("QubesVMError: ...", "refused by the
    // admin daemon", ...); control characters of the peer's text are replaced.
    std::string error() const;
};

// Parses a whole reply as read to EOF.
AdminResult parse_admin_reply(std::string_view reply);

// The request bytes for `call`; empty when a header field is empty or holds a
// space or a control character (it would change the framing).
std::string admin_request_bytes(const AdminCall& call);

// Runs `call` on the socket at `socket_path`; `done` runs exactly once, from
// the io_context (never from inside admin_call). A reply over `max_reply`
// bytes, or none within `timeout`, is a failure. A connect refused because
// the daemon's listen queue is full is tried again every 5 ms (within
// `timeout`); nothing else waits.
void admin_call(asio::io_context& io, const std::string& socket_path, const AdminCall& call,
                std::function<void(AdminResult)> done,
                std::chrono::milliseconds timeout = std::chrono::seconds(120),
                size_t max_reply = kMaxAdminReply);

}  // namespace aerie::qrexec
