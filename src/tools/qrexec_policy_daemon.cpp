// qrexec-policy-daemon: answers the qrexec daemons' policy questions on a Unix
// socket (/run/qubes/policy.sock). One request per connection: key=value
// lines and an empty line; the reply is qrexec-policy-exec's output text,
// then EOF. A malformed request is dropped without a reply.
//
// One thread, one io_context: every connection is read asynchronously with a
// size cap and a deadline, so a slow or hostile client holds only its own
// connection. The policy is loaded once and reloaded before the next request
// whenever inotify reports a change under the policy directories.
#include <sys/inotify.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <asio.hpp>

#include <array>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/bounded_log.hpp"
#include "base/limited_log.hpp"
#include "policy/loader.hpp"
#include "qrexec/policy_request.hpp"
#include "qrexec/system_info_source.hpp"
#include "tools/cli_support.hpp"

using namespace aerie;
using asio::local::stream_protocol;

namespace {

constexpr size_t kDefaultMaxConnections = 512;

template <typename... Args>
void report(fmt::format_string<Args...> format, Args&&... args) {
    fmt::print(stderr, "qrexec-policy-daemon: {}\n",
               fmt::format(format, std::forward<Args>(args)...));
}

// Request fields are chosen by the calling qube: each line about a request is
// escaped and bounded, and at most a few per source qube per second are kept.
base::LimitedLog& request_log() {
    static base::LimitedLog log("qrexec-policy-daemon");
    return log;
}

struct Options {
    std::string socket_path = qrexec::kDefaultPolicySocket;
    std::vector<std::string> policy_dirs;
    std::string system_info_path;
    std::string internal_socket = qrexec::default_internal_socket();
    std::chrono::milliseconds read_timeout{10000};
};

// Tells whether anything under the policy directories changed. Directories
// are watched recursively; for a directory that does not exist (yet), its
// nearest existing ancestor is watched for the missing component.
class PolicyWatcher {
public:
    explicit PolicyWatcher(asio::io_context& io) : stream_(io) {
        int fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        if (fd < 0) {
            report("inotify unavailable ({}): reloading the policy before every request",
                std::strerror(errno));
            return;
        }
        stream_.assign(fd);
    }

    // Replaces all watches. Changes made after this call are reported.
    void watch(const std::vector<std::string>& dirs) {
        if (!stream_.is_open()) return;
        for (const auto& [wd, w] : watches_) ::inotify_rm_watch(stream_.native_handle(), wd);
        watches_.clear();
        namespace fs = std::filesystem;
        for (const auto& d : dirs) {
            std::error_code ec;
            fs::path dir(d);
            if (fs::is_directory(dir, ec)) {
                add(dir.string(), std::nullopt);
                size_t count = 0;
                auto opts = fs::directory_options::follow_directory_symlink |
                            fs::directory_options::skip_permission_denied;
                for (fs::recursive_directory_iterator it(dir, opts, ec), end; !ec && it != end;
                     it.increment(ec)) {
                    if (it.depth() > 16 || ++count > 4096) break;
                    std::error_code ec2;
                    if (it->is_directory(ec2)) add(it->path().string(), std::nullopt);
                }
                continue;
            }
            // Wait for the first missing component to appear.
            fs::path missing = dir.filename();
            fs::path parent = dir.parent_path();
            while (!parent.empty()) {
                if (fs::is_directory(parent, ec)) {
                    add(parent.string(), missing.string());
                    break;
                }
                if (parent == parent.root_path()) break;
                missing = parent.filename();
                parent = parent.parent_path();
            }
        }
    }

    // Starts noticing changes as they happen (for the log).
    void start() {
        if (!stream_.is_open()) return;
        stream_.async_wait(asio::posix::stream_descriptor::wait_read,
                           [this](const asio::error_code& ec) {
                               if (ec) return;
                               bool before = changed_;
                               drain();
                               if (changed_ && !before)
                                   report("policy changed; reloading before the next request");
                               start();
                           });
    }

