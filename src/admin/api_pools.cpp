// admin.pool.*: Aerie's one storage pool (a `file` pool, storage/pool.hpp),
// answered as Qubes R4.3's qubesd answers for a file pool. Other pools cannot
// be added, and this one cannot be removed: refused with Qubes' own errors
// where Qubes would refuse too, else with QubesNotImplementedError.
#include <sys/statvfs.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <vector>

#include "admin/api_call.hpp"
#include "storage/pool.hpp"

namespace aerie::admin {

namespace {

// The file driver's __init__ parameters (qubes.storage.driver_parameters),
// in their order; dir_path is the one without a default.
constexpr const char* kFileDriverParameters[] = {"revisions_to_keep", "dir_path", "ephemeral_volatile"};

struct PoolSpace {
    uint64_t size = 0, usage = 0;
};

// qubes.storage.file.FilePool.size / .usage: the file system holding the pool.
PoolSpace space_of(const std::filesystem::path& dir) {
    struct statvfs st {};
    if (::statvfs(dir.c_str(), &st) < 0) return {};
    return {uint64_t(st.f_frsize) * st.f_blocks, uint64_t(st.f_frsize) * (st.f_blocks - st.f_bfree)};
}

// Python's str.splitlines() over ASCII text.
std::vector<std::string> split_lines(std::string_view text) {
    std::vector<std::string> lines;
    std::string line;
    for (size_t i = 0; i < text.size(); ++i) {
        char c = text[i];
        if (c == '\n' || c == '\r' || c == '\v' || c == '\f' || c == '\x1c' || c == '\x1d' || c == '\x1e') {
            if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') ++i;
            lines.push_back(std::move(line));
            line.clear();
        } else {
            line += c;
        }
    }
    if (!line.empty()) lines.push_back(std::move(line));
    return lines;
}

bool pool_name_chars_ok(std::string_view name) {
    for (char c : name) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                  c == '_' || c == '.';
        if (!ok) return false;
    }
    return true;
}

}  // namespace

void AdminApi::add_pool_methods() {
    using P = Payload;
    using A = Arg;
    methods_["admin.pool.List"] = {&AdminApi::pool_list, P::None, A::None};
    methods_["admin.pool.ListDrivers"] = {&AdminApi::pool_list_drivers, P::None, A::None};
    methods_["admin.pool.Info"] = {&AdminApi::pool_info, P::None, A::Optional};
    methods_["admin.pool.UsageDetails"] = {&AdminApi::pool_usage_details, P::None, A::Optional};
    methods_["admin.pool.Add"] = {&AdminApi::pool_add, P::Optional, A::Optional};
    methods_["admin.pool.Remove"] = {&AdminApi::pool_remove, P::None, A::Optional};
    methods_["admin.pool.volume.List"] = {&AdminApi::pool_volume_list, P::None, A::Optional};
    methods_["admin.pool.Set.revisions_to_keep"] = {&AdminApi::pool_set_revisions, P::Optional, A::Optional};
    methods_["admin.pool.Set.ephemeral_volatile"] = {&AdminApi::pool_set_ephemeral, P::Optional, A::Optional};
}

// The pool named by the argument; anything else closes (qubesd's enforce).
storage::FilePool& AdminApi::named_pool(Call& call) {
    Call::enforce(call.dest_is_dom0(), "pools live on dom0");
    Call::enforce(call.arg() == pool_->name(), "no pool '" + call.arg() + "'");
    return *pool_;
}

std::string AdminApi::pool_list(Call& call) {
    Call::enforce(call.dest_is_dom0(), "pools live on dom0");
    return pool_->name() + "\n";
}

std::string AdminApi::pool_list_drivers(Call& call) {
    Call::enforce(call.dest_is_dom0(), "pools live on dom0");
    std::string out = "file";
    for (const char* parameter : kFileDriverParameters) out += std::string(" ") + parameter;
    return out + "\n";
}

std::string AdminApi::pool_info(Call& call) {
    storage::FilePool& pool = named_pool(call);
    PoolSpace space = space_of(pool.dir());
    // The pool's config, sorted by key, then size and usage.
    return "dir_path=" + pool.dir().string() +
           "\ndriver=file\nephemeral_volatile=False\nname=" + pool.name() +
           "\nrevisions_to_keep=" + std::to_string(pool.revisions_to_keep()) +
           "\nsize=" + std::to_string(space.size) + "\nusage=" + std::to_string(space.usage) + "\n";
}

std::string AdminApi::pool_usage_details(Call& call) {
    storage::FilePool& pool = named_pool(call);
    PoolSpace space = space_of(pool.dir());
    return "data_size=" + std::to_string(space.size) + "\ndata_usage=" + std::to_string(space.usage) + "\n";
}

