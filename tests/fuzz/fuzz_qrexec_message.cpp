// Fuzzes everything Aerie's qrexec parses from an untrusted peer: framed
// messages (any type, any length), the sanitising of service requests, the
// agent's command lines, rpc-config files, policy daemon requests and the
// policy answer text. The first byte picks the parser.
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "qrexec/agent_request.hpp"
#include "qrexec/policy_client.hpp"
#include "qrexec/policy_request.hpp"
#include "qrexec/protocol.hpp"
#include "qrexec/sanitize.hpp"
#include "qrexec/service_config.hpp"

using namespace aerie::qrexec;

namespace {

void check(bool ok) {
    if (!ok) std::abort();
}

void fuzz_messages(std::string_view data) {
    // A stream of messages, as a daemon or agent reads it.
    while (data.size() >= kHeaderSize) {
        Header h;
        try {
            h = decode_header(data.substr(0, kHeaderSize));
        } catch (const ProtocolError&) {
            return;  // the peer is cut off
        }
        data.remove_prefix(kHeaderSize);
        if (data.size() < h.len) return;
        std::string_view payload = data.substr(0, h.len);
        data.remove_prefix(h.len);
        // What the daemon makes of it from an agent of each protocol version.
        for (uint32_t version : {2u, 3u, 4u}) {
            AgentRequest r = classify_agent_message(h, payload, version);
            if (auto* t = std::get_if<AgentTrigger>(&r)) {
                const auto& q = t->request;
                check(!q.service_and_arg.empty() && q.service_and_arg[0] != '+');
                for (char c : q.service_and_arg + q.target + q.requested_source.value_or(""))
                    check(c != '\0' && c != '\n' && c != ' ' && c != '/');
                check(q.ident.size() < kIdentLen && q.ident.find('\0') == std::string::npos);
                check(encode_service_refused_field(std::string(q.ident)).size() == kHeaderSize + kIdentLen);
            }
            if (auto* no = std::get_if<AgentRefusal>(&r)) check(no->ident_field.size() == kIdentLen);
        }
        try {
            Message m = decode_message(h, payload);
            if (auto* t = std::get_if<TriggerService>(&m)) {
                std::string why;
                if (auto r = sanitize_trigger(*t, &why)) {
                    // What reaches the policy is clean.
                    check(!r->service_and_arg.empty() && r->service_and_arg[0] != '+');
                    for (char c : r->service_and_arg + r->target)
                        check(c != '\0' && c != '\n' && c != ' ' && c != '/');
                }
                // Re-encoding what was decoded gives the same fields back.
                if (t->version >= 3 && t->target_domain.size() < kDomainNameLen &&
                    t->ident.size() < kIdentLen &&
                    (!t->source_domain || t->source_domain->size() < kDomainNameLen)) {
                    std::string again = encode_trigger(*t);
                    Header h2 = decode_header(std::string_view(again).substr(0, kHeaderSize));
                    auto back = std::get<TriggerService>(decode_message(h2, std::string_view(again).substr(kHeaderSize)));
                    check(back.service_name == t->service_name && back.target_domain == t->target_domain);
                }
            }
            if (auto* e = std::get_if<ExecParams>(&m)) {
                std::string error;
                (void)parse_cmdline(e->cmdline, &error);
                (void)parse_cmdline(e->cmdline, &error, CmdlineUser::Absent);
            }
        } catch (const ProtocolError&) {
        }
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
    if (size == 0) return 0;
    std::string_view data(reinterpret_cast<const char*>(bytes) + 1, size - 1);
    std::string error;
    switch (bytes[0] % 5) {
        case 0: fuzz_messages(data); break;
        case 1: (void)parse_cmdline(data, &error); break;
        case 2: (void)parse_rpc_config(data, &error); break;
        case 3:
            if (auto req = parse_policy_request(data, &error)) check(!req->source.empty() || true);
            (void)policy_request_end(data);
            break;
        case 4:
            if (auto answer = parse_policy_answer(data)) {
                auto result = answer->get("result");
                check(result == "allow" || result == "deny");
            }
            break;
    }
    return 0;
}