    // Whether the policy must be reloaded: a change was seen since the last
    // call (pending events are read now, so a change completed before the
    // request arrived is never missed).
    bool take_changed() {
        if (!stream_.is_open()) return true;
        drain();
        bool c = changed_;
        changed_ = false;
        return c;
    }

    void stop() {
        asio::error_code ec;
        stream_.close(ec);
    }

private:
    struct Watch {
        std::string path;
        bool whole = false;             // every event counts
        std::set<std::string> awaited;  // else only events naming one of these
    };

    void add(const std::string& path, const std::optional<std::string>& awaited) {
        constexpr uint32_t mask = IN_CREATE | IN_DELETE | IN_MODIFY | IN_CLOSE_WRITE |
                                  IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF |
                                  IN_MOVE_SELF | IN_ONLYDIR;
        int wd = ::inotify_add_watch(stream_.native_handle(), path.c_str(), mask);
        if (wd < 0) {
            report("cannot watch {}: {}", path, std::strerror(errno));
            return;
        }
        Watch& w = watches_[wd];
        w.path = path;
        if (awaited) w.awaited.insert(*awaited);
        else w.whole = true;
    }

    void drain() {
        alignas(struct inotify_event) std::array<char, 16384> buf;
        for (;;) {
            ssize_t n = ::read(stream_.native_handle(), buf.data(), buf.size());
            if (n <= 0) return;  // EAGAIN: nothing more
            size_t off = 0;
            while (off + sizeof(struct inotify_event) <= static_cast<size_t>(n)) {
                struct inotify_event ev;
                std::memcpy(&ev, buf.data() + off, sizeof ev);
                std::string_view name;
                if (ev.len) {
                    const char* p = buf.data() + off + sizeof ev;
                    name = std::string_view(p, ::strnlen(p, ev.len));
                }
                note(ev, name);
                off += sizeof ev + ev.len;
            }
        }
    }

    void note(const struct inotify_event& ev, std::string_view name) {
        if (ev.mask & IN_Q_OVERFLOW) {
            changed_ = true;
            return;
        }
        if (ev.mask & IN_IGNORED) return;  // a watch went away (ours, or after DELETE_SELF)
        auto it = watches_.find(ev.wd);
        if (it == watches_.end()) return;  // from a watch replaced since
        const Watch& w = it->second;
        if (w.whole || w.awaited.count(std::string(name))) changed_ = true;
    }

    asio::posix::stream_descriptor stream_;
    std::unordered_map<int, Watch> watches_;
    bool changed_ = true;
};

struct FileStamp {
    dev_t dev = 0;
    ino_t ino = 0;
    off_t size = 0;
    long long mtime_ns = 0;
    long long ctime_ns = 0;
    bool operator==(const FileStamp&) const = default;
};

std::optional<FileStamp> stamp_of(const std::string& path) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0) return std::nullopt;
    FileStamp s;
    s.dev = st.st_dev;
    s.ino = st.st_ino;
    s.size = st.st_size;
    s.mtime_ns = static_cast<long long>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
    s.ctime_ns = static_cast<long long>(st.st_ctim.tv_sec) * 1000000000LL + st.st_ctim.tv_nsec;
    return s;
}

// The cached policy and system info, refreshed before each answer.
class PolicyState {
public:
    PolicyState(asio::io_context& io, const Options& options) : options_(options), watcher_(io) {
        load_options_.dirs = options.policy_dirs.empty()
                                 ? std::vector<std::string>{policy::kRunPolicyDir,
                                                            policy::kEtcPolicyDir}
                                 : options.policy_dirs;
        watch_dirs_ = load_options_.dirs;
        watch_dirs_.push_back(load_options_.compat_dir);
    }

    void start() {
        refresh();
        watcher_.start();
    }

    void stop() { watcher_.stop(); }

    bool has_system_info() const { return system_.has_value(); }

