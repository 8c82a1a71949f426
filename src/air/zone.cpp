#include "air/zone.hpp"

#include <nlohmann/json.hpp>

#include <set>

#include "admin/qube.hpp"

namespace aerie::air {

using nlohmann::json;

namespace {

std::string text_field(const json& obj, const char* key, const std::string& where) {
    auto it = obj.find(key);
    if (it == obj.end()) throw ZoneError(where + ": no \"" + key + "\"");
    if (!it->is_string()) throw ZoneError(where + ": \"" + key + "\" is not a string");
    return it->get<std::string>();
}

bool printable_ascii(std::string_view text) {
    for (unsigned char c : text)
        if (c < 0x21 || c > 0x7e) return false;
    return true;
}

bool base64_char(char c) {
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '+' || c == '/';
}

// An optional credential: absent or "" is none; else checked by `invalid`.
std::string credential(const json& obj, const char* key, std::string (*invalid)(std::string_view)) {
    auto it = obj.find(key);
    if (it == obj.end()) return {};
    if (!it->is_string()) throw ZoneError(std::string("zone file: \"") + key + "\" is not a string");
    std::string value = it->get<std::string>();
    if (auto why = invalid(value); !value.empty() && !why.empty())
        throw ZoneError(std::string("zone file: ") + key + ": " + why);
    return value;
}

}  // namespace

std::string invalid_tls_cert(std::string_view pem) {
    constexpr std::string_view begin = "-----BEGIN CERTIFICATE-----\n", end = "-----END CERTIFICATE-----\n";
    if (pem.size() > 8192) return "a certificate has at most 8192 characters";
    if (!pem.starts_with(begin) || !pem.ends_with(end) || pem.size() <= begin.size() + end.size())
        return "not one PEM CERTIFICATE block";
    std::string_view body = pem.substr(begin.size(), pem.size() - begin.size() - end.size());
    // Lines of base64 (padding only at the end of the last).
    for (size_t pos = 0; pos < body.size();) {
        size_t nl = body.find('\n', pos);
        if (nl == std::string_view::npos || nl == pos || nl - pos > 76) return "not one PEM CERTIFICATE block";
        std::string_view line = body.substr(pos, nl - pos);
        size_t data = line.find_last_not_of('=') + 1;
        if (line.size() - data > 2 || (data < line.size() && nl + 1 != body.size()))
            return "not one PEM CERTIFICATE block";
        for (char c : line.substr(0, data))
            if (!base64_char(c)) return "not one PEM CERTIFICATE block";
        pos = nl + 1;
    }
    return {};
}

std::string invalid_ssh_key(std::string_view line) {
    // "ssh-ed25519 " + base64 of the 51-byte key blob (which starts with the
    // type name) + an optional comment.
    constexpr std::string_view type = "ssh-ed25519 ", blob_start = "AAAAC3NzaC1lZDI1NTE5AAAAI";
    const char* why = "not one line \"ssh-ed25519 BASE64 [COMMENT]\"";
    if (line.size() > 200 || !line.starts_with(type)) return why;
    std::string_view rest = line.substr(type.size());
    std::string_view blob = rest.substr(0, rest.find(' '));
    if (blob.size() != 68 || !blob.starts_with(blob_start)) return why;
    for (char c : blob)
        if (!base64_char(c)) return why;
    if (blob.size() == rest.size()) return {};
    std::string_view comment = rest.substr(blob.size() + 1);
    if (comment.empty() || comment.size() > 64) return why;
    for (char c : comment) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  std::string_view("._@:+=/-").find(c) != std::string_view::npos;
        if (!ok) return why;
    }
    return {};
}

std::string invalid_zone_name(std::string_view name) {
    if (name.empty() || name.size() > 31) return "a zone name has 1 to 31 characters";
    for (size_t i = 0; i < name.size(); ++i) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0);
        if (!ok) return "a zone name is lowercase letters, digits and '-' (not first)";
    }
    return {};
}

std::string invalid_transport(std::string_view service) {
    if (service.empty() || service.size() > 31) return "a transport service name has 1 to 31 characters";
    for (char c : service) {
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                  c == '_' || c == '-';
        if (!ok) return "a transport service name is letters, digits, '.', '_' and '-'";
    }
    return {};
}

Zone parse_zone(std::string_view json_text) {
    json doc = json::parse(json_text, nullptr, false);
    if (doc.is_discarded()) throw ZoneError("zone file: not valid JSON");
    if (!doc.is_object()) throw ZoneError("zone file: not a JSON object");
    Zone zone;
    zone.name = text_field(doc, "zone", "zone file");
    if (auto why = invalid_zone_name(zone.name); !why.empty()) throw ZoneError("zone file: zone: " + why);
    zone.address = text_field(doc, "address", "zone file");
    if (zone.address.empty() || zone.address.size() > 255 || !printable_ascii(zone.address))
        throw ZoneError("zone file: address: 1 to 255 printable characters without spaces");
    zone.transport = text_field(doc, "transport", "zone file");
    if (auto why = invalid_transport(zone.transport); !why.empty()) throw ZoneError("zone file: transport: " + why);
    auto qubes = doc.find("qubes");
    if (qubes == doc.end() || !qubes->is_array()) throw ZoneError("zone file: \"qubes\" is not a list");
    if (qubes->size() > 1000) throw ZoneError("zone file: more than 1000 qubes");
    std::set<std::string> seen;
    for (size_t i = 0; i < qubes->size(); ++i) {
        const json& q = (*qubes)[i];
        std::string where = "zone file: qubes[" + std::to_string(i) + "]";
        if (!q.is_object()) throw ZoneError(where + ": not an object");
        ExportedQube e{text_field(q, "name", where), text_field(q, "label", where)};
        if (auto why = admin::invalid_qube_name_reason(e.name); !why.empty()) throw ZoneError(where + ": name: " + why);
        if (auto why = admin::invalid_qube_name_reason(e.label); !why.empty() && !e.label.empty())
            throw ZoneError(where + ": label: not a label name");
        if (!seen.insert(e.name).second) throw ZoneError(where + ": " + e.name + " is listed twice");
        zone.qubes.push_back(std::move(e));
    }
    zone.tls_cert = credential(doc, "tls_cert", invalid_tls_cert);
    zone.ssh_key = credential(doc, "ssh_key", invalid_ssh_key);
    zone.ssh_host_key = credential(doc, "ssh_host_key", invalid_ssh_key);
    return zone;
}

std::string format_zone(const Zone& zone) {
    json doc = {{"zone", zone.name}, {"address", zone.address}, {"transport", zone.transport}};
    json qubes = json::array();
    for (const auto& q : zone.qubes) qubes.push_back({{"name", q.name}, {"label", q.label}});
    doc["qubes"] = qubes;
    for (const auto& [key, value] : {std::pair{"tls_cert", &zone.tls_cert}, std::pair{"ssh_key", &zone.ssh_key},
                                     std::pair{"ssh_host_key", &zone.ssh_host_key}})
        if (!value->empty()) doc[key] = *value;
    return doc.dump(2) + "\n";
}

}  // namespace aerie::air
