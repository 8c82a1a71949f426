// admin.vm.feature.*, admin.vm.tag.*, admin.vm.notes.*.
#include "admin/api_call.hpp"
#include "admin/dispvm_rules.hpp"

namespace aerie::admin {

namespace {

constexpr size_t kMaxNotesBytes = 256000;

// Who made a qube is the daemon's to say (qubes.ext.admin: PermissionDenied).
void check_tag_changeable(const Qube& qube, const std::string& tag) {
    if ((tag.rfind("created-by-", 0) == 0 || tag.rfind("disp-created-by-", 0) == 0) && !qube.is_admin())
        throw permission_denied("changing the tag " + tag + " is prohibited");
}

ApiError feature_not_found(const Qube& qube, const std::string& feature) {
    return qubes_error("QubesFeatureNotFoundError", "Feature not set for domain " + qube.name + ": " + feature);
}

void check_tag(const std::string& tag) {
    if (!is_valid_tag(tag)) throw protocol_error("invalid tag: '" + tag + "'");
}

// Notes are UTF-8 text for display: anything that is not valid UTF-8 or is
// a control character other than newline and tab becomes '_'.
std::string sanitize_notes(std::string_view raw) {
    std::string out;
    out.reserve(raw.size());
    size_t i = 0;
    while (i < raw.size()) {
        unsigned char c = static_cast<unsigned char>(raw[i]);
        size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
        bool valid = len > 0 && i + len <= raw.size();
        for (size_t k = 1; valid && k < len; ++k) valid = (static_cast<unsigned char>(raw[i + k]) & 0xc0) == 0x80;
        if (!valid) {
            out += '_';
            ++i;
            continue;
        }
        if (len == 1 && ((c < 0x20 && c != '\n' && c != '\t') || c == 0x7f))
            out += '_';
        else
            out.append(raw.substr(i, len));
        i += len;
    }
    return out;
}

}  // namespace

std::string AdminApi::feature_list(Call& call) {
    std::string out;
    for (const auto& [key, value] : call.dest->features) out += key + "\n";
    return out;
}

std::string AdminApi::feature_get(Call& call) {
    auto it = call.dest->features.find(call.arg());
    if (it == call.dest->features.end()) throw feature_not_found(*call.dest, call.arg());
    return it->second;
}

std::string AdminApi::feature_check(Call& call) {
    const std::string& method = call.request.method;
    std::string kind = method.substr(method.rfind('.') + 1);
    bool tpl = kind == "CheckWithTemplate" || kind == "CheckWithTemplateAndAdminVM";
    bool netvm = kind == "CheckWithNetvm";
    bool admin = kind == "CheckWithAdminVM" || kind == "CheckWithTemplateAndAdminVM";
    auto value = model_.feature_check_with(*call.dest, call.arg(), tpl, netvm, admin);
    if (!value) throw feature_not_found(*call.dest, call.arg());
    return *value;
}

std::string AdminApi::feature_set(Call& call) {
    if (is_managed_preload_feature(call.arg()))
        throw permission_denied("feature " + call.arg() + " is managed by the system");
    // Qubes R4.3's admin.vm.feature.Set: a name of [a-zA-Z0-9_.-]+ and a
    // value of printable ASCII only (QubesValueError: no reply).
    for (unsigned char c : call.payload())
        if (c >= 0x80) throw protocol_error("feature value is not ASCII");
    for (char c : call.arg()) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                  c == '.' || c == '-';
        if (!ok) throw value_error("feature name contains illegal characters");
    }
    for (unsigned char c : call.payload())
        if (c < 0x20 || c > 0x7e) throw value_error(call.arg() + " value contains illegal characters");
    if (auto why = api_feature_refusal(call.arg(), call.payload()); !why.empty()) throw value_error(why);
    registry_.change_features({{call.dest, call.arg(), call.payload()}});
    return {};
}

std::string AdminApi::feature_remove(Call& call) {
    Qube& qube = *call.dest;
    if (is_managed_preload_feature(call.arg()))
        throw permission_denied("feature " + call.arg() + " is managed by the system");
    if (!qube.features.count(call.arg())) throw feature_not_found(qube, call.arg());
    registry_.change_features({{&qube, call.arg(), std::nullopt}});
    return {};
}

std::string AdminApi::tag_list(Call& call) {
    std::string out;
    for (const auto& tag : call.dest->tags) out += tag + "\n";
    return out;
}

std::string AdminApi::tag_get(Call& call) {
    check_tag(call.arg());
    return call.dest->tags.count(call.arg()) ? "1" : "0";
}

std::string AdminApi::tag_set(Call& call) {
    check_tag(call.arg());
    Qube& qube = *call.dest;
    check_tag_changeable(qube, call.arg());
    registry_.change_tags(qube, {call.arg()}, {});
    return {};
}

std::string AdminApi::tag_remove(Call& call) {
    check_tag(call.arg());
    Qube& qube = *call.dest;
    check_tag_changeable(qube, call.arg());
    if (!qube.tags.count(call.arg()))
        throw qubes_error("QubesTagNotFoundError", "Tag not set for domain " + qube.name + ": " + call.arg());
    registry_.change_tags(qube, {}, {call.arg()});
    return {};
}

std::string AdminApi::notes_get(Call& call) {
    Call::enforce(!call.dest_is_dom0(), "dom0 has no notes");
    return call.dest->notes;
}

std::string AdminApi::notes_set(Call& call) {
    Call::enforce(!call.dest_is_dom0(), "dom0 has no notes");
    Call::enforce(call.payload().size() <= kMaxNotesBytes,
                  "Maximum note size is 256000 bytes (" + std::to_string(call.payload().size()) + " bytes received)");
    std::string notes = sanitize_notes(call.payload());
    Store::Transaction txn(store_);
    txn.set_notes(call.dest->uuid, notes);
    txn.commit();
    call.dest->notes = std::move(notes);
    return {};
}

}  // namespace aerie::admin