    std::string answer(const qrexec::PolicyRequest& request) {
        refresh();
        std::string why;
        std::string reply;
        if (!policy_) {
            why = "policy failed to load";
            reply = qrexec::kPolicyDenyReply;
        } else if (!system_) {
            why = "no usable system info";
            reply = qrexec::kPolicyDenyReply;
        } else {
            reply = qrexec::answer_policy_request(*policy_, *system_, request, &why);
        }
        if (reply == qrexec::kPolicyDenyReply)
            request_log().line(request.source,
                               fmt::format("qrexec: {}: {} -> {}: denied: {}", base::clip(request.service_and_arg, 128),
                                           base::clip(request.source, 64), base::clip(request.intended_target, 64),
                                           base::clip(why, 200)));
        return reply;
    }

private:
    void refresh() {
        if (watcher_.take_changed()) {
            watcher_.watch(watch_dirs_);  // before loading: later changes are seen
            load_policy();
        }
        refresh_system_info();
    }

    void load_policy() {
        try {
            policy::DiskFiles files;
            policy_ = policy::load_policy(files, load_options_);
            report("policy loaded: {} rules", policy_->size());
        } catch (const std::exception& e) {
            policy_.reset();
            report("error loading policy: {}", e.what());
        }
    }

    // Re-reads the system info when its file changed (a failure is logged once);
    // without a file, asks the admin daemon every time, so that a change made
    // through the Admin API counts at once.
    void refresh_system_info() {
        if (options_.system_info_path.empty()) return fetch_live_system_info();
        auto stamp = stamp_of(options_.system_info_path);
        if (system_checked_ && stamp == system_stamp_) return;
        system_checked_ = true;
        system_stamp_ = stamp;
        try {
            system_ = tools::load_system_info_file(options_.system_info_path);
            if (system_loaded_once_) report("system info reloaded");
            system_loaded_once_ = true;
        } catch (const std::exception& e) {
            system_.reset();
            report("error reading system info: {}", e.what());
        }
    }

    void fetch_live_system_info() {
        try {
            system_ = policy::SystemInfo::from_json(
                qrexec::fetch_system_info_json(options_.internal_socket, std::chrono::seconds(2)));
            live_failure_reported_ = false;
        } catch (const std::exception& e) {
            system_.reset();
            if (!live_failure_reported_) report("error getting system info: {}", e.what());
            live_failure_reported_ = true;
        }
    }

    const Options& options_;
    bool live_failure_reported_ = false;
    policy::LoadOptions load_options_;
    std::vector<std::string> watch_dirs_;
    PolicyWatcher watcher_;
    std::optional<policy::Policy> policy_;
    std::optional<policy::SystemInfo> system_;
    std::optional<FileStamp> system_stamp_;
    bool system_checked_ = false;
    bool system_loaded_once_ = false;
};

class Server;

// One client: read one request (capped, with a deadline), answer, close.
class Session : public std::enable_shared_from_this<Session> {
public:
    Session(stream_protocol::socket socket, Server& server);
    ~Session();
    void start();
    void close();

private:
    void read();
    void respond(std::string_view text);

    stream_protocol::socket socket_;
    asio::steady_timer deadline_;
    Server& server_;
    std::string request_;
    std::array<char, 4096> chunk_{};
    std::string reply_;
    bool closed_ = false;
};

class Server {
public:
    Server(asio::io_context& io, const Options& options, PolicyState& state, size_t max_connections)
        : options_(options), state_(state), acceptor_(io), retry_(io),
          max_connections_(max_connections) {}

