#include "admin/labels.hpp"

#include <algorithm>
#include <cctype>

namespace aerie::admin {

LabelSet::LabelSet() {
    const std::pair<const char*, const char*> defaults[] = {
        {"red", "0xcc0000"},   {"orange", "0xf57900"}, {"yellow", "0xedd400"}, {"green", "0x73d216"},
        {"gray", "0x555555"},  {"blue", "0x3465a4"},   {"purple", "0x75507b"}, {"black", "0x000000"},
    };
    int index = 1;
    for (const auto& [name, color] : defaults) {
        labels_[index] = Label{index, name, color};
        ++index;
    }
}

const Label* LabelSet::find(std::string_view key) const {
    bool digits = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (digits && key.size() < 9) {
        auto it = labels_.find(std::stoi(std::string(key)));
        return it == labels_.end() ? nullptr : &it->second;
    }
    for (const auto& [index, label] : labels_)
        if (label.name == key) return &label;
    return nullptr;
}

std::vector<const Label*> LabelSet::by_name() const {
    std::vector<const Label*> out;
    for (const auto& [index, label] : labels_) out.push_back(&label);
    std::sort(out.begin(), out.end(), [](const Label* a, const Label* b) { return a->name < b->name; });
    return out;
}

LabelError LabelSet::create(std::string_view name, std::string_view color, Label* created) {
    auto allowed = [](char c) {
        return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.';
    };
    bool all_digits = std::all_of(name.begin(), name.end(), [](char c) { return c >= '0' && c <= '9'; });
    // An all-digit name would be confused with an index.
    if (name.empty() || all_digits || !std::all_of(name.begin(), name.end(), allowed))
        return LabelError::PermissionDenied;
    if (find(name)) return LabelError::AlreadyExists;
    bool color_ok = color.size() == 8 && color.substr(0, 2) == "0x" &&
                    std::all_of(color.begin() + 2, color.end(),
                                [](char c) { return std::isxdigit(static_cast<unsigned char>(c)); });
    if (!color_ok) return LabelError::PermissionDenied;
    int index = std::max(kMaxDefaultLabel, labels_.rbegin()->first) + 1;
    Label label{index, std::string(name), std::string(color)};
    labels_[index] = label;
    if (created) *created = label;
    return LabelError::None;
}

LabelError LabelSet::remove(std::string_view name, bool in_use) {
    const Label* label = find(name);
    if (!label) return LabelError::NotFound;
    if (label->index <= kMaxDefaultLabel) return LabelError::PermissionDenied;
    if (in_use) return LabelError::InUse;
    labels_.erase(label->index);
    return LabelError::None;
}

void LabelSet::restore(Label label) { labels_[label.index] = std::move(label); }

std::string_view label_exception(LabelError error) {
    switch (error) {
        case LabelError::AlreadyExists: return "QubesValueError";
        case LabelError::NotFound: return "QubesLabelNotFoundError";
        case LabelError::InUse: return "QubesException";
        default: return "";
    }
}

}  // namespace aerie::admin
