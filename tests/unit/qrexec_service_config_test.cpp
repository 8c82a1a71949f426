#include <gtest/gtest.h>

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>

#include "qrexec/service_config.hpp"

namespace aerie::qrexec {
namespace {

namespace fs = std::filesystem;

// A fresh directory, removed with everything in it at the end of the test.
class TempDir {
public:
    TempDir() {
        std::string tmpl = (fs::temp_directory_path() / "aerie-svc-XXXXXX").string();
        if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;

    std::string path() const { return path_.string(); }
    std::string sub(const std::string& name) const {
        fs::create_directories(path_ / name);
        return (path_ / name).string();
    }

private:
    fs::path path_;
};

void write_file(const std::string& path, const std::string& content, bool executable) {
    {
        std::ofstream out(path, std::ios::binary);
        out << content;
    }
    ::chmod(path.c_str(), executable ? 0755 : 0644);
}

void make_socket(const std::string& path) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    ASSERT_LT(path.size(), sizeof addr.sun_path);
    std::copy(path.begin(), path.end(), addr.sun_path);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
    ::close(fd);  // the socket file stays
}

void make_link(const std::string& target, const std::string& path) {
    ASSERT_EQ(::symlink(target.c_str(), path.c_str()), 0);
}

ParsedCmdline parse_ok(std::string_view line, CmdlineUser mode = CmdlineUser::Required) {
    std::string error;
    auto cmd = parse_cmdline(line, &error, mode);
    EXPECT_TRUE(cmd.has_value()) << line << ": " << error;
    return cmd ? *cmd : ParsedCmdline{};
}

std::string parse_error(std::string_view line, CmdlineUser mode = CmdlineUser::Required) {
    std::string error;
    auto cmd = parse_cmdline(line, &error, mode);
    EXPECT_FALSE(cmd.has_value()) << line;
    EXPECT_FALSE(error.empty()) << line;
    return error;
}

// --- command line ------------------------------------------------------------

TEST(QrexecCmdline, ServiceCallFields) {
    auto cmd = parse_ok("user:QUBESRPC qubes.Filecopy+some-arg work");
    EXPECT_EQ(cmd.user, "user");
    EXPECT_FALSE(cmd.nogui);
    EXPECT_TRUE(cmd.is_qubesrpc);
    EXPECT_EQ(cmd.command, "QUBESRPC qubes.Filecopy+some-arg work");
    EXPECT_EQ(cmd.service_and_arg, "qubes.Filecopy+some-arg");
    EXPECT_EQ(cmd.service, "qubes.Filecopy");
    EXPECT_EQ(cmd.argument, "some-arg");
    EXPECT_EQ(cmd.source, "work");
    EXPECT_FALSE(cmd.target_type);
    EXPECT_FALSE(cmd.target);
}

TEST(QrexecCmdline, DefaultUserIsKeptRaw) {
    auto cmd = parse_ok("DEFAULT:QUBESRPC qubes.GetDate+ dom0");
    EXPECT_EQ(cmd.user, "DEFAULT");
    EXPECT_TRUE(cmd.default_user());
    EXPECT_FALSE(parse_ok("root:QUBESRPC a+ b").default_user());
}

TEST(QrexecCmdline, NoguiPrefix) {
    auto cmd = parse_ok("user:nogui:QUBESRPC svc+x src");
    EXPECT_TRUE(cmd.nogui);
    EXPECT_TRUE(cmd.is_qubesrpc);
    EXPECT_EQ(cmd.service_and_arg, "svc+x");
    EXPECT_EQ(cmd.command, "QUBESRPC svc+x src");
}

TEST(QrexecCmdline, ShellCommand) {
    auto cmd = parse_ok("root:ls -l /tmp");
    EXPECT_EQ(cmd.user, "root");
    EXPECT_FALSE(cmd.is_qubesrpc);
    EXPECT_EQ(cmd.command, "ls -l /tmp");
    auto ng = parse_ok("user:nogui:echo hi");
    EXPECT_TRUE(ng.nogui);
    EXPECT_FALSE(ng.is_qubesrpc);
    EXPECT_EQ(ng.command, "echo hi");
    // The user ends at the first colon; the rest is the command.
    auto colon = parse_ok("u:a:b");
    EXPECT_EQ(colon.user, "u");
    EXPECT_EQ(colon.command, "a:b");
}

TEST(QrexecCmdline, MissingUserColonIsAnError) {
    parse_error("QUBESRPC svc+ src");
    parse_error("");
}

TEST(QrexecCmdline, QubesRpcNeedsSpace) {
    parse_error("user:QUBESRPC");
    parse_error("user:QUBESRPCsvc+ src");
}

TEST(QrexecCmdline, TokenCount) {
    parse_error("user:QUBESRPC svc+");               // no source
    parse_error("user:QUBESRPC svc+ src name");      // type without target
    parse_error("user:QUBESRPC svc+ src name t x");  // five tokens
    parse_ok("user:QUBESRPC svc+ src name t");
}

TEST(QrexecCmdline, EmptyTokensAreErrors) {
    parse_error("user:QUBESRPC  svc+ src");
    parse_error("user:QUBESRPC svc+  src");
    parse_error("user:QUBESRPC svc+ src ");
    parse_error("user:QUBESRPC svc+ src name ");
}

TEST(QrexecCmdline, TargetTypes) {
    auto kw = parse_ok("QUBESRPC admin.vm.List+ work keyword adminvm", CmdlineUser::Absent);
    EXPECT_EQ(kw.user, "");
    EXPECT_EQ(kw.target_type, "keyword");
    EXPECT_EQ(kw.target, "adminvm");
    auto name = parse_ok("user:QUBESRPC svc+ work name dom0");
    EXPECT_EQ(name.target_type, "name");
    EXPECT_EQ(name.target, "dom0");
    parse_error("user:QUBESRPC svc+ work other dom0");
}

TEST(QrexecCmdline, WithoutUserMode) {
    auto cmd = parse_ok("nogui:QUBESRPC svc+a src name dom0", CmdlineUser::Absent);
    EXPECT_TRUE(cmd.nogui);
    EXPECT_EQ(cmd.service_and_arg, "svc+a");
    EXPECT_EQ(cmd.source, "src");
    // Without user handling, "user:" is simply part of a shell command.
    auto shell = parse_ok("user:QUBESRPC svc+ src", CmdlineUser::Absent);
    EXPECT_FALSE(shell.is_qubesrpc);
}

TEST(QrexecCmdline, ServiceName) {
    parse_error("user:QUBESRPC +arg src");
    auto bare = parse_ok("user:QUBESRPC svc src");
    EXPECT_EQ(bare.service, "svc");
    EXPECT_EQ(bare.argument, "");
    EXPECT_EQ(bare.service_and_arg, "svc+");
    auto empty_arg = parse_ok("user:QUBESRPC svc+ src");
    EXPECT_EQ(empty_arg.argument, "");
    EXPECT_EQ(empty_arg.service_and_arg, "svc+");
    auto plus_in_arg = parse_ok("user:QUBESRPC svc+a+b src");
    EXPECT_EQ(plus_in_arg.service, "svc");
    EXPECT_EQ(plus_in_arg.argument, "a+b");
}

TEST(QrexecCmdline, LengthLimits) {
    parse_ok("user:QUBESRPC " + std::string(kNameMax, 's') + "+ src");
    parse_error("user:QUBESRPC " + std::string(kNameMax + 1, 's') + "+ src");
    // A long argument is fine up to the service-name limit of the protocol.
    parse_ok("user:QUBESRPC s+" + std::string(60000, 'a') + " src");
    parse_error("user:QUBESRPC s+" + std::string(65000, 'a') + " src");
}

// --- lookup ------------------------------------------------------------------

TEST(QrexecServiceLookup, SplitPathList) {
    EXPECT_EQ(split_path_list("/a:/b::/c:"), (std::vector<std::string>{"/a", "/b", "/c"}));
    EXPECT_EQ(split_path_list(":/a"), (std::vector<std::string>{"/a"}));
    EXPECT_TRUE(split_path_list("").empty());
}

TEST(QrexecServiceLookup, PathsFromEnvironment) {
    ::unsetenv(kServicePathEnv);
    ::unsetenv(kRpcConfigPathEnv);
    EXPECT_EQ(service_path_from_env(), "/run/qubes-rpc:/usr/local/etc/qubes-rpc:/etc/qubes-rpc");
    EXPECT_EQ(rpc_config_path_from_env(),
              "/run/qubes/rpc-config:/usr/local/etc/qubes/rpc-config:/etc/qubes/rpc-config");
    ::setenv(kServicePathEnv, "/x:/y", 1);
    ::setenv(kRpcConfigPathEnv, "/z", 1);
    EXPECT_EQ(service_path_from_env(), "/x:/y");
    EXPECT_EQ(rpc_config_path_from_env(), "/z");
    ::unsetenv(kServicePathEnv);
    ::unsetenv(kRpcConfigPathEnv);
}

TEST(QrexecServiceLookup, NotFound) {
    TempDir t;
    auto path = t.sub("a") + ":" + t.sub("b") + ":" + t.path() + "/missing";
    auto r = find_service("qubes.Nothing+x", path);
    EXPECT_TRUE(std::holds_alternative<ServiceNotFound>(r));
    EXPECT_EQ(lookup_failure_exit_code(r), 127);
}

TEST(QrexecServiceLookup, FullNameInAnyDirBeatsBareName) {
    TempDir t;
    auto a = t.sub("a"), b = t.sub("b");
    write_file(a + "/svc", "#!/bin/sh\n", true);
    write_file(b + "/svc+arg", "#!/bin/sh\n", true);
    auto r = find_service("svc+arg", a + ":" + b);
    ASSERT_TRUE(std::holds_alternative<ExecutableService>(r));
    EXPECT_EQ(std::get<ExecutableService>(r).path, b + "/svc+arg");
    EXPECT_EQ(lookup_failure_exit_code(r), 0);
    // Another argument falls back to the bare name.
    auto other = find_service("svc+other", a + ":" + b);
    ASSERT_TRUE(std::holds_alternative<ExecutableService>(other));
    EXPECT_EQ(std::get<ExecutableService>(other).path, a + "/svc");
}

TEST(QrexecServiceLookup, DirectoriesInOrder) {
    TempDir t;
    auto a = t.sub("a"), b = t.sub("b");
    write_file(a + "/svc+x", "", true);
    write_file(b + "/svc+x", "", true);
    write_file(a + "/bare", "", true);
    write_file(b + "/bare", "", true);
    EXPECT_EQ(std::get<ExecutableService>(find_service("svc+x", a + ":" + b)).path, a + "/svc+x");
    EXPECT_EQ(std::get<ExecutableService>(find_service("svc+x", b + ":" + a)).path, b + "/svc+x");
    EXPECT_EQ(std::get<ExecutableService>(find_service("bare+", b + ":" + a)).path, b + "/bare");
}

TEST(QrexecServiceLookup, EmptyArgumentLooksForPlusFileFirst) {
    TempDir t;
    auto a = t.sub("a");
    write_file(a + "/svc", "", true);
    write_file(a + "/svc+", "", true);
    EXPECT_EQ(std::get<ExecutableService>(find_service("svc+", a)).path, a + "/svc+");
    EXPECT_EQ(std::get<ExecutableService>(find_service("svc", a)).path, a + "/svc+");
}

TEST(QrexecServiceLookup, NonExecutableAndDirectoryAreInvalid) {
    TempDir t;
    auto a = t.sub("a"), b = t.sub("b");
    write_file(a + "/plain", "", false);
    write_file(b + "/plain", "", true);  // never reached: the first entry decides
    auto r = find_service("plain+", a + ":" + b);
    ASSERT_TRUE(std::holds_alternative<InvalidService>(r));
    EXPECT_EQ(std::get<InvalidService>(r).path, a + "/plain");
    EXPECT_EQ(lookup_failure_exit_code(r), 125);
    fs::create_directory(a + "/dir");
    EXPECT_TRUE(std::holds_alternative<InvalidService>(find_service("dir+", a)));
}

// As in Qubes: a link to a missing file is passed over; one whose target
// cannot be reached at all (a path through a file) stops the search (125).
TEST(QrexecServiceLookup, DanglingSymlinkIsPassedOver) {
    TempDir t;
    auto a = t.sub("a"), b = t.sub("b");
    make_link(t.path() + "/nowhere", a + "/svc");
    write_file(b + "/svc", "", true);
    auto r = find_service("svc+", a + ":" + b);
    ASSERT_TRUE(std::holds_alternative<ExecutableService>(r));
    EXPECT_EQ(std::get<ExecutableService>(r).path, b + "/svc");
    EXPECT_TRUE(std::holds_alternative<ServiceNotFound>(find_service("svc+", a)));
}

TEST(QrexecServiceLookup, UnreachableSpecificLinkIsAProblem) {
    TempDir t;
    auto a = t.sub("a");
    make_link("/dev/null/invalid", a + "/svc+arg");
    write_file(a + "/svc", "", true);
    auto r = find_service("svc+arg", a);
    ASSERT_TRUE(std::holds_alternative<InvalidService>(r));
    EXPECT_EQ(lookup_failure_exit_code(r), 125);
}

TEST(QrexecServiceLookup, SymlinkToExecutable) {
    TempDir t;
    auto a = t.sub("a");
    write_file(t.path() + "/real", "#!/bin/sh\n", true);
    make_link(t.path() + "/real", a + "/svc");
    auto r = find_service("svc+arg", a);
    ASSERT_TRUE(std::holds_alternative<ExecutableService>(r));
    EXPECT_EQ(std::get<ExecutableService>(r).path, a + "/svc");
}

TEST(QrexecServiceLookup, UnixSocket) {
    TempDir t;
    auto a = t.sub("a");
    make_socket(a + "/sock+arg");
    auto r = find_service("sock+arg", a);
    ASSERT_TRUE(std::holds_alternative<UnixSocketService>(r));
    EXPECT_EQ(std::get<UnixSocketService>(r).path, a + "/sock+arg");
}

TEST(QrexecServiceLookup, TcpSymlinks) {
    TempDir t;
    auto a = t.sub("a");
    make_link("/dev/tcp/127.0.0.1/22", a + "/fixed");
    make_link("/dev/tcp/127.0.0.1", a + "/port");
    make_link("/dev/tcp", a + "/any");
    make_link("/dev/tcp/::1/8080", a + "/six");

    auto fixed = find_service("fixed+ignored", a);
    ASSERT_TRUE(std::holds_alternative<TcpService>(fixed));
    EXPECT_EQ(std::get<TcpService>(fixed).host, "127.0.0.1");
    EXPECT_EQ(std::get<TcpService>(fixed).port, 22);
    EXPECT_EQ(std::get<TcpService>(fixed).path, a + "/fixed");

    auto port = find_service("port+8080", a);
    ASSERT_TRUE(std::holds_alternative<TcpService>(port));
    EXPECT_EQ(std::get<TcpService>(port).host, "127.0.0.1");
    EXPECT_EQ(std::get<TcpService>(port).port, 8080);

    auto any = find_service("any+10.1.2.3+443", a);
    ASSERT_TRUE(std::holds_alternative<TcpService>(any));
    EXPECT_EQ(std::get<TcpService>(any).host, "10.1.2.3");
    EXPECT_EQ(std::get<TcpService>(any).port, 443);

    auto six = find_service("six+", a);
    ASSERT_TRUE(std::holds_alternative<TcpService>(six));
    EXPECT_EQ(std::get<TcpService>(six).host, "::1");

    // Bad argument for the link: an invalid service, not a missing one.
    auto bad = find_service("port+0022", a);
    ASSERT_TRUE(std::holds_alternative<InvalidService>(bad));
    EXPECT_EQ(lookup_failure_exit_code(bad), 125);
    EXPECT_TRUE(std::holds_alternative<InvalidService>(find_service("port+", a)));
    EXPECT_TRUE(std::holds_alternative<InvalidService>(find_service("any+localhost+80", a)));
}

TEST(QrexecServiceLookup, TcpTargetForms) {
    std::string why;
    auto t1 = parse_tcp_target("/dev/tcp/192.168.0.1/65535", "whatever", &why);
    ASSERT_TRUE(t1) << why;
    EXPECT_EQ(t1->host, "192.168.0.1");
    EXPECT_EQ(t1->port, 65535);
    auto t2 = parse_tcp_target("/dev/tcp/[fe80::1]", "1", &why);
    ASSERT_TRUE(t2) << why;
    EXPECT_EQ(t2->host, "fe80::1");
    EXPECT_EQ(t2->port, 1);
    // In an argument ':' cannot appear: '+' stands for it in the host part.
    auto t3 = parse_tcp_target("/dev/tcp", "++1+22", &why);
    ASSERT_TRUE(t3) << why;
    EXPECT_EQ(t3->host, "::1");
    EXPECT_EQ(t3->port, 22);
    auto t4 = parse_tcp_target("/dev/tcp/fe80::1%eth0/80", "", &why);
    ASSERT_TRUE(t4) << why;
    EXPECT_EQ(t4->host, "fe80::1%eth0");
}

TEST(QrexecServiceLookup, TcpTargetRejects) {
    auto bad = [](std::string_view link, std::string_view arg) {
        std::string why;
        bool rejected = !parse_tcp_target(link, arg, &why).has_value();
        EXPECT_TRUE(rejected) << link << " arg " << arg;
        EXPECT_TRUE(!rejected || !why.empty());
    };
    bad("/dev/tcp/127.0.0.1/0", "");
    bad("/dev/tcp/127.0.0.1/65536", "");
    bad("/dev/tcp/127.0.0.1/080", "");
    bad("/dev/tcp/127.0.0.1/8x", "");
    bad("/dev/tcp/127.0.0.1/+80", "");
    bad("/dev/tcp/127.0.0.1/", "");
    bad("/dev/tcp/127.0.0.1/22/x", "");
    bad("/dev/tcp/127.0.0.1", "");
    bad("/dev/tcp/127.0.0.1", "99999999");
    bad("/dev/tcp/localhost/22", "");
    bad("/dev/tcp/127.1/22", "");
    bad("/dev/tcp/1.2.3.4.5/22", "");
    bad("/dev/tcp/[127.0.0.1]/22", "");
    bad("/dev/tcp/::g/22", "");
    bad("/dev/tcp/fe80::1%/22", "");
    bad("/dev/tcp//22", "");
    bad("/dev/tcp/", "1.2.3.4+22");
    bad("/dev/tcp", "1.2.3.4");
    bad("/dev/tcp", "+22");
    bad("/dev/tcp", "1.2.3.4+");
    bad("/dev/tcpx/1.2.3.4/22", "");
    bad("/dev/udp/1.2.3.4/22", "");
}

TEST(QrexecServiceLookup, UnusableNames) {
    TempDir t;
    auto a = t.sub("a");
    write_file(a + "/svc", "", true);
    EXPECT_TRUE(std::holds_alternative<InvalidService>(find_service("+arg", a)));
    EXPECT_TRUE(std::holds_alternative<InvalidService>(find_service("svc+a/b", a)));
    EXPECT_TRUE(std::holds_alternative<InvalidService>(find_service("../a/svc+", a)));
    EXPECT_TRUE(std::holds_alternative<InvalidService>(find_service("..+", a)));
    EXPECT_TRUE(std::holds_alternative<InvalidService>(
        find_service(std::string(kNameMax + 1, 's') + "+", a)));
}

TEST(QrexecServiceLookup, OverlongFullNameUsesBareName) {
    TempDir t;
    auto a = t.sub("a");
    write_file(a + "/svc", "", true);
    auto r = find_service("svc+" + std::string(300, 'x'), a);
    ASSERT_TRUE(std::holds_alternative<ExecutableService>(r));
    EXPECT_EQ(std::get<ExecutableService>(r).path, a + "/svc");
}

// --- rpc-config ----------------------------------------------------------------

RpcConfig config_ok(std::string_view text) {
    std::string error;
    auto c = parse_rpc_config(text, &error, "cfg");
    EXPECT_TRUE(c.has_value()) << text << ": " << error;
    return c ? *c : RpcConfig{};
}

std::string config_error(std::string_view text) {
    std::string error;
    auto c = parse_rpc_config(text, &error, "cfg");
    EXPECT_FALSE(c.has_value()) << text;
    EXPECT_FALSE(error.empty()) << text;
    return error;
}

TEST(QrexecRpcConfig, Defaults) {
    auto c = config_ok("");
    EXPECT_FALSE(c.wait_for_session);
    EXPECT_FALSE(c.force_user);
    EXPECT_FALSE(c.skip_service_descriptor);
    EXPECT_FALSE(c.exit_on_service_eof);
    EXPECT_FALSE(c.exit_on_client_eof);
    EXPECT_TRUE(c.warnings.empty());
}

TEST(QrexecRpcConfig, AllKeysAndSpacing) {
    auto c = config_ok("wait-for-session=true\nforce-user = 'alice'\n");
    EXPECT_TRUE(c.wait_for_session);
    EXPECT_EQ(c.force_user, "alice");
    auto s = config_ok("skip-service-descriptor\t=\ttrue\nexit-on-service-eof= true\n"
                       "exit-on-client-eof =true\n");
    EXPECT_TRUE(s.skip_service_descriptor);
    EXPECT_TRUE(s.exit_on_service_eof);
    EXPECT_TRUE(s.exit_on_client_eof);
    auto f = config_ok("skip-service-descriptor = false\nwait-for-session = false\n");
    EXPECT_FALSE(f.skip_service_descriptor);
    EXPECT_FALSE(f.wait_for_session);
}

TEST(QrexecRpcConfig, CommentsAndBlankLines) {
    auto c = config_ok("# a comment\n\n   \nwait-for-session = true # why\n"
                       "force-user = 'bob'   # who\n#force-user='x'\n");
    EXPECT_TRUE(c.wait_for_session);
    EXPECT_EQ(c.force_user, "bob");
}

TEST(QrexecRpcConfig, WaitForSessionAcceptsZeroOne) {
    EXPECT_TRUE(config_ok("wait-for-session = 1\n").wait_for_session);
    EXPECT_FALSE(config_ok("wait-for-session = 0\n").wait_for_session);
    config_error("wait-for-session = 2\n");
    config_error("wait-for-session = 01\n");
    config_error("wait-for-session = 'true'\n");
    config_error("wait-for-session = yes\n");
    config_error("wait-for-session = True\n");
    config_error("wait-for-session = truex\n");
}

TEST(QrexecRpcConfig, SocketOptionsAreStrictBooleans) {
    config_error("skip-service-descriptor = 1\n");
    config_error("exit-on-service-eof = 0\n");
    config_error("exit-on-client-eof = 'true'\n");
}

TEST(QrexecRpcConfig, ForceUserIsAQuotedString) {
    config_error("force-user = alice\n");
    config_error("force-user = \"alice\"\n");
    config_error("force-user = 'alice\n");
    config_error("force-user = '''alice'''\n");
    config_error("force-user = true\n");
    config_error("force-user = 1000\n");
    config_error("force-user = ''\n");
    config_error("force-user = 'alice' bob\n");
}

TEST(QrexecRpcConfig, DuplicateKeysAreErrors) {
    auto e = config_error("wait-for-session = true\n# x\nwait-for-session = true\n");
    EXPECT_EQ(e.rfind("cfg:3: ", 0), 0u) << e;
    config_error("force-user = 'a'\nforce-user = 'a'\n");
    config_error("skip-service-descriptor = true\nskip-service-descriptor = false\n");
    config_error("exit-on-client-eof = true\nexit-on-client-eof = true\n");
}

TEST(QrexecRpcConfig, UnknownKeysAreIgnoredWithWarning) {
    auto c = config_ok("frobnicate = 'x'\nfrobnicate = anything at all\nwait-for-session = 1\n");
    EXPECT_TRUE(c.wait_for_session);
    ASSERT_EQ(c.warnings.size(), 2u);
    EXPECT_NE(c.warnings[0].find("frobnicate"), std::string::npos);
    EXPECT_EQ(c.warnings[0].rfind("cfg:1: ", 0), 0u);
}

TEST(QrexecRpcConfig, MalformedLines) {
    config_error("[section]\n");
    config_error("  wait-for-session = true\n");
    config_error("wait-for-session true\n");
    config_error("wait-for-session =\n");
    config_error("=true\n");
    config_error("1key = true\n");
    config_error("wait for session = true\n");
    config_error(std::string("wait-for-session = true\0\n", 25));
}

TEST(QrexecRpcConfig, LineEndings) {
    auto crlf = config_ok("wait-for-session = true\r\nforce-user = 'u'\r\n");
    EXPECT_TRUE(crlf.wait_for_session);
    EXPECT_EQ(crlf.force_user, "u");
    auto no_nl = config_ok("wait-for-session = true");
    EXPECT_TRUE(no_nl.wait_for_session);
    EXPECT_EQ(no_nl.warnings.size(), 1u);
}

TEST(QrexecRpcConfig, ForceUserConflictsWithSocketOptions) {
    config_error("force-user = 'u'\nskip-service-descriptor = true\n");
    config_error("exit-on-service-eof = true\nforce-user = 'u'\n");
    config_error("force-user = 'u'\nexit-on-client-eof = true\n");
    auto ok = config_ok("force-user = 'u'\nskip-service-descriptor = false\n");
    EXPECT_EQ(ok.force_user, "u");
}

TEST(QrexecRpcConfig, ErrorNamesOriginAndLine) {
    auto e = config_error("\n\nwait-for-session = maybe\n");
    EXPECT_EQ(e.rfind("cfg:3: ", 0), 0u) << e;
}

TEST(QrexecRpcConfig, LoadSearchOrder) {
    TempDir t;
    auto a = t.sub("a"), b = t.sub("b");
    // No file: defaults.
    std::string error;
    auto none = load_rpc_config("svc+arg", a + ":" + b, &error);
    ASSERT_TRUE(none) << error;
    EXPECT_TRUE(none->path.empty());
    EXPECT_FALSE(none->wait_for_session);

    write_file(a + "/svc", "force-user = 'bare'\n", false);
    write_file(b + "/svc+arg", "force-user = 'full'\n", false);
    auto full = load_rpc_config("svc+arg", a + ":" + b, &error);
    ASSERT_TRUE(full) << error;
    EXPECT_EQ(full->force_user, "full");
    EXPECT_EQ(full->path, b + "/svc+arg");
    auto bare = load_rpc_config("svc+other", a + ":" + b, &error);
    ASSERT_TRUE(bare) << error;
    EXPECT_EQ(bare->force_user, "bare");

    write_file(b + "/svc", "force-user = 'second'\n", false);
    EXPECT_EQ(load_rpc_config("svc+", a + ":" + b, &error)->force_user, "bare");
    EXPECT_EQ(load_rpc_config("svc+", b + ":" + a, &error)->force_user, "second");
}

TEST(QrexecRpcConfig, LoadInvalidFileFails) {
    TempDir t;
    auto a = t.sub("a"), b = t.sub("b");
    write_file(a + "/svc", "wait-for-session = true\nwait-for-session = false\n", false);
    write_file(b + "/svc", "wait-for-session = true\n", false);  // not consulted
    std::string error;
    EXPECT_FALSE(load_rpc_config("svc+x", a + ":" + b, &error));
    EXPECT_EQ(error.rfind(a + "/svc:2: ", 0), 0u) << error;
    fs::create_directory(b + "/dir");
    EXPECT_FALSE(load_rpc_config("dir+", b, &error));
}

// A config that exists but cannot be reached fails the call (as in Qubes);
// only a missing one means the defaults.
TEST(QrexecRpcConfig, UnreachableFileFails) {
    TempDir t;
    auto a = t.sub("a");
    make_link("/dev/null/doesnotexist", a + "/svc+arg");
    std::string error;
    EXPECT_FALSE(load_rpc_config("svc+arg", a, &error));
    make_link("/dev/null/doesnotexist", t.path() + "/cfg");
    EXPECT_FALSE(load_rpc_config("svc+arg", t.path() + "/cfg", &error));
    make_link(t.path() + "/nowhere", a + "/other");
    EXPECT_TRUE(load_rpc_config("other+", a, &error));
}

TEST(QrexecRpcConfig, ConnectTcpAsShipped) {
    TempDir t;
    auto rpc = t.sub("rpc"), cfg = t.sub("cfg");
    make_link(kConnectTcpLinkTarget, rpc + "/" + kConnectTcpService);
    write_file(cfg + "/" + kConnectTcpService, kConnectTcpRpcConfig, false);
    auto lookup = find_service(std::string(kConnectTcpService) + "+22", rpc);
    ASSERT_TRUE(std::holds_alternative<TcpService>(lookup));
    EXPECT_EQ(std::get<TcpService>(lookup).host, "127.0.0.1");
    EXPECT_EQ(std::get<TcpService>(lookup).port, 22);
    std::string error;
    auto config = load_rpc_config(std::string(kConnectTcpService) + "+22", cfg, &error);
    ASSERT_TRUE(config) << error;
    EXPECT_TRUE(config->skip_service_descriptor);
    EXPECT_TRUE(config->exit_on_service_eof);
    EXPECT_FALSE(config->exit_on_client_eof);
    EXPECT_FALSE(check_config_for_service(*config, lookup));
}

// Ignored for executables (as in Qubes), with a warning to log.
TEST(QrexecRpcConfig, SocketOptionsIgnoredForExecutables) {
    RpcConfig c;
    c.skip_service_descriptor = true;
    EXPECT_TRUE(check_config_for_service(c, ExecutableService{"/x"}));
    EXPECT_FALSE(check_config_for_service(c, UnixSocketService{"/x"}));
    EXPECT_FALSE(check_config_for_service(c, TcpService{"127.0.0.1", 1, "/x"}));
    RpcConfig e;
    e.exit_on_client_eof = true;
    EXPECT_TRUE(check_config_for_service(e, ExecutableService{"/x"}));
    EXPECT_FALSE(check_config_for_service(RpcConfig{}, ExecutableService{"/x"}));
}

TEST(QrexecRpcConfig, UserAndSession) {
    auto cmd = parse_ok("user:QUBESRPC svc+ src");
    RpcConfig c;
    EXPECT_EQ(effective_user(cmd, c), "user");
    c.force_user = "root";
    EXPECT_EQ(effective_user(cmd, c), "root");
    EXPECT_FALSE(should_wait_for_session(cmd, c));
    c.wait_for_session = true;
    EXPECT_TRUE(should_wait_for_session(cmd, c));
    auto nogui = parse_ok("user:nogui:QUBESRPC svc+ src");
    EXPECT_FALSE(should_wait_for_session(nogui, c));
}

// --- environment, argv, descriptor ---------------------------------------------------

std::vector<std::string> qrexec_vars(const std::vector<std::string>& env) {
    std::vector<std::string> out;
    for (const auto& e : env)
        if (e.rfind("QREXEC_", 0) == 0) out.push_back(e);
    std::sort(out.begin(), out.end());
    return out;
}

TEST(QrexecServiceEnv, ScrubsAndSets) {
    std::vector<std::string> base{
        "PATH=/usr/bin",
        "QREXEC_SERVICE_ARGUMENT=%did_not_get_unset",
        "QREXEC_REQUESTED_TARGET=%did_not_get_unset",
        "QREXEC_REQUESTED_TARGET_KEYWORD=%did_not_get_unset",
        "QREXEC_REQUESTED_TARGET_TYPE=%did_not_get_unset",
        "QREXEC_REMOTE_DOMAIN=%did_not_get_unset",
        "QREXEC_SERVICE_FULL_NAME=%did_not_get_unset",
        "QREXEC_SERVICE_PATH=/keep",
        "HOME=/home/user",
    };
    auto env = build_service_env(base, parse_ok("user:QUBESRPC qubes.Svc+the-arg work"));
    EXPECT_EQ(qrexec_vars(env), (std::vector<std::string>{
                                    "QREXEC_REMOTE_DOMAIN=work",
                                    "QREXEC_REQUESTED_TARGET_TYPE=",
                                    "QREXEC_SERVICE_ARGUMENT=the-arg",
                                    "QREXEC_SERVICE_FULL_NAME=qubes.Svc+the-arg",
                                    "QREXEC_SERVICE_PATH=/keep",
                                }));
    // Other variables keep their order, ahead of the computed ones.
    EXPECT_EQ(env[0], "PATH=/usr/bin");
    EXPECT_EQ(env[2], "HOME=/home/user");
}

// A call without '+' keeps its name as called and has no argument variable;
// a '+' with nothing after it is an empty argument, set as such (as in Qubes).
TEST(QrexecServiceEnv, NoPlusNoArgumentVariable) {
    auto env = build_service_env({"QREXEC_SERVICE_ARGUMENT=stale"},
                                 parse_ok("user:QUBESRPC qubes.Svc work"));
    EXPECT_EQ(qrexec_vars(env), (std::vector<std::string>{
                                    "QREXEC_REMOTE_DOMAIN=work",
                                    "QREXEC_REQUESTED_TARGET_TYPE=",
                                    "QREXEC_SERVICE_FULL_NAME=qubes.Svc",
                                }));
}

TEST(QrexecServiceEnv, EmptyArgumentIsSet) {
    auto env = build_service_env({"QREXEC_SERVICE_ARGUMENT=stale"},
                                 parse_ok("user:QUBESRPC qubes.Svc+ work"));
    EXPECT_EQ(qrexec_vars(env), (std::vector<std::string>{
                                    "QREXEC_REMOTE_DOMAIN=work",
                                    "QREXEC_REQUESTED_TARGET_TYPE=",
                                    "QREXEC_SERVICE_ARGUMENT=",
                                    "QREXEC_SERVICE_FULL_NAME=qubes.Svc+",
                                }));
}

TEST(QrexecServiceEnv, NameTarget) {
    auto env = build_service_env({"QREXEC_REQUESTED_TARGET_KEYWORD=stale"},
                                 parse_ok("QUBESRPC svc+a work name dom0", CmdlineUser::Absent));
    EXPECT_EQ(qrexec_vars(env), (std::vector<std::string>{
                                    "QREXEC_REMOTE_DOMAIN=work",
                                    "QREXEC_REQUESTED_TARGET=dom0",
                                    "QREXEC_REQUESTED_TARGET_TYPE=name",
                                    "QREXEC_SERVICE_ARGUMENT=a",
                                    "QREXEC_SERVICE_FULL_NAME=svc+a",
                                }));
}

TEST(QrexecServiceEnv, KeywordTarget) {
    auto cmd = parse_ok("QUBESRPC svc+ work keyword adminvm", CmdlineUser::Absent);
    auto env = build_service_env({"QREXEC_REQUESTED_TARGET=stale"}, cmd);
    EXPECT_EQ(qrexec_vars(env), (std::vector<std::string>{
                                    "QREXEC_REMOTE_DOMAIN=work",
                                    "QREXEC_REQUESTED_TARGET_KEYWORD=adminvm",
                                    "QREXEC_REQUESTED_TARGET_TYPE=keyword",
                                    "QREXEC_SERVICE_ARGUMENT=",
                                    "QREXEC_SERVICE_FULL_NAME=svc+",
                                }));
    auto at = build_service_env({}, parse_ok("QUBESRPC svc+ work keyword @dispvm:dvm",
                                             CmdlineUser::Absent));
    EXPECT_NE(std::find(at.begin(), at.end(), "QREXEC_REQUESTED_TARGET_KEYWORD=dispvm:dvm"),
              at.end());
}

TEST(QrexecServiceEnv, CurrentEnvironment) {
    ::setenv("AERIE_TEST_MARKER", "x=y", 1);
    auto env = current_environment();
    EXPECT_NE(std::find(env.begin(), env.end(), "AERIE_TEST_MARKER=x=y"), env.end());
    ::unsetenv("AERIE_TEST_MARKER");
}

TEST(QrexecServiceEnv, Argv) {
    ExecutableService exe{"/etc/qubes-rpc/svc"};
    EXPECT_EQ(service_argv(exe, parse_ok("u:QUBESRPC svc+arg src")),
              (std::vector<std::string>{"/etc/qubes-rpc/svc", "arg"}));
    EXPECT_EQ(service_argv(exe, parse_ok("u:QUBESRPC svc+ src")),
              (std::vector<std::string>{"/etc/qubes-rpc/svc"}));
}

TEST(QrexecServiceEnv, Descriptor) {
    EXPECT_EQ(service_descriptor(parse_ok("u:QUBESRPC qubes.Svc+arg work")),
              std::string("qubes.Svc+arg work\0", 19));
    EXPECT_EQ(service_descriptor(parse_ok("u:QUBESRPC qubes.Svc work")),
              std::string("qubes.Svc work\0", 15));
    EXPECT_EQ(service_descriptor(
                  parse_ok("QUBESRPC qubes.Svc+ work keyword adminvm", CmdlineUser::Absent)),
              std::string("qubes.Svc+ work keyword adminvm\0", 32));
}

}  // namespace
}  // namespace aerie::qrexec
