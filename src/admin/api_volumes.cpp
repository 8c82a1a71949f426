// admin.vm.volume.{List,Info,ListSnapshots,Revert,Resize,Clear,CloneFrom,
// CloneTo,Set.revisions_to_keep,Set.rw,Set.ephemeral}, and the two halves of
// admin.vm.volume.Import / ImportWithSize (internal.vm.volume.ImportBegin,
// ImportEnd: aerie-volume-import writes the data in between, as Qubes'
// script does).
#include <random>

#include "admin/api_call.hpp"
#include "admin/lifecycle.hpp"
#include "storage/image.hpp"
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
    methods_["admin.vm.volume.Set.rw"] = {&AdminApi::volume_set_rw, P::Optional, A::Optional};
    methods_["admin.vm.volume.Set.ephemeral"] = {&AdminApi::volume_set_ephemeral, P::Optional, A::Optional};
    methods_["admin.vm.volume.Clear"] = {&AdminApi::volume_clear, P::None, A::Optional};
    methods_["admin.vm.volume.CloneFrom"] = {&AdminApi::volume_clone_from, P::None, A::Optional};
    methods_["admin.vm.volume.CloneTo"] = {&AdminApi::volume_clone_to, P::Optional, A::Optional};
    internal_methods_["internal.vm.volume.ImportBegin"] = {&AdminApi::volume_import_begin, P::Optional,
                                                           A::Required};
    internal_methods_["internal.vm.volume.ImportEnd"] = {&AdminApi::volume_import_end, P::Required,
                                                         A::Required};
    add_pool_methods();
}

void AdminApi::on_storage(Call& call, const std::string& uuid, std::function<std::string()> work,
                          std::function<std::string(std::string)> then) {
    // Errors as qubesd answers them: the pool's as StoragePoolException.
    auto answer = [this](const std::function<std::string()>& body) {
        try {
            return ApiResponse::reply(encode_success(body()));
        } catch (const storage::StorageError& e) {
            return ApiResponse::reply(encode_exception("StoragePoolException", e.what()));
        } catch (const ApiError& e) {
            if (!e.silent) return ApiResponse::reply(encode_exception(e.type, e.what()));
            log("refused: " + base::log_safe(e.what(), 200));
            return ApiResponse::close();
        } catch (const std::exception& e) {
            log(std::string("volume work failed: ") + e.what());
            return ApiResponse::close();
        }
    };
    auto result = std::make_shared<std::string>();
    call.later = [this, uuid, work = std::move(work), then = std::move(then), answer,
                  result](ApiResponse::Completion done) {
        auto finish = [then, answer, result, done](std::exception_ptr error) {
            done(answer([&] {
                if (error) std::rethrow_exception(error);
                return then ? then(*result) : *result;
            }));
        };
        if (!lifecycle_) {  // no threads (tests of the API alone)
            std::exception_ptr error;
            try {
                *result = work();
            } catch (...) {
                error = std::current_exception();
            }
            return finish(error);
        }
        lifecycle_->storage_worker().run(
            uuid, [work, result] { *result = work(); }, finish);
    };
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
    on_storage(call, call.dest->uuid, [pool = pool_, uuid = call.dest->uuid, volume = call.arg(), revision] {
        pool->revert(uuid, volume, revision);
        return std::string();
    });
    return {};
}

// The payload: the new size in bytes (decimal digits, no leading zero, as
// Qubes' validate_size). Growing works running or halted; shrinking is
// refused with Qubes' StoragePoolException. On the storage threads: an
// online grow waits for the file system.
std::string AdminApi::volume_resize(Call& call) {
    Call::enforce(has_volume(*pool_, *call.dest, call.arg()), "no volume " + call.arg());
    std::string text = call.payload();
    while (!text.empty() && text.back() == '\n') text.pop_back();
    Call::enforce(!text.empty() && text.size() < 20 &&
                      std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }) &&
                      (text[0] != '0' || text == "0"),
                  "invalid size");
    // Volumes are whole 4 KiB blocks: a size between two is rounded up (as
    // Qubes' LVM pool rounds up to its extents).
    uint64_t size = std::stoull(text);
    if (size % 4096 && size < UINT64_MAX - 4096) size += 4096 - size % 4096;
    on_storage(call, call.dest->uuid,
               [pool = pool_, uuid = call.dest->uuid, klass = call.dest->klass, volume = call.arg(), size] {
                   pool->resize(uuid, klass, volume, size);
                   return std::string();
               });
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

