// Qube labels: the eight defaults (index 1..8) and custom ones added through
// admin.label.Create, with Qubes' rules for names, colours and indexes.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aerie::admin {

inline constexpr int kMaxDefaultLabel = 8;

struct Label {
    int index = 0;
    std::string name;
    std::string color;  // "0xRRGGBB" as given

    std::string icon(std::string_view kind = "appvm") const { return std::string(kind) + "-" + name; }
};

// Why a label operation was refused. PermissionDenied is what qubesd's
// enforce() gives: the connection is closed without a reply.
enum class LabelError { None, PermissionDenied, AlreadyExists, NotFound, InUse };

class LabelSet {
public:
    LabelSet();  // the eight defaults

    const Label* find(std::string_view name_or_index) const;  // a name, or its index as digits
    std::vector<const Label*> by_name() const;                 // sorted by name
    const std::map<int, Label>& all() const { return labels_; }

    // admin.label.Create+NAME with payload COLOR. On success *created is set.
    LabelError create(std::string_view name, std::string_view color, Label* created = nullptr);
    // admin.label.Remove+NAME; in_use: whether some qube carries it.
    LabelError remove(std::string_view name, bool in_use);
    // Restores a stored custom label (no validation beyond index uniqueness).
    void restore(Label label);

private:
    std::map<int, Label> labels_;
};

// The name of the exception class qubesd raises for an error (empty for
// PermissionDenied, which has no reply).
std::string_view label_exception(LabelError error);

}  // namespace aerie::admin