    // Binds the socket (replacing a stale one). False on failure (logged).
    bool listen() {
        const std::string& path = options_.socket_path;
        struct stat st {};
        if (::lstat(path.c_str(), &st) == 0) {
            if (!S_ISSOCK(st.st_mode)) {
                report("{} exists and is not a socket; not replacing it", path);
                return false;
            }
            ::unlink(path.c_str());
        }
        // Only the host's root (the qrexec daemons) asks: 0600, set before
        // listen so that nobody else can connect in between.
        try {
            acceptor_.open(stream_protocol());
            acceptor_.bind(stream_protocol::endpoint(path));
            if (::chmod(path.c_str(), 0600) != 0)
                throw std::system_error(errno, std::generic_category(), "chmod");
            acceptor_.listen(asio::socket_base::max_listen_connections);
        } catch (const std::system_error& e) {
            report("cannot listen on {}: {}", path, e.what());
            return false;
        }
        if (::lstat(path.c_str(), &st) == 0) {
            bound_ = std::make_pair(st.st_dev, st.st_ino);
        }
        report("listening on {}", path);
        accept();
        return true;
    }

    void shutdown() {
        stopping_ = true;
        asio::error_code ec;
        acceptor_.close(ec);
        retry_.cancel();
        // Copy first: close() may end sessions and change the set.
        std::vector<std::weak_ptr<Session>> live;
        for (Session* s : sessions_) live.push_back(s->weak_from_this());
        for (auto& w : live)
            if (auto s = w.lock()) s->close();
        state_.stop();
        // Remove the socket only if it is still ours.
        struct stat st {};
        if (bound_ && ::lstat(options_.socket_path.c_str(), &st) == 0 &&
            std::make_pair(st.st_dev, st.st_ino) == *bound_)
            ::unlink(options_.socket_path.c_str());
    }

    PolicyState& state() { return state_; }
    std::chrono::milliseconds read_timeout() const { return options_.read_timeout; }

    void attach(Session* s) { sessions_.insert(s); }
    void detach(Session* s) {
        sessions_.erase(s);
        if (paused_ && !stopping_ && sessions_.size() < max_connections_) {
            paused_ = false;
            accept();
        }
    }

private:
    void accept() {
        if (stopping_) return;
        if (sessions_.size() >= max_connections_) {
            if (!paused_) report("{} connections open; waiting for one to end", sessions_.size());
            paused_ = true;
            return;
        }
        acceptor_.async_accept([this](const asio::error_code& ec, stream_protocol::socket socket) {
            if (ec == asio::error::operation_aborted || stopping_) return;
            if (ec) {
                // Out of descriptors or memory, or a connection that died
                // while queued: pause briefly rather than spin.
                report("accept: {}; retrying shortly", ec.message());
                retry_.expires_after(std::chrono::milliseconds(100));
                retry_.async_wait([this](const asio::error_code& tec) {
                    if (!tec) accept();
                });
                return;
            }
            std::make_shared<Session>(std::move(socket), *this)->start();
            accept();
        });
    }

    const Options& options_;
    PolicyState& state_;
    stream_protocol::acceptor acceptor_;
    asio::steady_timer retry_;
    size_t max_connections_;
    std::set<Session*> sessions_;
    bool paused_ = false;
    bool stopping_ = false;
    std::optional<std::pair<dev_t, ino_t>> bound_;
};

Session::Session(stream_protocol::socket socket, Server& server)
    : socket_(std::move(socket)), deadline_(socket_.get_executor()), server_(server) {
    server_.attach(this);
}

Session::~Session() { server_.detach(this); }

void Session::start() {
    auto self = shared_from_this();
    deadline_.expires_after(server_.read_timeout());
    deadline_.async_wait([self](const asio::error_code& ec) {
        if (ec || self->closed_) return;
        report("client timed out; closing its connection");
        self->close();
    });
    read();
}

void Session::close() {
    if (closed_) return;
    closed_ = true;
    asio::error_code ec;
    socket_.shutdown(stream_protocol::socket::shutdown_both, ec);
    socket_.close(ec);
    deadline_.cancel();
}

