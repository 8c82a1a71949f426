// qvm-run: runs a command (or, with --service, a qrexec service) in qubes, as
// Qubes' qvm-run does, through Aerie's qrexec-client (the one next to this
// program) and the qrexec daemons' sockets in $QREXEC_SOCKET_DIR (default
// /var/run/qubes).
//
// Each qube is started first (admin.vm.Start, as qubesadmin's run_service
// does; a paused one is unpaused) unless --no-autostart, which skips qubes
// that are not running ("Qube 'NAME' not started", exit code 1). A command
// goes to qrexec-client as "USER:COMMAND" (USER "DEFAULT" unless -u), run by
// a shell in the qube; with arguments (or --no-shell) the words are quoted
// into one shell command line. A service goes as "USER:QUBESRPC SERVICE
// dom0".
//
// With -p the remote stdio is ours and the exit code the remote one;
// without, the command runs with no input and its output discarded, the
// tool says "Running 'COMMAND' on NAME" and waits for the exit code all the
// same (a service without -p is only started: qrexec-client -e). With
// --filter-escape-chars (the default when stdout is a terminal) the remote
// output is passed through qrexec's filter (bytes other than printable
// ASCII, tab, newline, return, backspace and bell become '_'), stderr too
// when it is a terminal; qrexec-client gets -t/-T as upstream's does.
// --all runs in every running qube that is neither paused nor internal.
//
// --dispvm[=BASE_APPVM] (or "--dispvm BASE_APPVM": argparse's nargs='?' takes
// the next word unless it looks like an option) runs in a new disposable:
// admin.vm.CreateDisposable on BASE_APPVM, or on dom0 for the default
// disposable template, answers the new qube's name; then admin.vm.Start, the
// command as in any qube, and admin.vm.Kill once it is over, also after a
// failure or a SIGINT/SIGTERM/SIGHUP (forwarded to qrexec-client first); the
// admin daemon removes the killed disposable. A disposable's service is
// waited for even without -p (it would be killed under it otherwise).
//
// Differences: Aerie has no GUI, so --gui/--no-gui are accepted and change
// nothing. VMNAME is the first word only without --all/--dispvm (upstream's
// argparse would sometimes take it for the command and the reverse).
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <optional>

#include "base/write_all.hpp"
#include "tools/qvm_support.hpp"

using namespace aerie;
using tools::qvm::ToolCli;