namespace {

// The bool of a volume setting (qubes.property.bool); anything else closes
// ("Invalid value", a ProtocolError).
bool volume_bool(std::string_view payload) {
    for (unsigned char c : payload) AdminApi::Call::enforce(c < 0x80, "Invalid value");
    auto value = parse_bool(payload);
    AdminApi::Call::enforce(value.has_value(), "Invalid value");
    return *value;
}

// qubes.utils.random_string: letters and digits.
std::string random_token(size_t length) {
    static const char kChars[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    std::random_device random;
    std::string out;
    for (size_t i = 0; i < length; ++i) out += kChars[random() % (sizeof kChars - 1)];
    return out;
}

}  // namespace

// Qubes lets rw change; Aerie's volumes have the rw their class gives them.
std::string AdminApi::volume_set_rw(Call& call) {
    Call::enforce(has_volume(*pool_, *call.dest, call.arg()), "no volume " + call.arg());
    bool value = volume_bool(call.payload());
    if (!call.dest->is_halted())
        throw qubes_error("QubesVMNotHaltedError", "Domain is not powered off: '" + call.dest->name + "'");
    auto info = pool_->info(call.dest->uuid, call.dest->klass, call.arg(), model_.template_chain(*call.dest));
    if (value != info.rw)
        throw qubes_error("QubesNotImplementedError", "The volume " + call.arg() + " of " + call.dest->name +
                                                          " is " + (info.rw ? "writable" : "read-only") +
                                                          " in Aerie: its rw cannot change");
    return {};
}

// No volume here is encrypted with an ephemeral key: only False is true.
std::string AdminApi::volume_set_ephemeral(Call& call) {
    Call::enforce(has_volume(*pool_, *call.dest, call.arg()), "no volume " + call.arg());
    if (volume_bool(call.payload()))
        throw qubes_error("QubesNotImplementedError",
                          "Aerie's volumes are not encrypted with an ephemeral key: ephemeral stays False");
    return {};
}

std::string AdminApi::volume_clear(Call& call) {
    Call::enforce(has_volume(*pool_, *call.dest, call.arg()), "no volume " + call.arg());
    if (!call.dest->is_halted())
        throw qubes_error("QubesVMNotHaltedError", "Domain is not powered off: '" + call.dest->name + "'");
    on_storage(call, call.dest->uuid,
               [pool = pool_, uuid = call.dest->uuid, klass = call.dest->klass, volume = call.arg()] {
                   pool->clear(uuid, klass, volume);
                   return std::string();
               });
    return {};
}

// A token that names the volume for one CloneTo. Few are kept: the oldest
// go first (qubesd keeps them all).
std::string AdminApi::volume_clone_from(Call& call) {
    Call::enforce(has_volume(*pool_, *call.dest, call.arg()), "no volume " + call.arg());
    constexpr size_t kMaxPendingClones = 64;
    while (pending_clones_.size() >= kMaxPendingClones) {
        auto oldest = std::min_element(pending_clones_.begin(), pending_clones_.end(), [](const auto& a, const auto& b) {
            return a.second.serial < b.second.serial;
        });
        pending_clones_.erase(oldest);
    }
    std::string token = random_token(32);
    Call::enforce(!pending_clones_.count(token), "token collision");
    pending_clones_[token] = PendingClone{call.dest->uuid, call.arg(), ++clone_serial_};
    return token;
}

std::string AdminApi::volume_clone_to(Call& call) {
    Call::enforce(has_volume(*pool_, *call.dest, call.arg()), "no volume " + call.arg());
    for (unsigned char c : call.payload()) Call::enforce(c < 0x80, "token is not ASCII");
    std::string token = call.payload();
    auto space = [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; };
    while (!token.empty() && space(token.back())) token.pop_back();
    while (!token.empty() && space(token.front())) token.erase(0, 1);
    auto it = pending_clones_.find(token);
    Call::enforce(it != pending_clones_.end(), "no such clone token");
    PendingClone from = it->second;
    pending_clones_.erase(it);
    // The source must still be there (the token is spent either way).
    const Qube* src = model_.find("uuid:" + from.uuid);
    Call::enforce(src && has_volume(*pool_, *src, from.volume), "the cloned volume is gone");
    // The volumes are matched by name (Aerie's pool keeps one kind of data
    // per name).
    Call::enforce(from.volume == call.arg(), "volumes of different names");
    if (!call.dest->is_halted())
        throw qubes_error("QubesVMNotHaltedError", "Domain is not powered off: '" + call.dest->name + "'");
    on_storage(call, call.dest->uuid,
               [pool = pool_, uuid = call.dest->uuid, klass = call.dest->klass, src_uuid = src->uuid,
                src_klass = src->klass, volume = call.arg()] {
                   pool->import_volume(uuid, klass, src_uuid, src_klass, volume);
                   return std::string();
               });
    return {};
}

// The first half of an import: where the data goes, and how much of it.
// Payload: empty (admin.vm.volume.Import: the volume's size) or the size
// (ImportWithSize).
std::string AdminApi::volume_import_begin(Call& call) {
    Call::enforce(has_volume(*pool_, *call.dest, call.arg()), "no volume " + call.arg());
    if (!call.dest->is_halted())
        throw qubes_error("QubesVMNotHaltedError", "Domain is not powered off: '" + call.dest->name + "'");
    std::optional<uint64_t> size;
    if (!call.payload().empty()) size = static_cast<uint64_t>(validate_size(call.payload(), false));
    std::string name = call.dest->name, volume = call.arg();
    on_storage(
        call, call.dest->uuid,
        [pool = pool_, uuid = call.dest->uuid, klass = call.dest->klass, volume, size] {
            std::string path = pool->begin_import(uuid, klass, volume, size).string();
            uint64_t bytes = size ? *size : storage::image_size(pool->image_path(uuid, volume));
            return std::to_string(bytes) + " " + path;
        },
        [this, name, volume](std::string body) {
            Call::enforce(body.find(' ') == body.rfind(' '), "Path contains whitespace");
            if (Qube* qube = model_.find(name))
                publish(qube, "domain-volume-import-begin",
                        {{"volume", volume}, {"size", body.substr(0, body.find(' '))}});
            return body;
        });
    return {};
}

// The second half: "ok", or "fail\nREASON" from the writer; the answer
// goes to the caller of admin.vm.volume.Import.
std::string AdminApi::volume_import_end(Call& call) {
    Call::enforce(has_volume(*pool_, *call.dest, call.arg()), "no volume " + call.arg());
    const std::string& payload = call.payload();
    const bool success = payload == "ok";
    for (unsigned char c : payload) Call::enforce(c < 0x80, "the import's status is not ASCII");
    std::string reason;
    if (size_t nl = payload.find('\n'); nl != std::string::npos) reason = payload.substr(nl + 1);
    std::string name = call.dest->name, volume = call.arg();
    on_storage(
        call, call.dest->uuid,
        [pool = pool_, uuid = call.dest->uuid, klass = call.dest->klass, volume, success] {
            pool->end_import(uuid, klass, volume, success);
            return std::string();
        },
        [this, name, volume, success, reason](std::string) -> std::string {
            if (Qube* qube = model_.find(name))
                publish(qube, "domain-volume-import-end",
                        {{"volume", volume}, {"success", success ? "True" : "False"}});
            if (!success) throw qubes_error("QubesException", "Data import failed: " + reason);
            return {};
        });
    return {};
}

}  // namespace aerie::admin
