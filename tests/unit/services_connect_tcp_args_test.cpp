// qvm-connect-tcp's argument, read as Qubes' tool reads it.
#include <gtest/gtest.h>

#include "services/connect_tcp_args.hpp"

using aerie::services::parse_connect_tcp_args;
using aerie::services::parse_port;

TEST(ConnectTcpArgs, Fields) {
    auto a = parse_connect_tcp_args("9000:vault:8080");
    ASSERT_TRUE(a);
    EXPECT_EQ(a->local_port, 9000);
    EXPECT_EQ(a->target, "vault");
    EXPECT_EQ(a->port, 8080);
    a = parse_connect_tcp_args("::22");  // local port = port, default target
    ASSERT_TRUE(a);
    EXPECT_EQ(a->local_port, 22);
    EXPECT_EQ(a->target, "");
    a = parse_connect_tcp_args("1:@dispvm:2:extra");  // cut -f3 ignores the rest
    ASSERT_TRUE(a);
    EXPECT_EQ(a->target, "@dispvm");
    EXPECT_EQ(a->port, 2);
}

TEST(ConnectTcpArgs, Refused) {
    std::string error;
    for (const char* missing : {"", "8080", "1:vault", "1:vault:"}) {
        EXPECT_EQ(parse_connect_tcp_args(missing, &error), std::nullopt) << missing;
        EXPECT_EQ(error, "Please provide PORT") << missing;
    }
    for (const char* bad : {"1:v:0", "1:v:65536", "1:v:080", "1:v:+80", "0:v:80", "x:v:80", "1:v:8 0"}) {
        EXPECT_EQ(parse_connect_tcp_args(bad, &error), std::nullopt) << bad;
        EXPECT_EQ(error, "Invalid port provided") << bad;
    }
}

TEST(ConnectTcpArgs, Ports) {
    EXPECT_EQ(parse_port("1"), 1);
    EXPECT_EQ(parse_port("65535"), 65535);
    EXPECT_EQ(parse_port("65536"), std::nullopt);
    EXPECT_EQ(parse_port("99999999999"), std::nullopt);
    EXPECT_EQ(parse_port("-1"), std::nullopt);
}