namespace {

struct Options {
    std::optional<std::string> user;
    bool autostart = true;
    bool passio = false;
    std::optional<std::string> localcmd;
    std::optional<bool> gui;
    // nullopt: not given; "": turned off (--no-colour-*)
    std::optional<std::string> color_output, color_stderr;
    bool filter_esc = ::isatty(STDOUT_FILENO) != 0;
    bool service = false, no_shell = false;
    std::optional<std::string> dispvm;  // "" for --dispvm without a qube
    bool all = false;
    std::vector<std::string> exclude;
    std::optional<std::string> vmname;
    std::optional<std::string> cmd;
    std::vector<std::string> cmd_args;
    bool help = false;
};

const char* const kHelp =
    "\n"
    "options:\n"
    "  --verbose, -v         increase verbosity\n"
    "  --quiet, -q           decrease verbosity\n"
    "  --help, -h            show this help message and exit\n"
    "  --user USER, -u USER  run command in a qube as USER (available only from dom0)\n"
    "  --autostart, --auto, -a\n"
    "                        option ignored, this is default\n"
    "  --no-autostart, --no-auto, -n\n"
    "                        do not autostart/unpause qube\n"
    "  --pass-io, -p         pass stdio from remote program\n"
    "  --localcmd COMMAND    with --pass-io, pass stdio to the given program\n"
    "  --gui                 run the command with GUI (Aerie has no GUI: ignored)\n"
    "  --no-gui, --nogui     run the command without GUI\n"
    "  --colour-output COLOUR, --color-output COLOUR\n"
    "                        mark the qube output with given ANSI colour (ie. \"31\" for red)\n"
    "  --colour-stderr COLOUR, --color-stderr COLOUR\n"
    "                        mark the qube stderr with given ANSI colour (ie. \"31\" for red)\n"
    "  --no-colour-output, --no-color-output\n"
    "                        disable colouring the stdio\n"
    "  --no-colour-stderr, --no-color-stderr\n"
    "                        disable colouring the stderr\n"
    "  --filter-escape-chars\n"
    "                        filter terminal escape sequences (default if output is terminal)\n"
    "  --no-filter-escape-chars\n"
    "                        do not filter terminal escape sequences; DANGEROUS when output is a\n"
    "                        terminal emulator\n"
    "  --service             run a qrexec service (named by COMMAND) instead of shell command\n"
    "  --no-shell            treat COMMAND as a simple executable, not a shell command\n"
    "  --dispvm [BASE_APPVM]\n"
    "                        start a service in new Disposable VM; optionally specify base\n"
    "                        AppVM for DispVM\n"
    "  --all                 run command on all running qubes\n"
    "  --exclude EXCLUDE     exclude the qube from --all\n"
    "\n"
    "positional arguments:\n"
    "  VMNAME                a domain name\n"
    "  COMMAND               command or service to run\n"
    "  ARG                   command arguments (implies --no-shell)\n";

// The usage as argparse splits it into words for wrapping.
void set_usage(ToolCli& cli) {
    cli.usage_optionals.insert(
        cli.usage_optionals.end(),
        {"[--user USER]", "[--autostart]", "[--no-autostart]", "[--pass-io]", "[--localcmd COMMAND]", "[--gui]",
         "[--no-gui]", "[--colour-output COLOUR]", "[--colour-stderr COLOUR]", "[--no-colour-output]",
         "[--no-colour-stderr]", "[--filter-escape-chars]", "[--no-filter-escape-chars]", "[--service]",
         "[--no-shell]", "[--dispvm [BASE_APPVM]", "|", "--all]", "[--exclude EXCLUDE]"});
    cli.usage_positionals = {"[VMNAME]", "COMMAND", "..."};
}

// The options, as argparse reads them: long ones with "=VALUE" or the next
// word, short ones clustered ("-pa", "-uUSER"). Options may come before
// COMMAND; everything after COMMAND is its arguments.
class ArgReader {
public:
    ArgReader(ToolCli& cli, Options& opt) : cli_(cli), opt_(opt) {}

    void read(const std::vector<std::string>& args) {
        size_t i = 0;
        bool only_positionals = false;
        while (i < args.size() && !opt_.cmd) {
            const std::string& a = args[i++];
            if (only_positionals || a == "-" || a.size() < 2 || a[0] != '-') {
                positional(a);
                continue;
            }
            if (a == "--") {
                only_positionals = true;
                continue;
            }
            if (a[1] == '-')
                long_option(a, args, i);
            else
                short_options(a, args, i);
        }
        if (opt_.cmd) opt_.cmd_args.assign(args.begin() + static_cast<long>(i), args.end());
        if (opt_.help) {
            std::fputs(tools::qvm::format_usage(cli_.prog(), cli_.usage_optionals, cli_.usage_positionals).c_str(),
                       stdout);
            std::fputs(kHelp, stdout);
            throw tools::qvm::ExitStatus{0};
        }
        if (!opt_.cmd)
            cli_.usage_error(std::string("the following arguments are required: ") +
                             (opt_.vmname ? "COMMAND" : "COMMAND, ARG"));
        if (!unknown_.empty()) cli_.usage_error("unrecognized arguments: " + tools::qvm::join(unknown_, " "));
    }

private:
    ToolCli& cli_;
    Options& opt_;
    std::vector<std::string> unknown_;
    std::string first_target_;  // "--dispvm" or "--all", whichever came first

