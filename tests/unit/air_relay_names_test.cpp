// How a relay translates names (air/relay_names.hpp), from a QubesDB folder
// made in a temporary folder: outgoing arguments, the caller, incoming calls
// mapped to the local RemoteVM, and every refusal.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

#include "air/relay_names.hpp"

namespace {

namespace fs = std::filesystem;
using namespace aerie::air;

class RelayNames : public ::testing::Test {
protected:
    void SetUp() override {
        char tmpl[] = "/tmp/air-names-XXXXXX";
        ASSERT_NE(::mkdtemp(tmpl), nullptr);
        db = tmpl;
        // Two RemoteVMs of zone "office", one of "home"; "loose" has no zone.
        remote("office-work", "work", "office");
        remote("office-vault", "vault", "office");
        remote("home-work", "work", "home");
        remote("loose", "x", "");
    }
    void TearDown() override { fs::remove_all(db); }

    void write(const fs::path& file, const std::string& text) {
        fs::create_directories(file.parent_path());
        std::ofstream(file) << text;
    }
    void remote(const std::string& local, const std::string& name, const std::string& zone) {
        write(db / "remote" / local, name);
        if (!zone.empty()) write(db / "air-zone" / local, zone);
    }

    std::string outgoing_refusal(const std::string& argument) {
        try {
            resolve_outgoing(argument, db);
        } catch (const AirError& e) {
            return e.what();
        }
        return "(accepted)";
    }
    std::string incoming_refusal(const std::string& zone, const std::string& source, const std::string& target,
                                 const std::string& service, std::vector<std::string> allowed = {"work", "vault"}) {
        try {
            incoming_argv(zone, source, target, service, allowed, db);
        } catch (const AirError& e) {
            return e.what();
        }
        return "(accepted)";
    }

    fs::path db;
};

TEST_F(RelayNames, ResolvesAnOutgoingCall) {
    OutgoingCall c = resolve_outgoing("office-vault+qubes.Filecopy+arg.1", db);
    EXPECT_EQ(c.local_name, "office-vault");
    EXPECT_EQ(c.zone, "office");
    EXPECT_EQ(c.remote_name, "vault");
    EXPECT_EQ(c.service, "qubes.Filecopy+arg.1");
    EXPECT_EQ(resolve_outgoing("home-work+test.Echo", db).zone, "home");
}

TEST_F(RelayNames, ARemoteNameMayBeADisposable) {
    remote("office-disp", "@dispvm:office-dvm", "office");
    EXPECT_EQ(resolve_outgoing("office-disp+test.Echo", db).remote_name, "@dispvm:office-dvm");
    remote("office-anydisp", "@dispvm", "office");
    EXPECT_EQ(resolve_outgoing("office-anydisp+test.Echo", db).remote_name, "@dispvm");
    remote("office-bad", "@anyvm", "office");
    EXPECT_EQ(outgoing_refusal("office-bad+test.Echo"), "office-bad: its remote name: not a qube name");
    remote("office-bad2", "@dispvm:../x", "office");
    EXPECT_EQ(outgoing_refusal("office-bad2+test.Echo"), "office-bad2: its remote name: not a qube name");
}

TEST_F(RelayNames, RefusesBadOutgoingCalls) {
    EXPECT_EQ(outgoing_refusal("office-vault"), "the argument is not LOCAL+SERVICE");
    EXPECT_EQ(outgoing_refusal("office-vault+"), "no service name");
    EXPECT_EQ(outgoing_refusal("office-vault++x"), "no service name");
    EXPECT_EQ(outgoing_refusal("office-vault+a b"), "service name with a character qrexec refuses");
    EXPECT_EQ(outgoing_refusal("office-vault+a/b"), "service name with a character qrexec refuses");
    EXPECT_EQ(outgoing_refusal("office-vault+" + std::string(256, 'a')), "service name longer than 255 characters");
    EXPECT_EQ(outgoing_refusal("../x+svc"), "the argument's remote qube: not a qube name");
    EXPECT_EQ(outgoing_refusal("nobody+svc"), "nobody is not relayed here");
    EXPECT_EQ(outgoing_refusal("loose+svc"), "loose has no zone");
    write(db / "air-zone" / "loose", "Bad Zone");
    EXPECT_EQ(outgoing_refusal("loose+svc"), "loose: its zone is not a zone name");
}

TEST_F(RelayNames, CallingSource) {
    EXPECT_EQ(calling_source("work"), "work");
    EXPECT_THROW(calling_source(nullptr), AirError);
    EXPECT_THROW(calling_source(""), AirError);
    EXPECT_THROW(calling_source("a b"), AirError);
    EXPECT_THROW(calling_source("@dispvm"), AirError);
}

TEST_F(RelayNames, MapsAnIncomingCallToTheLocalRemoteVm) {
    ::setenv("AERIE_AIR_QREXEC_CLIENT_VM", "/bin/stand-in", 1);
    auto argv = incoming_argv("office", "work", "mail", "test.Echo+x", {"work", "vault"}, db);
    ::unsetenv("AERIE_AIR_QREXEC_CLIENT_VM");
    EXPECT_EQ(argv, (std::vector<std::string>{"/bin/stand-in", "--source-qube=office-work", "mail", "test.Echo+x"}));
    argv = incoming_argv("home", "work", "@dispvm:tpl", "svc", {"work"}, db);
    EXPECT_EQ(argv, (std::vector<std::string>{"/run/aerie/bin/qrexec-client-vm", "--source-qube=home-work",
                                              "@dispvm:tpl", "svc"}));
    EXPECT_EQ(incoming_argv("office", "vault", "@default", "svc", {"vault"}, db)[1], "--source-qube=office-vault");
    EXPECT_EQ(incoming_argv("office", "vault", "@dispvm", "svc", {"vault"}, db)[2], "@dispvm");
}

TEST_F(RelayNames, RefusesBadIncomingCalls) {
    EXPECT_EQ(incoming_refusal("Office", "work", "mail", "svc"), "not a zone name");
    EXPECT_EQ(incoming_refusal("office", "-work", "mail", "svc"), "source: not a qube name");
    EXPECT_EQ(incoming_refusal("office", "work", "@anyvm", "svc"), "target: not a qube name");
    EXPECT_EQ(incoming_refusal("office", "work", "@dispvm:", "svc"), "target: not a qube name");
    EXPECT_EQ(incoming_refusal("office", "work", "@dispvm:../x", "svc"), "target: not a qube name");
    EXPECT_EQ(incoming_refusal("office", "work", "mail", "+svc"), "no service name");
    EXPECT_EQ(incoming_refusal("office", "work", "mail", "svc;x"), "service name with a character qrexec refuses");
    EXPECT_EQ(incoming_refusal("office", "work", "mail", "svc", {"vault"}), "zone office does not export work");
    EXPECT_EQ(incoming_refusal("office", "mail", "mail", "svc", {"mail"}), "zone office has no qube mail here");
    EXPECT_EQ(incoming_refusal("elsewhere", "work", "mail", "svc"), "zone elsewhere has no qube work here");
    remote("office-work2", "work", "office");
    EXPECT_EQ(incoming_refusal("office", "work", "mail", "svc"), "zone office has more than one qube work here");
}

TEST_F(RelayNames, ReadsNames) {
    write(db / "names", "work\nvault\r\n\n../bad\nmail");
    EXPECT_EQ(read_names(db / "names"), (std::vector<std::string>{"work", "vault", "mail"}));
    EXPECT_TRUE(read_names(db / "missing").empty());
}

}  // namespace
