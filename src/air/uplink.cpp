#include "air/uplink.hpp"

#include <vector>

#include "air/zone.hpp"

namespace aerie::air {

namespace {

// The words of a line: exactly `count`, separated by single spaces, no
// control bytes anywhere.
std::vector<std::string_view> words(std::string_view line, size_t count, const char* what) {
    for (unsigned char c : line)
        if (c < 0x20 || c == 0x7f) throw AirError(std::string(what) + ": control byte in the line");
    std::vector<std::string_view> out;
    for (size_t pos = 0;;) {
        size_t space = line.find(' ', pos);
        std::string_view word = line.substr(pos, space == std::string_view::npos ? line.npos : space - pos);
        if (word.empty()) throw AirError(std::string(what) + ": words are separated by single spaces");
        out.push_back(word);
        if (space == std::string_view::npos) break;
        pos = space + 1;
    }
    if (out.size() != count)
        throw AirError(std::string(what) + ": " + std::to_string(count) + " words expected, got " +
                       std::to_string(out.size()));
    return out;
}

std::string checked_zone(std::string_view zone, const char* what) {
    if (auto why = invalid_zone_name(zone); !why.empty()) throw AirError(std::string(what) + ": " + why);
    return std::string(zone);
}

Transport checked_transport(std::string_view word, const char* what) {
    auto t = parse_transport(word);
    if (!t) throw AirError(std::string(what) + ": the transport is tls or ssh");
    return *t;
}

}  // namespace

std::string_view transport_word(Transport t) { return t == Transport::Tls ? "tls" : "ssh"; }

std::optional<Transport> parse_transport(std::string_view word) {
    if (word == "tls") return Transport::Tls;
    if (word == "ssh") return Transport::Ssh;
    return std::nullopt;
}

UplinkRequest parse_uplink_request(std::string_view line) {
    if (line.size() >= kMaxMessage) throw AirError("request: longer than 512 bytes");
    if (line == "listen") return {UplinkRequest::Kind::Listen, {}};
    if (line.starts_with("connect ")) {
        auto w = words(line, 2, "request");
        return {UplinkRequest::Kind::Connect, checked_zone(w[1], "request")};
    }
    if (line == "connect") throw AirError("request: connect needs a zone");
    throw AirError("request: unknown (connect ZONE or listen)");
}

std::string format_connect(std::string_view zone) { return "connect " + checked_zone(zone, "connect") + "\n"; }

std::string format_ok() { return "ok\n"; }

std::string format_error(std::string_view reason) {
    std::string out = "error ";
    // The whole line fits one message.
    for (unsigned char c : reason.substr(0, kMaxMessage - out.size() - 1))
        out += (c < 0x20 || c == 0x7f) ? '?' : static_cast<char>(c);
    return out + "\n";
}

void expect_ok(std::string_view line) {
    if (line == "ok") return;
    if (line.starts_with("error ")) throw AirError(std::string(line.substr(6)));
    std::string shown;
    for (unsigned char c : line.substr(0, 64)) shown += (c < 0x20 || c >= 0x7f) ? '?' : static_cast<char>(c);
    throw AirError("unexpected answer from the host: " + shown);
}

std::string format_accept(const Accept& a) {
    return "accept " + checked_zone(a.zone, "accept") + " " + std::string(transport_word(a.transport)) + "\n";
}

Accept parse_accept(std::string_view line) {
    if (line.size() >= kMaxMessage) throw AirError("accept: longer than 512 bytes");
    auto w = words(line, 3, "accept");
    if (w[0] != "accept") throw AirError("accept: not an accept");
    return {checked_zone(w[1], "accept"), checked_transport(w[2], "accept")};
}

std::string format_preamble(const Preamble& p) {
    return "aerie-air/1 " + checked_zone(p.from_zone, "preamble") + " " + std::string(transport_word(p.transport)) +
           "\n";
}

Preamble parse_preamble(std::string_view line) {
    if (line.size() >= kMaxPreamble) throw AirError("preamble: longer than 128 bytes");
    auto w = words(line, 3, "preamble");
    if (w[0] != "aerie-air/1") throw AirError("preamble: not aerie-air/1");
    return {checked_zone(w[1], "preamble"), checked_transport(w[2], "preamble")};
}

}  // namespace aerie::air