    void positional(const std::string& word) {
        if (!opt_.vmname && !opt_.all && !opt_.dispvm)
            opt_.vmname = word;
        else
            opt_.cmd = word;
    }

    void target(const char* name) {
        if (first_target_.empty())
            first_target_ = name;
        else if (first_target_ != name)
            cli_.usage_error(std::string("argument ") + name + ": not allowed with argument " + first_target_);
    }

    // A value for `display` (argparse's "--user/-u"): the inline one, else
    // the next word unless that looks like an option.
    std::string value(const std::string& display, const std::optional<std::string>& inline_value,
                      const std::vector<std::string>& args, size_t& i) {
        if (inline_value) return *inline_value;
        if (i < args.size() && !(args[i].size() > 1 && args[i][0] == '-')) return args[i++];
        cli_.usage_error("argument " + display + ": expected one argument");
    }

    void no_value(const std::string& display, const std::optional<std::string>& inline_value) {
        if (inline_value)
            cli_.usage_error("argument " + display + ": ignored explicit argument " + tools::qvm::py_repr(*inline_value));
    }

    // true when `name` is a flag this tool knows (and sets it).
    bool flag(const std::string& name) {
        if (name == "--verbose" || name == "-v") return cli_.add_verbosity(1, 0), true;
        if (name == "--quiet" || name == "-q") return cli_.add_verbosity(0, 1), true;
        if (name == "--help" || name == "-h") return opt_.help = true;
        if (name == "--force-root") return true;
        if (name == "--autostart" || name == "--auto" || name == "-a") return opt_.autostart = true;
        if (name == "--no-autostart" || name == "--no-auto" || name == "-n") return !(opt_.autostart = false);
        if (name == "--pass-io" || name == "-p") return opt_.passio = true;
        if (name == "--gui") return (opt_.gui = true), true;
        if (name == "--no-gui" || name == "--nogui") return (opt_.gui = false), true;
        if (name == "--no-colour-output" || name == "--no-color-output") return (opt_.color_output = ""), true;
        if (name == "--no-colour-stderr" || name == "--no-color-stderr") return (opt_.color_stderr = ""), true;
        if (name == "--filter-escape-chars") return opt_.filter_esc = true;
        if (name == "--no-filter-escape-chars") return !(opt_.filter_esc = false);
        if (name == "--service") return opt_.service = true;
        if (name == "--no-shell") return opt_.no_shell = true;
        if (name == "--all") return target("--all"), opt_.all = true;
        return false;
    }

    // argparse's display name of an option: all its spellings.
    static std::string display_of(const std::string& name) {
        static const std::vector<std::vector<std::string>> spellings = {
            {"--verbose", "-v"},
            {"--quiet", "-q"},
            {"--help", "-h"},
            {"--user", "-u"},
            {"--autostart", "--auto", "-a"},
            {"--no-autostart", "--no-auto", "-n"},
            {"--pass-io", "-p"},
            {"--no-gui", "--nogui"},
            {"--colour-output", "--color-output"},
            {"--colour-stderr", "--color-stderr"},
            {"--no-colour-output", "--no-color-output"},
            {"--no-colour-stderr", "--no-color-stderr"},
        };
        for (const auto& s : spellings)
            if (std::find(s.begin(), s.end(), name) != s.end()) return tools::qvm::join(s, "/");
        return name;
    }

    // true when `name` is an option with a value this tool knows.
    bool with_value(const std::string& name, const std::optional<std::string>& inline_value,
                    const std::vector<std::string>& args, size_t& i) {
        auto take = [&] { return value(display_of(name), inline_value, args, i); };
        if (name == "--user" || name == "-u") return (opt_.user = take()), true;
        if (name == "--localcmd") return (opt_.localcmd = take()), true;
        if (name == "--colour-output" || name == "--color-output") return (opt_.color_output = take()), true;
        if (name == "--colour-stderr" || name == "--color-stderr") return (opt_.color_stderr = take()), true;
        if (name == "--exclude") return opt_.exclude.push_back(take()), true;
        if (name == "--dispvm") {
            // nargs='?': the inline value, else the next word unless it
            // looks like an option.
            target("--dispvm");
            if (inline_value)
                opt_.dispvm = *inline_value;
            else if (i < args.size() && !(args[i].size() > 1 && args[i][0] == '-'))
                opt_.dispvm = args[i++];
            else
                opt_.dispvm = "";
            return true;
        }
        return false;
    }

