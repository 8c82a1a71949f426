// admin.label.*: the eight default labels and custom ones.
#include "admin/api_call.hpp"

namespace aerie::admin {

namespace {

const Label& existing(const Model& model, const std::string& key) {
    const Label* label = model.labels().find(key);
    if (!label) throw value_error("");  // qubesd raises a bare QubesValueError
    return *label;
}

std::string trim(std::string_view text) {
    auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; };
    while (!text.empty() && space(text.front())) text.remove_prefix(1);
    while (!text.empty() && space(text.back())) text.remove_suffix(1);
    return std::string(text);
}

}  // namespace

std::string AdminApi::label_list(Call& call) {
    Call::enforce(call.dest_is_dom0(), "labels live on dom0");
    std::string out;
    for (const auto& [index, label] : model_.labels().all()) out += label.name + "\n";
    return out;
}

std::string AdminApi::label_get(Call& call) {
    Call::enforce(call.dest_is_dom0(), "labels live on dom0");
    return existing(model_, call.arg()).color;
}

std::string AdminApi::label_index(Call& call) {
    Call::enforce(call.dest_is_dom0(), "labels live on dom0");
    return std::to_string(existing(model_, call.arg()).index);
}

std::string AdminApi::label_create(Call& call) {
    Call::enforce(call.dest_is_dom0(), "labels live on dom0");
    LabelSet updated = model_.labels();
    Label created;
    switch (updated.create(call.arg(), trim(call.payload()), &created)) {
        case LabelError::None: break;
        case LabelError::AlreadyExists: throw value_error("label already exists");
        default: throw protocol_error("invalid label name or colour");
    }
    Store::Transaction txn(store_);
    txn.add_label(created);
    txn.commit();
    model_.labels() = std::move(updated);
    return {};
}

std::string AdminApi::label_remove(Call& call) {
    Call::enforce(call.dest_is_dom0(), "labels live on dom0");
    const Label& label = existing(model_, call.arg());
    Call::enforce(label.index > kMaxDefaultLabel, "default labels cannot be removed");
    if (model_.label_in_use(label.index)) throw qubes_error("QubesException", "label still in use");
    int index = label.index;
    Store::Transaction txn(store_);
    txn.remove_label(index);
    txn.commit();
    LabelSet updated = model_.labels();
    updated.remove(std::to_string(index), false);
    model_.labels() = std::move(updated);
    return {};
}

}  // namespace aerie::admin
