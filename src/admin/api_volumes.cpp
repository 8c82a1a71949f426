// admin.vm.volume.{List,Info,ListSnapshots,Revert,Resize,Set.revisions_to_keep}.
#include "admin/api_call.hpp"
#include "storage/pool.hpp"

namespace aerie::admin {

namespace {

bool has_volume(const storage::FilePool& pool, const Qube& qube, const std::string& volume) {
    auto names = pool.volumes(qube.klass);
    return std::find(names.begin(), names.end(), volume) != names.end();
}

}  // namespace

void AdminApi::set_storage(storage::FilePool* pool) {
    pool_ = pool;
    registry_.set_pool(pool);
    using P = Payload;
    using A = Arg;
    methods_["admin.vm.volume.List"] = {&AdminApi::volume_list, P::None, A::None};
    methods_["admin.vm.volume.Info"] = {&AdminApi::volume_info, P::None, A::Required};
    methods_["admin.vm.volume.ListSnapshots"] = {&AdminApi::volume_list_snapshots, P::None, A::Required};
    methods_["admin.vm.volume.Revert"] = {&AdminApi::volume_revert, P::Optional, A::Required};
    methods_["admin.vm.volume.Resize"] = {&AdminApi::volume_resize, P::Required, A::Required};
    methods_["admin.vm.volume.Set.revisions_to_keep"] = {&AdminApi::volume_set_revisions, P::Required, A::Required};
}

std::string AdminApi::volume_list(Call& call) {
    std::string out;
    if (call.dest->is_admin()) return out;
    for (const auto& name : pool_->volumes(call.dest->klass)) out += name + "\n";
    return out;
}

std::string AdminApi::volume_info(Call& call) {
    Call::enforce(has_volume(*pool_, *call.dest, call.arg()), "no volume " + call.arg());
    return storage::format_volume_info(
        pool_->info(call.dest->uuid, call.dest->klass, call.arg(), model_.template_chain(*call.dest)));
}

std::string AdminApi::volume_list_snapshots(Call& call) {
    Call::enforce(has_volume(*pool_, *call.dest, call.arg()), "no volume " + call.arg());
    std::string out;
    for (const auto& revision : pool_->revisions(call.dest->uuid, call.arg())) out += revision + "\n";
    return out;
}

std::string AdminApi::volume_revert(Call& call) {
    Call::enforce(has_volume(*pool_, *call.dest, call.arg()), "no volume " + call.arg());
    std::string revision = call.payload();
    while (!revision.empty() && (revision.back() == '\n' || revision.back() == ' ')) revision.pop_back();
    auto revisions = pool_->revisions(call.dest->uuid, call.arg());
    Call::enforce(std::find(revisions.begin(), revisions.end(), revision) != revisions.end(),
                  "no revision '" + revision + "'");
    if (!call.dest->is_halted())
        throw qubes_error("QubesVMNotHaltedError", "Domain is not powered off: '" + call.dest->name + "'");
    try {
        pool_->revert(call.dest->uuid, call.arg(), revision);
    } catch (const storage::StorageError& e) {
        throw qubes_error("StoragePoolException", e.what());
    }
    return {};
}

// The payload: the new size in bytes (decimal digits, no leading zero, as
// Qubes' validate_size). Growing works running or halted; shrinking is
// refused with Qubes' StoragePoolException.
std::string AdminApi::volume_resize(Call& call) {
    Call::enforce(has_volume(*pool_, *call.dest, call.arg()), "no volume " + call.arg());
    std::string text = call.payload();
    while (!text.empty() && text.back() == '\n') text.pop_back();
    Call::enforce(!text.empty() && text.size() < 20 &&
                      std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
                      (text[0] != '0' || text == "0"),
                  "invalid size");
    const uint64_t size = std::stoull(text);
    try {
        pool_->resize(call.dest->uuid, call.dest->klass, call.arg(), size);
    } catch (const storage::StorageError& e) {
        throw qubes_error("StoragePoolException", e.what());
    }
    return {};
}

std::string AdminApi::volume_set_revisions(Call& call) {
    Call::enforce(has_volume(*pool_, *call.dest, call.arg()), "no volume " + call.arg());
    // validate_size(allow_negative=True): digits, at most 19, no leading zero.
    std::string text = call.payload();
    bool negative = !text.empty() && text[0] == '-';
    std::string digits = negative ? text.substr(1) : text;
    Call::enforce(!digits.empty() && digits.size() < 20 &&
                      std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
                      (digits[0] != '0' || digits == "0"),
                  "invalid revisions_to_keep");
    long long count = std::stoll(digits) * (negative ? -1 : 1);
    Call::enforce(count >= -1 && count < 1000, "revisions_to_keep out of range");
    pool_->set_revisions_to_keep(call.dest->uuid, call.arg(), static_cast<int>(count));
    return {};
}

}  // namespace aerie::admin
