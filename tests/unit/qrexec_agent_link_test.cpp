// The daemon's way to its agent: only a socket the folder's owner made,
// resolved beneath the folder's descriptor; never a symlink, a file, or a
// hard link to someone else's socket.
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "base/safe_dir.hpp"
#include "qrexec/agent_link.hpp"
#include "qrexec/vchan.hpp"

namespace aerie::qrexec {
namespace {

namespace fs = std::filesystem;

struct Dirs {
    fs::path root, vchan, other;
    Dirs() {
        char tmpl[] = "/tmp/qrexec-link-XXXXXX";
        root = ::mkdtemp(tmpl);
        vchan = root / "vchan";
        other = root / "other";
        fs::create_directories(vchan);
        fs::create_directories(other);
    }
    ~Dirs() { fs::remove_all(root); }
};

bool accepts(int listener) {
    ::fcntl(listener, F_SETFL, O_NONBLOCK);
    UniqueFd c(::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    return static_cast<bool>(c);
}

TEST(QrexecAgentLink, ConnectsToTheAgentsSocket) {
    Dirs d;
    UniqueFd listener = vchan_listen((d.vchan / "vchan.3.0.512.sock").string());
    UniqueFd dir = base::open_trusted_dir(d.vchan);
    std::string why;
    UniqueFd fd = connect_beneath(dir.get(), "vchan.3.0.512.sock", &why);
    ASSERT_TRUE(fd) << why;
    EXPECT_TRUE(accepts(listener.get()));
    EXPECT_EQ(::fcntl(fd.get(), F_GETFL) & O_NONBLOCK, 0);
}

TEST(QrexecAgentLink, AbsentAndRefusedAreTold) {
    Dirs d;
    UniqueFd dir = base::open_trusted_dir(d.vchan);
    std::string why;
    EXPECT_FALSE(connect_beneath(dir.get(), "vchan.3.0.512.sock", &why));
    EXPECT_EQ(why, "absent");
    { UniqueFd closed = vchan_listen((d.vchan / "vchan.3.0.512.sock").string()); }
    EXPECT_FALSE(connect_beneath(dir.get(), "vchan.3.0.512.sock", &why));
    EXPECT_EQ(why, "refused");
}

TEST(QrexecAgentLink, NeverFollowsAPlantedSymlink) {
    Dirs d;
    // Someone else's socket (another qube's agent, a root-only host socket).
    UniqueFd victim = vchan_listen((d.other / "victim.sock").string());
    fs::create_symlink(d.other / "victim.sock", d.vchan / "vchan.3.0.512.sock");
    UniqueFd dir = base::open_trusted_dir(d.vchan);
    std::string why;
    EXPECT_FALSE(connect_beneath(dir.get(), "vchan.3.0.512.sock", &why));
    EXPECT_NE(why.find("symbolic link"), std::string::npos) << why;
    fs::remove(d.vchan / "vchan.3.0.512.sock");
    fs::create_symlink("../other/victim.sock", d.vchan / "vchan.3.0.512.sock");
    EXPECT_FALSE(connect_beneath(dir.get(), "vchan.3.0.512.sock", &why));
    EXPECT_FALSE(accepts(victim.get()));
}

TEST(QrexecAgentLink, RefusesFilesAndSocketsOfAnotherOwner) {
    Dirs d;
    UniqueFd dir = base::open_trusted_dir(d.vchan);
    std::string why;
    { std::FILE* f = std::fopen((d.vchan / "vchan.3.0.512.sock").c_str(), "w"); std::fclose(f); }
    EXPECT_FALSE(connect_beneath(dir.get(), "vchan.3.0.512.sock", &why));
    EXPECT_NE(why.find("not a socket"), std::string::npos) << why;
    fs::remove(d.vchan / "vchan.3.0.512.sock");
    // A hard link to a socket of another owner (here the folder changes owner).
    UniqueFd victim = vchan_listen((d.other / "victim.sock").string());
    ASSERT_EQ(::link((d.other / "victim.sock").c_str(), (d.vchan / "vchan.3.0.512.sock").c_str()), 0);
    if (::geteuid() != 0) GTEST_SKIP() << "needs root to change the folder's owner";
    ASSERT_EQ(::chown(d.vchan.c_str(), 12345, 12345), 0);
    EXPECT_FALSE(connect_beneath(dir.get(), "vchan.3.0.512.sock", &why));
    EXPECT_NE(why.find("not owned by the folder's owner"), std::string::npos) << why;
    EXPECT_FALSE(accepts(victim.get()));
}

TEST(QrexecAgentLink, BackoffDoublesUpToItsCap) {
    using ms = std::chrono::milliseconds;
    Backoff b(ms(10), ms(50));
    EXPECT_EQ(b.next(), ms(10));
    EXPECT_EQ(b.next(), ms(20));
    EXPECT_EQ(b.next(), ms(40));
    EXPECT_EQ(b.next(), ms(50));
    EXPECT_EQ(b.next(), ms(50));
    b.reset();
    EXPECT_EQ(b.next(), ms(10));
}

}  // namespace
}  // namespace aerie::qrexec
