#include "admin/admin_policy.hpp"

#include "admin/model.hpp"
#include "policy/evaluate.hpp"
#include "policy/files.hpp"

namespace aerie::admin {

namespace {

constexpr auto kReloadAfter = std::chrono::seconds(1);

// One NUL-ended field of an encoded event from `pos`; nullopt at the end.
std::optional<std::string_view> field(std::string_view data, size_t& pos) {
    size_t end = data.find('\0', pos);
    if (end == std::string_view::npos) return std::nullopt;
    std::string_view out = data.substr(pos, end - pos);
    pos = end + 1;
    return out;
}

}  // namespace

AdminPolicy::AdminPolicy(std::vector<std::string> dirs) {
    if (!dirs.empty()) options_.dirs = std::move(dirs);
}

void AdminPolicy::refresh(const Model& model) {
    auto now = std::chrono::steady_clock::now();
    if (loaded_at_ && now - *loaded_at_ < kReloadAfter) return;
    loaded_at_ = now;
    try {
        policy::DiskFiles files;
        policy_ = std::make_unique<policy::Policy>(policy::load_policy(files, options_));
    } catch (const std::exception&) {
        policy_.reset();  // a broken policy allows nothing
    }
    try {
        system_ =
            std::make_unique<policy::SystemInfo>(policy::SystemInfo::from_json(model.system_info_json()));
    } catch (const std::exception&) {
        system_.reset();
    }
}

bool AdminPolicy::allows(const Model& model, std::string_view service, std::string_view argument,
                         const std::string& source, const std::string& target) {
    refresh(model);
    if (!policy_ || !system_) return false;
    policy::Request request;
    request.service = std::string(service);
    request.argument = std::string(argument);
    request.source = source;
    request.target = target;
    return policy::evaluate(*policy_, *system_, request).verdict == policy::Verdict::Allow;
}

bool AdminPolicy::allows_event(const Model& model, const std::string& source, std::string_view encoded) {
    if (encoded.substr(0, 2) != std::string_view("1\0", 2)) return false;
    size_t pos = 2;
    auto subject = field(encoded, pos);
    auto event = field(encoded, pos);
    if (!subject || !event) return false;
    std::string target(*subject);
    if (target.empty()) {
        target = "@adminvm";
        while (auto key = field(encoded, pos)) {
            if (key->empty()) break;
            auto value = field(encoded, pos);
            if (!value) break;
            if (*key == "vm") {
                target = std::string(*value);
                break;
            }
        }
    }
    std::string argument = "+" + std::string(*event);
    for (char& c : argument)
        if (c == ':') c = '_';
    return allows(model, "admin.Events", argument, source, target);
}

}  // namespace aerie::admin