    void long_option(const std::string& arg, const std::vector<std::string>& args, size_t& i) {
        size_t eq = arg.find('=');
        std::string name = arg.substr(0, eq);
        std::optional<std::string> inline_value;
        if (eq != std::string::npos) inline_value = arg.substr(eq + 1);
        if (with_value(name, inline_value, args, i)) return;
        if (flag(name)) return no_value(display_of(name), inline_value);
        unknown_.push_back(arg);
    }

    void short_options(const std::string& arg, const std::vector<std::string>& args, size_t& i) {
        for (size_t k = 1; k < arg.size(); ++k) {
            std::string name = std::string("-") + arg[k];
            if (name == "-u") {
                std::optional<std::string> rest;
                if (k + 1 < arg.size()) rest = arg.substr(k + 1);
                with_value(name, rest, args, i);
                return;
            }
            if (!flag(name)) {
                if (k == 1)
                    unknown_.push_back(arg);
                else
                    cli_.usage_error("argument " + display_of(std::string("-") + arg[k - 1]) +
                                     ": ignored explicit argument " + tools::qvm::py_repr(arg.substr(k)));
                return;
            }
        }
    }
};

// Python's shlex.quote().
std::string shell_quote(const std::string& word) {
    if (word.empty()) return "''";
    bool safe = std::all_of(word.begin(), word.end(), [](unsigned char c) {
        return std::isalnum(c) || std::strchr("@%+=:,./-_", c) != nullptr;
    });
    if (safe) return word;
    std::string out = "'";
    for (char c : word) {
        if (c == '\'')
            out += "'\"'\"'";
        else
            out += c;
    }
    return out + "'";
}

// qrexec's output filter (qrexec-client -t / -T).
void filter_chars(char* buf, size_t len) {
    for (size_t i = 0; i < len; ++i) {
        unsigned char c = static_cast<unsigned char>(buf[i]);
        if ((c < 0x20 || c > 0x7e) && c != '\t' && c != '\n' && c != '\r' && c != '\b' && c != '\a') buf[i] = '_';
    }
}

std::string self_dir() {
    char buf[PATH_MAX];
    ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n <= 0) return ".";
    std::string path(buf, static_cast<size_t>(n));
    size_t slash = path.rfind('/');
    return slash == std::string::npos ? "." : path.substr(0, slash);
}

using aerie::base::write_all;

// A started process and the pipe ends we read its filtered output from.
struct Child {
    pid_t pid = -1;
    int out_r = -1, err_r = -1;
};

// Runs argv with the given descriptors as its stdio (-1: ours).
pid_t spawn(const std::vector<std::string>& argv, int in, int out, int err, const std::vector<int>& close_in_child) {
    std::fflush(stdout);
    std::fflush(stderr);
    pid_t pid = ::fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        ::signal(SIGPIPE, SIG_DFL);
        sigset_t none;
        sigemptyset(&none);
        ::sigprocmask(SIG_SETMASK, &none, nullptr);
        if (in >= 0) ::dup2(in, STDIN_FILENO);
        if (out >= 0) ::dup2(out, STDOUT_FILENO);
        if (err >= 0) ::dup2(err, STDERR_FILENO);
        for (int fd : close_in_child)
            if (fd > STDERR_FILENO) ::close(fd);
        std::vector<char*> args;
        for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        std::fprintf(stderr, "%s: %s\n", args[0], std::strerror(errno));
        ::_exit(127);
    }
    return pid;
}