std::string AdminApi::pool_add(Call& call) {
    Call::enforce(call.dest_is_dom0(), "pools live on dom0");
    if (call.arg() != "file") throw qubes_error("QubesException", "unexpected driver name: " + call.arg());
    for (unsigned char c : call.payload()) Call::enforce(c < 0x80, "pool config is not ASCII");
    std::map<std::string, std::string> config;
    for (const std::string& line : split_lines(call.payload())) {
        size_t eq = line.find('=');
        Call::enforce(eq != std::string::npos, "pool config line without '='");
        Call::enforce(config.emplace(line.substr(0, eq), line.substr(eq + 1)).second,
                      "duplicated pool option");
    }
    auto name = config.find("name");
    Call::enforce(name != config.end(), "pool config without a name");
    const std::string pool_name = name->second;
    config.erase(name);
    Call::enforce(pool_name_chars_ok(pool_name), "invalid pool name");
    Call::enforce(pool_name != pool_->name(), "pool " + pool_name + " exists");
    std::string unexpected;
    for (const auto& [key, value] : config) {
        bool known = false;
        for (const char* parameter : kFileDriverParameters) known = known || key == parameter;
        if (!known) unexpected += (unexpected.empty() ? "" : " ") + key;
    }
    if (!unexpected.empty()) throw qubes_error("QubesException", "unexpected driver options: " + unexpected);
    if (!config.count("dir_path"))
        throw qubes_error("QubesException", "missing required driver options: dir_path");
    throw qubes_error("QubesNotImplementedError", "Aerie keeps every volume in its one storage pool (" +
                                                      pool_->name() + "): pool " + pool_name +
                                                      " cannot be added");
}

std::string AdminApi::pool_remove(Call& call) {
    named_pool(call);
    // qubes.app.Qubes.remove_pool: in use by volumes, else as the default pool.
    for (const Qube* qube : model_.qubes_by_name()) {
        if (!qube->is_admin() && !pool_->volumes(qube->klass).empty())
            throw qubes_error("QubesPoolInUseError", "Storage pool is in use: '" + pool_->name() + "'");
    }
    throw qubes_error("QubesPoolInUseError", "Storage pool is in use: set as default_pool");
}

std::string AdminApi::pool_volume_list(Call& call) {
    named_pool(call);
    std::string out;
    for (const Qube* qube : model_.qubes_by_name()) {
        if (qube->is_admin()) continue;
        for (const auto& volume : pool_->volumes(qube->klass))
            out += storage::FilePool::volume_vid(qube->uuid, volume) + "\n";
    }
    return out;
}

std::string AdminApi::pool_set_revisions(Call& call) {
    storage::FilePool& pool = named_pool(call);
    long long count = validate_size(call.payload(), true);
    Call::enforce(count >= -1, "Invalid value for revisions_to_keep");
    // Qubes' file driver keeps at most one; Aerie's keeps as many as asked.
    Call::enforce(count < 1000, "revisions_to_keep out of range");
    try {
        pool.set_revisions_to_keep(static_cast<int>(count));
    } catch (const storage::StorageError& e) {
        throw qubes_error("StoragePoolException", e.what());
    }
    return {};
}

std::string AdminApi::pool_set_ephemeral(Call& call) {
    named_pool(call);
    for (unsigned char c : call.payload()) Call::enforce(c < 0x80, "Invalid value");
    auto value = parse_bool(call.payload());
    Call::enforce(value.has_value(), "Invalid value");
    // Volatile volumes are not encrypted with an ephemeral key here.
    if (*value)
        throw qubes_error("QubesNotImplementedError",
                          "Aerie's volatile volumes are not encrypted: ephemeral_volatile stays False");
    return {};
}

// qubes.api.AbstractQubesAPI.validate_size: decimal digits (a '-' first when
// allowed), at most 19, no leading zero; anything else closes.
long long AdminApi::validate_size(std::string_view text, bool allow_negative) {
    bool negative = allow_negative && !text.empty() && text[0] == '-';
    if (negative) text.remove_prefix(1);
    Call::enforce(
        !text.empty() && std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }),
        "Size must be ASCII digits (only)");
    Call::enforce(text.size() < 20, "Sizes limited to 19 decimal digits");
    Call::enforce(text[0] != '0' || text == "0", "Spurious leading zeros not allowed");
    unsigned long long value = std::stoull(std::string(text));
    Call::enforce(value <= static_cast<unsigned long long>(INT64_MAX), "size out of range");
    return negative ? -static_cast<long long>(value) : static_cast<long long>(value);
}

}  // namespace aerie::admin
