#include "qrexec/policy_client.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <memory>

#include "qrexec/spawn.hpp"

extern char** environ;

namespace aerie::qrexec {

bool PolicyAnswer::allowed() const {
    auto it = fields.find("result");
    return it != fields.end() && it->second == "allow" && fields.count("target");
}

std::string PolicyAnswer::get(const std::string& key) const {
    auto it = fields.find(key);
    return it == fields.end() ? std::string() : it->second;
}

std::optional<PolicyAnswer> parse_policy_answer(std::string_view text) {
    PolicyAnswer answer;
    size_t pos = 0;
    while (pos < text.size()) {
        size_t nl = text.find('\n', pos);
        std::string_view line = text.substr(pos, nl == std::string_view::npos ? text.npos : nl - pos);
        pos = nl == std::string_view::npos ? text.size() : nl + 1;
        if (line.empty()) continue;
        auto eq = line.find('=');
        if (eq == std::string_view::npos || eq == 0) return std::nullopt;
        answer.fields.emplace(std::string(line.substr(0, eq)), std::string(line.substr(eq + 1)));
    }
    auto result = answer.fields.find("result");
    if (result == answer.fields.end() || (result->second != "allow" && result->second != "deny"))
        return std::nullopt;
    return answer;
}

std::string policy_request_text(const PolicyQuestion& q) {
    std::string text = "source=" + q.source + "\nintended_target=" + q.intended_target +
                       "\nservice_and_arg=" + q.service_and_arg + "\n";
    if (q.requested_source) text += "requested_source=" + *q.requested_source + "\n";
    return text + "\n";
}

namespace {

PolicyAnswer deny_answer() {
    PolicyAnswer a;
    a.fields["result"] = "deny";
    return a;
}

// One question in flight: socket attempt, then the program.
struct Asking : std::enable_shared_from_this<Asking> {
    Asking(asio::io_context& io_, PolicyClientConfig config_, PolicyQuestion question_,
           std::function<void(PolicyAnswer)> done_)
        : io(io_), config(std::move(config_)), question(std::move(question_)), done(std::move(done_)),
          socket(io_), timer(io_) {}

    asio::io_context& io;
    PolicyClientConfig config;
    PolicyQuestion question;
    std::function<void(PolicyAnswer)> done;
    asio::local::stream_protocol::socket socket;
    std::unique_ptr<asio::posix::stream_descriptor> pipe;
    pid_t child = -1;
    asio::steady_timer timer;
    std::string request, reply;
    char buf[4096];
    bool finished = false;

    void finish(PolicyAnswer answer) {
        if (finished) return;
        finished = true;
        timer.cancel();
        asio::error_code ec;
        socket.close(ec);
        if (pipe) pipe->close(ec);
        if (child > 0) {
            ::kill(child, SIGKILL);
            ::waitpid(child, nullptr, 0);
            child = -1;
        }
        done(std::move(answer));
    }

    void start() {
        auto self = shared_from_this();
        timer.expires_after(config.timeout);
        timer.async_wait([self](const asio::error_code& ec) {
            if (!ec) self->finish(deny_answer());
        });
        request = policy_request_text(question);
        socket.async_connect(asio::local::stream_protocol::endpoint(config.socket_path),
                             [self](const asio::error_code& ec) {
                                 if (ec) return self->fallback();
                                 asio::async_write(self->socket, asio::buffer(self->request),
                                                   [self](const asio::error_code& wec, size_t) {
                                                       if (wec) return self->fallback();
                                                       self->read_socket();
                                                   });
                             });
    }

    void read_socket() {
        auto self = shared_from_this();
        socket.async_read_some(asio::buffer(buf), [self](const asio::error_code& ec, size_t n) {
            self->reply.append(self->buf, n);
            if (self->reply.size() > 65536) return self->finish(deny_answer());
            if (!ec) return self->read_socket();
            if (ec != asio::error::eof) return self->fallback();
            auto answer = parse_policy_answer(self->reply);
            if (!answer) return self->fallback();  // e.g. closed without a reply
            self->finish(*answer);
        });
    }

    void fallback() {
        if (finished) return;
        if (config.program.empty()) return finish(deny_answer());
        reply.clear();
        SpawnRequest req;
        // Qubes' arguments exactly (its program takes no other). The source
        // a relay asks for goes in the environment, which Aerie's program
        // reads and Qubes' ignores (then the call is judged as the relay's
        // own, which it could make anyway).
        req.argv = {config.program, "--", question.source, question.intended_target, question.service_and_arg};
        for (char** e = environ; *e; ++e)
            if (std::string_view(*e).rfind(kRequestedSourceEnv + std::string("="), 0) != 0) req.env.emplace_back(*e);
        if (question.requested_source) req.env.push_back(kRequestedSourceEnv + std::string("=") + *question.requested_source);
        req.cwd = "/";
        Spawned sp;
        try {
            sp = spawn_process(req);
        } catch (const std::exception&) {
            return finish(deny_answer());
        }
        child = sp.pid;
        int fd = sp.stdout_r.release();
        ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
        pipe = std::make_unique<asio::posix::stream_descriptor>(io, fd);
        read_program();
    }

    void read_program() {
        auto self = shared_from_this();
        pipe->async_read_some(asio::buffer(buf), [self](const asio::error_code& ec, size_t n) {
            self->reply.append(self->buf, n);
            if (self->reply.size() > 65536) return self->finish(deny_answer());
            if (!ec) return self->read_program();
            int status = 0;
            ::waitpid(self->child, &status, 0);
            self->child = -1;
            auto answer = parse_policy_answer(self->reply);
            bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0 && answer && answer->allowed();
            self->finish(ok ? *answer : deny_answer());
        });
    }
};

}  // namespace

void ask_policy(asio::io_context& io, const PolicyClientConfig& config,
                const PolicyQuestion& question, std::function<void(PolicyAnswer)> done) {
    std::make_shared<Asking>(io, config, question, std::move(done))->start();
}

}  // namespace aerie::qrexec
