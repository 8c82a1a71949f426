// The sending side: qvm-copy's checks before a call (tree_check.hpp) and the
// sender against a real receiver (a round trip, an error answered mid-way).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <thread>

#include "qfile/packer.hpp"
#include "qfile/tree_check.hpp"
#include "qfile_test_support.hpp"

using namespace aerie::qfile;
using namespace aerie::qfile::test;

namespace {

class QfileSender : public ::testing::Test {
protected:
    void SetUp() override {
        // As in qfile-agent: a receiver that stopped reading is an error
        // answer to read, not a signal.
        ::signal(SIGPIPE, SIG_IGN);
        src = box.root / "src";
        fs::create_directories(src / "t" / "sub");
        std::ofstream(src / "t" / "f") << std::string(1000, 'x');
        std::ofstream(src / "t" / "sub" / "g") << "yy";
        fs::create_symlink("../f", src / "t" / "sub" / "l");
    }

    std::string message(const std::vector<std::string>& paths, bool ignore_symlinks = false) {
        try {
            check_trees(paths, ignore_symlinks);
        } catch (const TreeCheckError& e) {
            return e.what();
        }
        return "";
    }

    // Sends `paths` to a receiver unpacking into in/; the sender's error ("" if none).
    std::string send(const std::vector<std::string>& paths) {
        int to_receiver[2], to_sender[2];
        EXPECT_EQ(::pipe(to_receiver), 0);
        EXPECT_EQ(::pipe(to_sender), 0);
        std::thread receiver([&] {
            aerie::base::UniqueFd dir(::open((box.root / "in").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
            Unpacker(dir.get(), {}).run(to_receiver[0], to_sender[1]);
            ::close(to_receiver[0]);
            ::close(to_sender[1]);
        });
        std::string error;
        {
            Packer packer(to_receiver[1], to_sender[0]);
            try {
                for (const auto& p : paths) packer.send(p, false);
                packer.finish();
            } catch (const PackError& e) {
                error = e.what();
            }
        }
        ::close(to_receiver[1]);
        receiver.join();
        ::close(to_sender[0]);
        return error;
    }

    Sandbox box;
    fs::path src;
};

TEST_F(QfileSender, CountsBytesAndChecksNames) {
    TreeCheck c = check_trees({(src / "t").string()}, false);
    EXPECT_EQ(c.total_bytes, 1000u + 2u + 4u);  // the link counts its target's length
    EXPECT_TRUE(c.all_names_safe);
    EXPECT_EQ(check_trees({(src / "t").string()}, true).total_bytes, 1002u);
    std::ofstream(src / "t" /
                  "a\xe2\x80\xae"
                  "b")
        << "";
    EXPECT_FALSE(check_trees({(src / "t").string()}, false).all_names_safe);
}

TEST_F(QfileSender, RefusesWhatTheReceiverWould) {
    fs::create_symlink("f", src / "t" / "top");
    EXPECT_EQ(message({(src / "t" / "top").string()}), "Refusing to copy unsafe symbolic link \"top\"");
    EXPECT_EQ(message({(src / "t" / "top").string()}, true), "");
    fs::create_symlink("../../etc", src / "t" / "sub" / "out");
    EXPECT_EQ(message({(src / "t").string()}), "Refusing to copy unsafe symbolic link \"t/sub/out\"");
    EXPECT_EQ(message({""}), "Empty string (argument 1) is not a valid path");
    EXPECT_EQ(message({".."}),
              "Argument 1 is \"..\", which is not allowed.  Try operating from the parent directory.");
    EXPECT_EQ(message({"/"}), "Refusing to copy root directory");
    EXPECT_EQ(message({(src / "t" / "..").string()}), "Refusing to copy path with basename empty, ., or ..");
}

TEST_F(QfileSender, RoundTripKeepsContentsModesAndLinks) {
    ::chmod((src / "t" / "f").c_str(), 0600);
    EXPECT_EQ(send({(src / "t").string()}), "");
    std::ifstream f(box.root / "in" / "t" / "f");
    EXPECT_EQ(std::string((std::istreambuf_iterator<char>(f)), {}), std::string(1000, 'x'));
    EXPECT_EQ(fs::read_symlink(box.root / "in" / "t" / "sub" / "l"), "../f");
    struct stat st {};
    ASSERT_EQ(::stat((box.root / "in" / "t" / "f").c_str(), &st), 0);
    EXPECT_EQ(st.st_mode & 07777, 0600u);
}

TEST_F(QfileSender, StopsWithTheReceiversError) {
    std::ofstream(src / "big") << std::string(4 << 20, 'z');
    std::ofstream(box.root / "in" / "big") << "already here";
    EXPECT_EQ(send({(src / "big").string(), (src / "t").string()}),
              "A file named \"big\" already exists in QubesIncoming dir");
    EXPECT_FALSE(fs::exists(box.root / "in" / "t")) << "nothing after the refused entry";
}

}  // namespace
