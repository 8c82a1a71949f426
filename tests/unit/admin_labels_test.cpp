#include <gtest/gtest.h>

#include "admin/labels.hpp"

namespace aerie::admin {
namespace {

TEST(AdminLabels, EightDefaultsWithQubesColours) {
    LabelSet labels;
    ASSERT_EQ(labels.all().size(), 8u);
    EXPECT_EQ(labels.find("red")->index, 1);
    EXPECT_EQ(labels.find("red")->color, "0xcc0000");
    EXPECT_EQ(labels.find("blue")->color, "0x3465a4");
    EXPECT_EQ(labels.find("black")->index, 8);
    EXPECT_EQ(labels.find("6")->name, "blue");  // by index
    EXPECT_EQ(labels.find("blue")->icon(), "appvm-blue");
    EXPECT_EQ(labels.find("blue")->icon("dispvm"), "dispvm-blue");
    std::vector<std::string> names;
    for (const Label* l : labels.by_name()) names.push_back(l->name);
    EXPECT_EQ(names, (std::vector<std::string>{"black", "blue", "gray", "green", "orange", "purple", "red",
                                               "yellow"}));
}

TEST(AdminLabels, CreateRules) {
    LabelSet labels;
    Label made;
    ASSERT_EQ(labels.create("work-1.x_y", "0xAbCdEf", &made), LabelError::None);
    EXPECT_EQ(made.index, 9);
    ASSERT_EQ(labels.create("second", "0x123456", &made), LabelError::None);
    EXPECT_EQ(made.index, 10);
    EXPECT_EQ(labels.create("second", "0x123456"), LabelError::AlreadyExists);
    EXPECT_EQ(labels.create("123", "0x123456"), LabelError::PermissionDenied);    // all digits
    EXPECT_EQ(labels.create("", "0x123456"), LabelError::PermissionDenied);       // empty
    EXPECT_EQ(labels.create("a b", "0x123456"), LabelError::PermissionDenied);    // bad char
    EXPECT_EQ(labels.create("c", "123456"), LabelError::PermissionDenied);        // no 0x
    EXPECT_EQ(labels.create("c", "0x12345"), LabelError::PermissionDenied);       // short
    EXPECT_EQ(labels.create("c", "0x1234567"), LabelError::PermissionDenied);     // long
    EXPECT_EQ(labels.create("c", "0x12345g"), LabelError::PermissionDenied);      // not hex
}

TEST(AdminLabels, RemoveRules) {
    LabelSet labels;
    ASSERT_EQ(labels.create("custom", "0x010203"), LabelError::None);
    EXPECT_EQ(labels.remove("red", false), LabelError::PermissionDenied);  // a default
    EXPECT_EQ(labels.remove("nosuch", false), LabelError::NotFound);
    EXPECT_EQ(labels.remove("custom", true), LabelError::InUse);
    EXPECT_EQ(labels.remove("custom", false), LabelError::None);
    EXPECT_EQ(labels.find("custom"), nullptr);
    EXPECT_EQ(label_exception(LabelError::NotFound), "QubesLabelNotFoundError");
    // The next index follows the highest one left.
    Label made;
    ASSERT_EQ(labels.create("again", "0x010203", &made), LabelError::None);
    EXPECT_EQ(made.index, 9);
}

}  // namespace
}  // namespace aerie::admin
