// The admin daemon's socket framing (qubesd's): a request is
// "METHOD[+ARG] SOURCE DEST_TYPE DEST\0PAYLOAD" up to the client's EOF; a
// reply is "0\0" + body (success), "1\0" + events (admin.Events), or
// "2\0TYPE\0TRACEBACK\0MESSAGE\0" (a Qubes exception). Requests are parsed
// once, here, into a typed value.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace aerie::admin {

inline constexpr size_t kMaxRequestBytes = 65536;

struct ApiRequest {
    std::string method;  // e.g. "admin.vm.property.Get"
    std::string arg;     // after the first '+' ("" when none)
    std::string source;  // the calling qube ("dom0" on the local socket)
    std::string dest;    // a qube name; "keyword adminvm" arrives as "dom0"
    std::string payload;
};

// Parses one request. nullopt (with *error) for anything malformed: over
// kMaxRequestBytes, no NUL, not exactly four space-separated header fields,
// a destination type other than "name" (or "keyword adminvm"), an empty field.
// The admin daemon then closes the connection without a reply.
std::optional<ApiRequest> parse_request(std::string_view data, std::string* error = nullptr);

// The request bytes a client sends.
std::string encode_request(const ApiRequest& request);

std::string encode_success(std::string_view body);
std::string encode_exception(std::string_view type, std::string_view message,
                             std::string_view traceback = {});
// One event of an admin.Events stream: qubesd sends the "1\0" header before
// every event, then "SUBJECT\0EVENT\0(KEY\0VALUE\0)*\0". SUBJECT is empty
// for events of the system itself.
std::string encode_event(std::string_view subject, std::string_view event,
                         const std::vector<std::pair<std::string, std::string>>& kwargs);

// A reply as a client sees it.
struct ApiReply {
    enum class Kind { Success, Exception } kind = Kind::Success;
    std::string body;       // success
    std::string exc_type;   // exception
    std::string traceback;  // exception
    std::string message;    // exception
};
std::optional<ApiReply> parse_reply(std::string_view data, std::string* error = nullptr);

}  // namespace aerie::admin