void Session::read() {
    size_t room = qrexec::kMaxPolicyRequestBytes - request_.size();
    if (room == 0) {
        report("error parsing policy request: request too long");
        return close();
    }
    auto self = shared_from_this();
    socket_.async_read_some(
        asio::buffer(chunk_.data(), std::min(room, chunk_.size())),
        [self](const asio::error_code& ec, size_t n) {
            if (self->closed_) return;
            if (ec == asio::error::eof) return self->respond(self->request_);
            if (ec) return self->close();
            self->request_.append(self->chunk_.data(), n);
            if (auto end = qrexec::policy_request_end(self->request_))
                return self->respond(std::string_view(self->request_).substr(0, *end));
            self->read();
        });
}

void Session::respond(std::string_view text) {
    std::string why;
    auto request = qrexec::parse_policy_request(text, &why);
    if (!request) {
        request_log().line("(unparsed requests)", "error parsing policy request: " + why);
        return close();
    }
    try {
        reply_ = server_.state().answer(*request);
    } catch (const std::exception& e) {
        request_log().line(request->source, std::string("error answering request: ") + e.what());
        reply_ = qrexec::kPolicyDenyReply;
    }
    auto self = shared_from_this();
    asio::async_write(socket_, asio::buffer(reply_),
                      [self](const asio::error_code&, size_t) { self->close(); });
}

// Enough descriptors for the connection cap (the soft limit is often 1024).
size_t connection_cap() {
    struct rlimit rl {};
    if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 64;
    rlim_t want = kDefaultMaxConnections + 64;
    if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
        rlim_t raised = rl.rlim_max == RLIM_INFINITY ? want : std::min(want, rl.rlim_max);
        if (raised > rl.rlim_cur) {
            rl.rlim_cur = raised;
            ::setrlimit(RLIMIT_NOFILE, &rl);
            ::getrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want) return kDefaultMaxConnections;
    return rl.rlim_cur > 96 ? static_cast<size_t>(rl.rlim_cur - 64) : 32;
}

}  // namespace

int main(int argc, char** argv) {
    CLI::App app{"Answer qrexec policy requests on a Unix socket", "qrexec-policy-daemon"};
    Options options;
    double timeout_seconds = 10;
    std::string log_file;
    uint64_t log_max_bytes = 8u << 20;
    app.add_option("--socket", options.socket_path, "Socket to listen on")
        ->capture_default_str();
    app.add_option("--path", options.policy_dirs,
                   "Policy directory (repeatable; the first wins a name clash)")
        ->allow_extra_args(false);
    app.add_option("--system-info", options.system_info_path,
                   "System info JSON file (else asked of the admin daemon for every request)");
    app.add_option("--internal-socket", options.internal_socket, "The admin daemon's internal socket")
        ->capture_default_str();
    app.add_option("--read-timeout", timeout_seconds,
                   "Seconds a client may take to send its request")
        ->capture_default_str()
        ->check(CLI::PositiveNumber);
    app.add_option("--log-file", log_file,
                   "Write the log to this file, capped (one rotated copy FILE.1), instead of stderr");
    app.add_option("--log-max-bytes", log_max_bytes, "Cap of the log file")->capture_default_str();
    if (int rc = tools::parse_args(app, argc, argv); rc >= 0) return rc;
    if (!log_file.empty()) {
        try {
            base::redirect_output_to_log(log_file, {log_max_bytes});
        } catch (const std::exception& e) {
            report("{}", e.what());
            return 1;
        }
    }
    options.read_timeout =
        std::chrono::milliseconds(static_cast<long long>(timeout_seconds * 1000.0));

    std::signal(SIGPIPE, SIG_IGN);
    ::umask(007);

    asio::io_context io(1);
    PolicyState state(io, options);
    state.start();
    // A file must be usable at start; the live source may come up later.
    if (!options.system_info_path.empty() && !state.has_system_info()) return 1;

    Server server(io, options, state, connection_cap());
    if (!server.listen()) return 1;

    asio::signal_set signals(io, SIGINT, SIGTERM);
    signals.async_wait([&](const asio::error_code& ec, int signo) {
        if (ec) return;
        report("{}: exiting", signo == SIGTERM ? "SIGTERM" : "SIGINT");
        server.shutdown();
    });

    io.run();
    return 0;
}
