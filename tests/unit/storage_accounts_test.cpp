#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "storage/accounts.hpp"

namespace fs = std::filesystem;

namespace {

std::string read(const fs::path& p) {
    std::ifstream in(p);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

void write(const fs::path& p, const std::string& text) { std::ofstream(p) << text; }

class QubeUser : public ::testing::Test {
protected:
    QubeUser() {
        char tmpl[] = "/tmp/aerie-accounts-XXXXXX";
        etc_ = ::mkdtemp(tmpl);
    }
    ~QubeUser() override { fs::remove_all(etc_); }
    fs::path etc_;
};

TEST_F(QubeUser, ReplacesTheHostsOwnUid1000Account) {
    write(etc_ / "passwd", "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/bash\n");
    write(etc_ / "group", "root:x:0:\nalice:x:1000:\n");
    write(etc_ / "shadow", "root:*:1::::::\nalice:$6$secret:1::::::\n");
    write(etc_ / "gshadow", "root:*::\nalice:!::\n");
    aerie::storage::ensure_qube_user(etc_);
    EXPECT_EQ(read(etc_ / "passwd"), "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000:user:/home/user:/bin/bash\n");
    EXPECT_EQ(read(etc_ / "group"), "root:x:0:\nuser:x:1000:\n");
    EXPECT_EQ(read(etc_ / "shadow").find("alice"), std::string::npos);
    EXPECT_NE(read(etc_ / "shadow").find("\nuser:!:"), std::string::npos);
    EXPECT_EQ(read(etc_ / "gshadow"), "root:*::\nuser:!::\n");
}

TEST_F(QubeUser, KeepsAnExistingUserAndAddsNothingTwice) {
    write(etc_ / "passwd", "user:x:1000:1000:user:/home/user:/bin/bash\n");
    write(etc_ / "group", "user:x:1000:\n");
    aerie::storage::ensure_qube_user(etc_);
    aerie::storage::ensure_qube_user(etc_);
    EXPECT_EQ(read(etc_ / "passwd"), "user:x:1000:1000:user:/home/user:/bin/bash\n");
    EXPECT_EQ(read(etc_ / "group"), "user:x:1000:\n");
}

}  // namespace
