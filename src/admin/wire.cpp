#include "admin/wire.hpp"

namespace aerie::admin {

namespace {

std::optional<ApiRequest> fail(std::string* error, const char* why) {
    if (error) *error = why;
    return std::nullopt;
}

}  // namespace

std::optional<ApiRequest> parse_request(std::string_view data, std::string* error) {
    if (data.size() > kMaxRequestBytes) return fail(error, "request too long");
    size_t nul = data.find('\0');
    if (nul == std::string_view::npos) return fail(error, "no NUL after the request header");
    std::string_view header = data.substr(0, nul);

    std::vector<std::string_view> fields;
    size_t start = 0;
    for (;;) {
        size_t space = header.find(' ', start);
        fields.push_back(header.substr(start, space - start));
        if (space == std::string_view::npos) break;
        start = space + 1;
    }
    if (fields.size() != 4) return fail(error, "request header needs four fields");
    for (auto f : fields)
        if (f.empty()) return fail(error, "empty field in the request header");

    ApiRequest r;
    std::string_view meth_arg = fields[0], dest_type = fields[2], dest = fields[3];
    if (dest_type == "keyword" && dest == "adminvm") {
        dest_type = "name";
        dest = "dom0";
    }
    if (dest_type != "name") return fail(error, "unknown destination type");
    size_t plus = meth_arg.find('+');
    r.method = std::string(meth_arg.substr(0, plus));
    if (plus != std::string_view::npos) r.arg = std::string(meth_arg.substr(plus + 1));
    if (r.method.empty()) return fail(error, "empty method");
    r.source = std::string(fields[1]);
    r.dest = std::string(dest);
    r.payload = std::string(data.substr(nul + 1));
    return r;
}

std::string encode_request(const ApiRequest& r) {
    std::string out = r.method;
    if (!r.arg.empty()) out += "+" + r.arg;
    out += " " + r.source + " name " + r.dest;
    out.push_back('\0');
    out += r.payload;
    return out;
}

std::string encode_success(std::string_view body) {
    std::string out("0\0", 2);
    out += body;
    return out;
}

std::string encode_exception(std::string_view type, std::string_view message, std::string_view traceback) {
    std::string out("2\0", 2);
    for (std::string_view part : {type, traceback, message}) {
        out += part;
        out.push_back('\0');
    }
    return out;
}

std::string encode_event(std::string_view subject, std::string_view event,
                         const std::vector<std::pair<std::string, std::string>>& kwargs) {
    std::string out("1\0", 2);
    auto field = [&out](std::string_view s) {
        out += s;
        out.push_back('\0');
    };
    field(subject);
    field(event);
    for (const auto& [k, v] : kwargs) {
        field(k);
        field(v);
    }
    out.push_back('\0');
    return out;
}

std::optional<ApiReply> parse_reply(std::string_view data, std::string* error) {
    auto bad = [error](const char* why) -> std::optional<ApiReply> {
        if (error) *error = why;
        return std::nullopt;
    };
    if (data.size() < 2 || data[1] != '\0') return bad("reply too short");
    ApiReply reply;
    if (data[0] == '0') {
        reply.body = std::string(data.substr(2));
        return reply;
    }
    if (data[0] != '2') return bad("unknown reply kind");
    reply.kind = ApiReply::Kind::Exception;
    std::string_view rest = data.substr(2);
    std::string* parts[] = {&reply.exc_type, &reply.traceback, &reply.message};
    for (std::string* part : parts) {
        size_t nul = rest.find('\0');
        if (nul == std::string_view::npos) return bad("exception reply not NUL-terminated");
        *part = std::string(rest.substr(0, nul));
        rest.remove_prefix(nul + 1);
    }
    return reply;
}

}  // namespace aerie::admin
