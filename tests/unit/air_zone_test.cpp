// The zone description two hosts exchange to pair: what is accepted, what is
// refused and why, and that a formatted zone reads back the same.
#include <gtest/gtest.h>

#include "air/zone.hpp"

namespace {

using aerie::air::format_zone;
using aerie::air::parse_zone;
using aerie::air::Zone;
using aerie::air::ZoneError;

const char* kGood = R"({"zone": "office", "address": "10.0.0.2:7022", "transport": "qubesair.SSHProxy",
                       "qubes": [{"name": "work", "label": "red"}, {"name": "vault", "label": "black"}]})";

std::string refusal(const std::string& text) {
    try {
        parse_zone(text);
    } catch (const ZoneError& e) {
        return e.what();
    }
    return "(accepted)";
}

TEST(AirZone, ReadsAGoodZone) {
    Zone z = parse_zone(kGood);
    EXPECT_EQ(z.name, "office");
    EXPECT_EQ(z.address, "10.0.0.2:7022");
    EXPECT_EQ(z.transport, "qubesair.SSHProxy");
    ASSERT_EQ(z.qubes.size(), 2u);
    EXPECT_EQ(z.qubes[1].name, "vault");
    EXPECT_EQ(z.qubes[1].label, "black");
}

TEST(AirZone, FormatReadsBack) {
    Zone z = parse_zone(kGood);
    Zone again = parse_zone(format_zone(z));
    EXPECT_EQ(again.name, z.name);
    EXPECT_EQ(again.address, z.address);
    EXPECT_EQ(again.transport, z.transport);
    ASSERT_EQ(again.qubes.size(), z.qubes.size());
    EXPECT_EQ(again.qubes[0].name, "work");
}

TEST(AirZone, RefusalsNameWhatIsWrong) {
    EXPECT_EQ(refusal("not json"), "zone file: not valid JSON");
    EXPECT_EQ(refusal("[]"), "zone file: not a JSON object");
    EXPECT_EQ(refusal(R"({"address": "a", "transport": "t", "qubes": []})"), "zone file: no \"zone\"");
    EXPECT_EQ(refusal(R"({"zone": 3, "address": "a", "transport": "t", "qubes": []})"),
              "zone file: \"zone\" is not a string");
    EXPECT_NE(refusal(R"({"zone": "Office", "address": "a", "transport": "t", "qubes": []})").find("zone: "),
              std::string::npos);
    EXPECT_NE(refusal(R"({"zone": "o", "address": "a b", "transport": "t", "qubes": []})").find("address"),
              std::string::npos);
    EXPECT_NE(refusal(R"({"zone": "o", "address": "a", "transport": "x;rm", "qubes": []})").find("transport"),
              std::string::npos);
    EXPECT_EQ(refusal(R"({"zone": "o", "address": "a", "transport": "t"})"), "zone file: \"qubes\" is not a list");
    EXPECT_NE(refusal(R"({"zone": "o", "address": "a", "transport": "t", "qubes": [{"name": "../x", "label": "red"}]})")
                  .find("qubes[0]: name"),
              std::string::npos);
    EXPECT_NE(refusal(R"({"zone": "o", "address": "a", "transport": "t",
                          "qubes": [{"name": "w", "label": "red"}, {"name": "w", "label": "red"}]})")
                  .find("listed twice"),
              std::string::npos);
    EXPECT_NE(refusal(R"({"zone": "o", "address": "a", "transport": "t", "qubes": [{"name": "w"}]})")
                  .find("no \"label\""),
              std::string::npos);
}

}  // namespace