// --- the end of a disposable on a signal ---------------------------------------
// With --dispvm, SIGINT, SIGTERM and SIGHUP are passed on to our children
// (qrexec-client, --localcmd) and remembered: once they are gone, the
// disposable is killed and qvm-run exits with 128 + the signal.
volatile sig_atomic_t g_signal = 0;
pid_t g_main_pid = 0;
std::array<volatile sig_atomic_t, 16> g_children{};
volatile sig_atomic_t g_child_count = 0;

void forward_signal(int sig) {
    if (::getpid() != g_main_pid) return;  // a child between fork and exec
    int saved = errno;
    g_signal = sig;
    for (sig_atomic_t i = 0; i < g_child_count; ++i) {
        pid_t pid = static_cast<pid_t>(g_children[static_cast<size_t>(i)]);
        if (pid > 0) ::kill(pid, sig);
    }
    errno = saved;
}

void catch_signals() {
    g_main_pid = ::getpid();
    struct sigaction sa {};
    sa.sa_handler = forward_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
}

void remember_child(pid_t pid) {
    if (pid > 0 && static_cast<size_t>(g_child_count) < g_children.size()) {
        g_children[static_cast<size_t>(g_child_count)] = pid;
        g_child_count = g_child_count + 1;
    }
}

// Blocks those signals while children are started and remembered.
class SignalsHeld {
public:
    SignalsHeld() {
        sigset_t set;
        sigemptyset(&set);
        for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&set, sig);
        ::sigprocmask(SIG_BLOCK, &set, &old_);
    }
    ~SignalsHeld() { ::sigprocmask(SIG_SETMASK, &old_, nullptr); }
    SignalsHeld(const SignalsHeld&) = delete;
    SignalsHeld& operator=(const SignalsHeld&) = delete;

private:
    sigset_t old_;
};

