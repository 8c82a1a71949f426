// How the qrexec daemon asks for a decision: the policy daemon's socket first
// (key=value request, answer text until EOF); if that fails, the policy
// program (qrexec-policy-exec) with the same question. Asynchronous: the
// daemon keeps serving while a decision is pending.
#pragma once

#include <asio.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>

namespace aerie::qrexec {

struct PolicyQuestion {
    std::string source;
    std::string intended_target;
    std::string service_and_arg;
    std::optional<std::string> requested_source;
};

// A parsed answer. allowed() only for "result=allow" with a target.
struct PolicyAnswer {
    std::map<std::string, std::string> fields;
    bool allowed() const;
    std::string get(const std::string& key) const;
};

// Parses the answer text strictly: every line key=value, first line result=.
std::optional<PolicyAnswer> parse_policy_answer(std::string_view text);

// The requested source of a relayed call, for the policy program: Qubes'
// program is called with "-- SOURCE TARGET SERVICE" only.
inline constexpr const char* kRequestedSourceEnv = "QREXEC_REQUESTED_SOURCE";

struct PolicyClientConfig {
    std::string socket_path = "/run/qubes/policy.sock";
    std::string program;  // fallback; empty: none
    std::chrono::milliseconds timeout{30000};
};

// Calls done(answer) exactly once; a failure of both ways is a deny.
void ask_policy(asio::io_context& io, const PolicyClientConfig& config,
                const PolicyQuestion& question, std::function<void(PolicyAnswer)> done);

// The request text for the policy daemon socket.
std::string policy_request_text(const PolicyQuestion& question);

}  // namespace aerie::qrexec
