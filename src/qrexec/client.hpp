// Aerie's qrexec client library, used by qrexec-client-vm and by programs in
// a qube that call services directly (no process spawn per call):
// request a call from the agent, then stream over the data channel.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "qrexec/unique_fd.hpp"

namespace aerie::qrexec {

struct CallRequest {
    std::string agent_socket;  // empty: /var/run/qubes/qrexec-agent
    std::string target;
    std::string service_and_arg;
    std::optional<std::string> source_qube;  // --source-qube (relays only)
    std::chrono::milliseconds timeout{120000};  // for the service side to connect
};

// The outcome of asking the agent: a data channel, or a refusal (the agent
// closed the connection without an answer, as Qubes' agent refuses).
struct CallChannel {
    bool refused = false;
    std::string error;  // set when neither a channel nor a refusal came
    UniqueFd channel;
    UniqueFd agent;  // the request's connection: open until the call ends
    uint32_t connect_domain = 0, connect_port = 0;
};

CallChannel open_call(const CallRequest& request);

// Streams a call over an open channel as the caller: `input` is sent as the
// service's stdin (EOF when it ends), its stdout goes to `output`, its stderr
// to `errors` (any may be -1: nothing / discard). Returns the service's exit
// code, or 255 if the channel broke first. Takes ownership of the fds.
int run_call(UniqueFd channel, UniqueFd input, UniqueFd output, UniqueFd errors);

// A blocking call from a long-running program: sends `input`, closes the
// service's stdin, collects stdout until the exit code arrives.
struct CallResult {
    int exit_code = 255;
    std::string output;
    std::string errors;
};
CallResult call_service(const CallRequest& request, std::string_view input);

}  // namespace aerie::qrexec