// subprocess's returncode: the exit status, or minus the signal.
int wait_code(pid_t pid) {
    int status = 0;
    while (::waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return 1;
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    if (WIFSIGNALED(status)) return -WTERMSIG(status);
    return 1;
}

// Copies the filtered output of `child` to our stdout/stderr until both end.
void pump_filtered(Child& child) {
    char buf[65536];
    while (child.out_r >= 0 || child.err_r >= 0) {
        pollfd fds[2];
        int n = 0;
        if (child.out_r >= 0) fds[n++] = {child.out_r, POLLIN, 0};
        if (child.err_r >= 0) fds[n++] = {child.err_r, POLLIN, 0};
        if (::poll(fds, static_cast<nfds_t>(n), -1) < 0) {
            if (errno == EINTR) continue;
            break;
        }
        for (int k = 0; k < n; ++k) {
            if (!fds[k].revents) continue;
            int& fd = fds[k].fd == child.out_r ? child.out_r : child.err_r;
            int target = &fd == &child.out_r ? STDOUT_FILENO : STDERR_FILENO;
            ssize_t got = ::read(fd, buf, sizeof buf);
            if (got < 0 && errno == EINTR) continue;
            if (got <= 0) {
                ::close(fd);
                fd = -1;
                continue;
            }
            filter_chars(buf, static_cast<size_t>(got));
            write_all(target, buf, static_cast<size_t>(got));
        }
    }
}

class Runner {
public:
    Runner(ToolCli& cli, const Options& opt) : cli_(cli), opt_(opt) {}

    // print_no_color(): a message on stderr outside of the stderr colour.
    void say(const std::string& message) const {
        const std::string& color = opt_.color_stderr.value_or("");
        if (!color.empty())
            fmt::print(stderr, "\033[0m{}\033[0;{}m\n", message, color);
        else
            fmt::print(stderr, "{}\n", message);
        std::fflush(stderr);
    }

    // Starts the command in `vm`; its processes to wait for are added to
    // `procs`. The qube is started first unless `started` (a disposable).
    void start(const std::string& vm, std::vector<std::pair<std::string, pid_t>>& procs, Child& filtered,
               bool started = false) {
        if (!started) {
            try {
                cli_.client.start(vm);
            } catch (const admin::AdminError& e) {
                if (!e.is_instance_of("QubesVMNotHaltedError")) throw;
            }
        }
        std::string user = opt_.user.value_or("DEFAULT");
        std::string cmdline;
        if (opt_.service) {
            cmdline = user + ":QUBESRPC " + *opt_.cmd + " dom0";
        } else if (!opt_.cmd_args.empty() || opt_.no_shell) {
            std::vector<std::string> words = {shell_quote(*opt_.cmd)};
            for (const auto& a : opt_.cmd_args) words.push_back(shell_quote(a));
            cmdline = user + ":" + tools::qvm::join(words, " ");
        } else {
            cmdline = user + ":" + *opt_.cmd;
        }
        bool filter_out = opt_.passio && !opt_.localcmd && opt_.filter_esc;
        bool filter_err = opt_.passio && !opt_.localcmd && (opt_.filter_esc || ::isatty(STDERR_FILENO));
        // A disposable lives until its service ends: always wait for it.
        bool no_wait = opt_.service && !opt_.passio && !opt_.localcmd && !opt_.dispvm;

        const char* socket_dir = std::getenv("QREXEC_SOCKET_DIR");
        std::vector<std::string> argv = {self_dir() + "/qrexec-client",
                                         std::string("--socket-dir=") +
                                             (socket_dir && *socket_dir ? socket_dir : "/var/run/qubes"),
                                         "-d", vm};
        if (opt_.filter_esc && opt_.passio && !opt_.localcmd) argv.push_back("-t");
        if (filter_err) argv.push_back("-T");
        if (no_wait) argv.push_back("-e");
        argv.push_back(cmdline);

        if (!opt_.passio) {
            int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
            pid_t pid = spawn(argv, null, null, null, {});
            ::close(null);
            return add(vm, pid, procs);
        }
        if (opt_.localcmd) {
            // The local program's stdout feeds the remote stdin and the other
            // way round; stderr stays ours.
            int to_remote[2], from_remote[2];
            if (::pipe2(to_remote, O_CLOEXEC) < 0 || ::pipe2(from_remote, O_CLOEXEC) < 0)
                throw admin::AdminError("QubesException", std::string("pipe: ") + std::strerror(errno));
            pid_t remote = spawn(argv, to_remote[0], from_remote[1], -1, {});
            pid_t local = spawn({"/bin/sh", "-c", *opt_.localcmd}, from_remote[0], to_remote[1], -1, {});
            for (int fd : {to_remote[0], to_remote[1], from_remote[0], from_remote[1]}) ::close(fd);
            add(vm, remote, procs);
            return add(vm, local, procs);
        }
        int out[2] = {-1, -1}, err[2] = {-1, -1};
        if (filter_out && ::pipe2(out, O_CLOEXEC) < 0)
            throw admin::AdminError("QubesException", std::string("pipe: ") + std::strerror(errno));
        if (filter_err && ::pipe2(err, O_CLOEXEC) < 0)
            throw admin::AdminError("QubesException", std::string("pipe: ") + std::strerror(errno));
        pid_t pid = spawn(argv, -1, out[1], err[1], {});
        for (int fd : {out[1], err[1]})
            if (fd >= 0) ::close(fd);
        filtered.out_r = out[0];
        filtered.err_r = err[0];
        add(vm, pid, procs);
    }

private:
    ToolCli& cli_;
    const Options& opt_;

    static void add(const std::string& vm, pid_t pid, std::vector<std::pair<std::string, pid_t>>& procs) {
        if (pid < 0) throw admin::AdminError("QubesException", std::string("fork: ") + std::strerror(errno));
        remember_child(pid);
        procs.emplace_back(vm, pid);
    }
};

bool is_running(const std::string& state) { return state != "Halted" && state != "NA"; }

// A disposable of ours: killed (admin.vm.Kill) when this goes, whatever the
// way out; the admin daemon then removes it. A disposable already halted or
// gone is no error.
class Disposable {
public:
    Disposable(const ToolCli& cli, std::string name) : cli_(cli), name_(std::move(name)) {}
    ~Disposable() { kill(); }
    Disposable(const Disposable&) = delete;
    Disposable& operator=(const Disposable&) = delete;
    const std::string& name() const { return name_; }

    void kill() {
        if (killed_) return;
        killed_ = true;
        try {
            cli_.client.kill(name_);
        } catch (const admin::AdminError& e) {
            if (e.is_instance_of("QubesVMNotStartedError") || e.type() == "QubesVMNotFoundError") return;
            cli_.log_error(name_, std::string("Failed to kill the disposable: ") + e.what());
        } catch (const std::exception& e) {
            cli_.log_error(name_, std::string("Failed to kill the disposable: ") + e.what());
        }
    }

private:
    const ToolCli& cli_;
    std::string name_;
    bool killed_ = false;
};

// A qube name as Qubes allows it, for what admin.vm.CreateDisposable answers.
bool is_qube_name(std::string_view s) {
    if (s.empty() || s.size() > 31 || !std::isalpha(static_cast<unsigned char>(s[0]))) return false;
    return std::all_of(s.begin(), s.end(), [](unsigned char c) {
        return std::isalnum(c) || c == '_' || c == '.' || c == '-';
    });
}

int run(ToolCli& cli, Options& opt, int argc, char** argv) {
    ArgReader(cli, opt).read({argv + std::min(argc, 1), argv + argc});

    // VmNameAction: the qubes named, or all of them (a disposable is none of
    // them: no list needed).
    std::vector<admin::QubeInfo> domains;
    if (opt.all) {
        auto qubes = cli.client.list_qubes();
        tools::qvm::VmNames v{true, opt.exclude, {}};
        domains = tools::qvm::chosen_qubes(cli, v, qubes);
    } else {
        if (!opt.exclude.empty()) cli.usage_error("--exclude can only be used with --all");
        if (!opt.dispvm && opt.vmname) {
            auto qubes = cli.client.list_qubes();
            auto it = std::find_if(qubes.begin(), qubes.end(), [&](const auto& q) { return q.name == *opt.vmname; });
            if (it == qubes.end()) cli.usage_error("no such domain: " + tools::qvm::py_repr(*opt.vmname));
            domains.push_back(*it);
        }
    }

    if (opt.passio) {
        if (!opt.color_output && opt.filter_esc) opt.color_output = "31";
        if (!opt.color_stderr && ::isatty(STDERR_FILENO)) opt.color_stderr = "31";
    }
    if (domains.size() > 1 && opt.passio && !opt.localcmd)
        cli.usage_error("--passio cannot be used when more than 1 qube is chosen and no --localcmd is used");
    if (opt.localcmd && !opt.passio) cli.usage_error("--localcmd have no effect without --pass-io");
    bool color_output = opt.color_output && !opt.color_output->empty();
    bool color_stderr = opt.color_stderr && !opt.color_stderr->empty();
    if (color_output && !opt.filter_esc) cli.usage_error("--color-output must be used with --filter-escape-chars");
    if (opt.service && opt.no_shell) cli.usage_error("--no-shell does not apply to --service");
    if (opt.dispvm && !opt.exclude.empty()) cli.usage_error("Cannot use --exclude with --dispvm");

    int verbose = cli.verbosity() - (opt.passio ? 1 : 0);
    if (opt.all)
        std::erase_if(domains, [&](const admin::QubeInfo& q) {
            std::string state = cli.client.power_state(q.name);
            if (!is_running(state)) return true;
            auto internal = cli.client.get_feature(q.name, "internal");
            if (internal && !internal->empty()) return true;
            return cli.client.power_state(q.name) == "Paused";
        });

    if (color_output) fmt::print("\033[0;{}m", *opt.color_output);
    if (color_stderr) fmt::print(stderr, "\033[0;{}m", *opt.color_stderr);
    std::fflush(stdout);
    std::fflush(stderr);
    auto reset_colors = [&] {
        if (color_output) fmt::print("\033[0m");
        if (color_stderr) fmt::print(stderr, "\033[0m");
        std::fflush(stdout);
        std::fflush(stderr);
    };

    Runner runner(cli, opt);
    int retcode = 0;
    std::vector<std::pair<std::string, pid_t>> procs;
    Child filtered;
    // A failed start: the message, then the processes started so far.
    auto give_up = [&](const std::string& logger, const std::string& message) {
        if (color_output) {
            fmt::print("\033[0m");
            std::fflush(stdout);
        }
        cli.log_error(logger, message);
        reset_colors();
        for (const auto& [name, pid] : procs) wait_code(pid);
        return 255;
    };
    std::optional<Disposable> disposable;  // killed on every way out
    if (opt.dispvm) {
        catch_signals();
        // qubesadmin's DispVM wrapper is named after its method destination.
        std::string wrapper = opt.dispvm->empty() ? "@dispvm" : "@dispvm:" + *opt.dispvm;
        if (verbose > 0) runner.say("Running '" + *opt.cmd + "' on " + wrapper);
        std::string name;
        try {
            name = cli.client.call(opt.dispvm->empty() ? "dom0" : *opt.dispvm, "admin.vm.CreateDisposable");
        } catch (const admin::AdminError& e) {
            return give_up(wrapper, std::string("Failed to create a disposable: ") + e.what());
        }
        if (!is_qube_name(name))
            return give_up(wrapper, "Failed to create a disposable: invalid answer to "
                                    "admin.vm.CreateDisposable: " + tools::qvm::py_repr(name));
        disposable.emplace(cli, name);
        try {
            if (!g_signal) cli.client.start(name);
        } catch (const admin::AdminError& e) {
            return give_up(name, std::string("Failed to start the disposable: ") + e.what());
        }
        try {
            SignalsHeld held;
            if (!g_signal) runner.start(name, procs, filtered, true);
        } catch (const admin::AdminError& e) {
            return give_up(name, e.what());
        }
    }
    for (const auto& vm : domains) {
        try {
            if (!opt.autostart && !is_running(cli.client.power_state(vm.name))) {
                if (verbose > 0) runner.say("Qube '" + vm.name + "' not started");
                retcode = std::max(retcode, 1);
                continue;
            }
            if (cli.client.power_state(vm.name) == "Paused") {
                if (!opt.autostart) {
                    if (verbose > 0) runner.say("Qube '" + vm.name + "' is paused");
                    retcode = std::max(retcode, 1);
                    continue;
                }
                try {
                    cli.client.unpause(vm.name);
                } catch (const admin::AdminError&) {
                    if (verbose > 0) runner.say("Qube '" + vm.name + "' cannot be unpaused");
                    retcode = std::max(retcode, 1);
                    continue;
                }
            }
            if (verbose > 0) runner.say("Running '" + *opt.cmd + "' on " + vm.name);
            runner.start(vm.name, procs, filtered);
        } catch (const admin::AdminError& e) {
            return give_up(vm.name, e.what());
        }
    }
    pump_filtered(filtered);
    for (const auto& [name, pid] : procs) {
        int code = wait_code(pid);
        if (code != 0 && verbose > 0) runner.say(name + ": command failed with code: " + std::to_string(code));
        retcode = std::max(retcode, code);
    }
    reset_colors();
    if (disposable) disposable->kill();
    if (g_signal) return 128 + g_signal;
    return retcode;
}

}  // namespace

int main(int argc, char** argv) {
    ToolCli cli("", "qvm-run");
    Options opt;
    set_usage(cli);
    ::signal(SIGPIPE, SIG_IGN);
    return tools::qvm::run_tool(cli, [&] { return run(cli, opt, argc, argv); });
}
