#include "qrexec/admin_call.hpp"

#include <cstdlib>
#include <memory>

namespace aerie::qrexec {

namespace {

bool header_field_ok(std::string_view s) {
    if (s.empty()) return false;
    for (unsigned char c : s)
        if (c <= 0x20 || c == 0x7f) return false;
    return true;
}

std::string printable(std::string_view s) {
    std::string out(s.substr(0, 512));
    for (char& c : out)
        if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = ' ';
    return out;
}

AdminResult failure(std::string why) {
    AdminResult r;
    r.kind = AdminResult::Kind::Failed;
    r.message = std::move(why);
    return r;
}

// The state of one call, kept alive by the handlers in flight.
struct CallState {
    CallState(asio::io_context& io, std::function<void(AdminResult)> d)
        : sock(io), timer(io), retry(io), done(std::move(d)) {}
    asio::local::stream_protocol::socket sock;
    asio::steady_timer timer;  // the whole call's deadline
    asio::steady_timer retry;  // a full listen queue: connect again soon
    std::function<void(AdminResult)> done;
    asio::local::stream_protocol::endpoint endpoint;
    std::string socket_path;
    size_t max_reply = kMaxAdminReply;
    std::string request;
    std::string reply;
    bool finished = false;

    void finish(AdminResult result) {
        if (finished) return;
        finished = true;
        asio::error_code ignored;
        timer.cancel();
        retry.cancel();
        sock.close(ignored);
        auto d = std::move(done);
        done = nullptr;
        d(std::move(result));
    }
};

void read_reply(const std::shared_ptr<CallState>& st) {
    // To EOF; one byte over the cap shows an oversized reply.
    asio::async_read(st->sock, asio::dynamic_buffer(st->reply, st->max_reply + 1),
                     [st](const asio::error_code& ec, size_t) {
                         if (st->finished) return;
                         if (st->reply.size() > st->max_reply)
                             return st->finish(failure("reply from the admin daemon over " +
                                                       std::to_string(st->max_reply) + " bytes"));
                         if (ec && ec != asio::error::eof && ec != asio::error::connection_reset)
                             return st->finish(failure("cannot read the reply: " + ec.message()));
                         st->finish(parse_admin_reply(st->reply));
                     });
}

void connect(const std::shared_ptr<CallState>& st) {
    st->sock.async_connect(st->endpoint, [st](const asio::error_code& ec) {
        if (st->finished) return;
        // A Unix socket whose listen queue is full refuses a non-blocking
        // connect at once (EAGAIN, which Asio reports as no_buffer_space):
        // try again shortly, until the deadline.
        if (ec == asio::error::no_buffer_space || ec == asio::error::try_again) {
            asio::error_code ignored;
            st->sock.close(ignored);
            st->retry.expires_after(std::chrono::milliseconds(5));
            st->retry.async_wait([st](const asio::error_code& wec) {
                if (!wec && !st->finished) connect(st);
            });
            return;
        }
        if (ec) return st->finish(failure("admin daemon at " + st->socket_path + ": " + ec.message()));
        asio::async_write(st->sock, asio::buffer(st->request), [st](const asio::error_code& wec, size_t) {
            if (st->finished) return;
            if (wec) return st->finish(failure("cannot send the request: " + wec.message()));
            asio::error_code ignored;
            st->sock.shutdown(asio::socket_base::shutdown_send, ignored);
            read_reply(st);
        });
    });
}

}  // namespace

std::string default_admin_socket() {
    const char* env = std::getenv("QUBESD_SOCKET");
    return env && *env ? env : "/var/run/qubesd.sock";
}

std::string AdminResult::error() const {
    switch (kind) {
        case Kind::Success:
            return "success";
        case Kind::Exception:
            return printable(exc_type) + (message.empty() ? "" : ": " + printable(message));
        case Kind::Refused:
            return "refused by the admin daemon";
        case Kind::Failed:
            return printable(message);
    }
    return "unknown";
}

AdminResult parse_admin_reply(std::string_view reply) {
    AdminResult r;
    if (reply.empty()) {
        r.kind = AdminResult::Kind::Refused;
        r.message = "no reply";
        return r;
    }
    if (reply.size() >= 2 && reply[0] == '0' && reply[1] == '\0') {
        r.kind = AdminResult::Kind::Success;
        r.body = std::string(reply.substr(2));
        return r;
    }
    if (reply.size() >= 2 && reply[0] == '2' && reply[1] == '\0') {
        // TYPE\0TRACEBACK\0MESSAGE\0
        std::string_view rest = reply.substr(2);
        size_t a = rest.find('\0');
        size_t b = a == std::string_view::npos ? a : rest.find('\0', a + 1);
        size_t c = b == std::string_view::npos ? b : rest.find('\0', b + 1);
        if (c == std::string_view::npos || c + 1 != rest.size() || a == 0)
            return failure("malformed exception reply from the admin daemon");
        r.kind = AdminResult::Kind::Exception;
        r.exc_type = std::string(rest.substr(0, a));
        r.message = std::string(rest.substr(b + 1, c - b - 1));
        return r;
    }
    return failure("malformed reply from the admin daemon");
}

std::string admin_request_bytes(const AdminCall& call) {
    if (!header_field_ok(call.method) || !header_field_ok(call.source) || !header_field_ok(call.dest))
        return {};
    std::string out;
    out.reserve(call.method.size() + call.source.size() + call.dest.size() + call.payload.size() + 8);
    out += call.method;
    out += ' ';
    out += call.source;
    out += " name ";
    out += call.dest;
    out += '\0';
    out += call.payload;
    return out;
}

void admin_call(asio::io_context& io, const std::string& socket_path, const AdminCall& call,
                std::function<void(AdminResult)> done, std::chrono::milliseconds timeout, size_t max_reply) {
    auto st = std::make_shared<CallState>(io, std::move(done));
    st->request = admin_request_bytes(call);
    if (st->request.empty()) {
        asio::post(io, [st] { st->finish(failure("invalid request header")); });
        return;
    }
    st->socket_path = socket_path;
    st->max_reply = max_reply;
    try {
        st->endpoint = asio::local::stream_protocol::endpoint(socket_path);
    } catch (const std::exception& e) {  // a path too long for a Unix socket
        asio::post(
            io, [st, why = "admin daemon at " + socket_path + ": " + e.what()] { st->finish(failure(why)); });
        return;
    }
    st->timer.expires_after(timeout);
    st->timer.async_wait([st, timeout](const asio::error_code& ec) {
        if (ec) return;  // cancelled: the call finished
        st->finish(failure(
            "no answer from the admin daemon in " +
            std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(timeout).count()) + " ms"));
    });
    connect(st);
}

}  // namespace aerie::qrexec
