// The qrexec wire protocol (v4, as in Qubes R4.3): message numbers, limits,
// and the typed form of every message. Bytes from a peer are decoded once,
// here, into these structs; malformed input is a ProtocolError, never a crash.
#pragma once

#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace aerie::qrexec {

enum class MsgType : uint32_t {
    DataStdin = 0x190,
    DataStdout = 0x191,
    DataStderr = 0x192,
    DataExitCode = 0x193,
    ExecCmdline = 0x200,
    JustExec = 0x201,
    ServiceConnect = 0x202,
    ServiceRefused = 0x203,
    TriggerService = 0x210,
    ConnectionTerminated = 0x211,
    TriggerService3 = 0x212,
    TriggerService4 = 0x213,
    Hello = 0x300,
};

const char* msg_type_name(uint32_t type);

inline constexpr uint32_t kProtocolVersion = 4;        // agent <-> daemon, data channels
inline constexpr uint32_t kClientProtocolVersion = 3;  // daemon socket clients
inline constexpr uint32_t kMinProtocolVersion = 2;
inline constexpr size_t kMaxDataChunk = 65536;         // v3+ (4096 for v2 peers)
inline constexpr size_t kMaxDataChunkV2 = 4096;
inline constexpr size_t kMaxServiceNameLen = 65000;
inline constexpr size_t kMaxQrexecCmdLen = 65535;
inline constexpr uint32_t kControlPort = 512;
inline constexpr uint32_t kFirstDataPort = 513;
inline constexpr uint32_t kLastDataPort = 768;         // 256 data ports at most
inline constexpr int kExitProblem = 125;
inline constexpr int kExitRefused = 126;
inline constexpr int kExitNotFound = 127;

inline constexpr size_t kIdentLen = 32;
inline constexpr size_t kDomainNameLen = 64;    // v3/v4 target/source fields
inline constexpr size_t kDomainNameLenV2 = 32;  // v2 target field
inline constexpr size_t kServiceNameLenV2 = 64;
inline constexpr size_t kHeaderSize = 8;

// The largest payload any message may carry; a header announcing more is a
// protocol violation (the peer is cut off, nothing is allocated).
inline constexpr size_t kMaxPayload = 8 + kMaxQrexecCmdLen + 1 + kMaxDataChunk;

class ProtocolError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct Header {
    uint32_t type = 0;
    uint32_t len = 0;
};

// --- typed payloads --------------------------------------------------------

struct Hello {
    uint32_t version = kProtocolVersion;
};

// EXEC_CMDLINE, JUST_EXEC: run a command line; SERVICE_CONNECT carries an
// ident instead of a command line (see ServiceConnect).
struct ExecParams {
    uint32_t connect_domain = 0;
    uint32_t connect_port = 0;
    std::string cmdline;  // without the terminating NUL
};

struct ServiceConnect {
    uint32_t connect_domain = 0;
    uint32_t connect_port = 0;
    std::string ident;
};

struct ServiceRefused {
    std::string ident;
};

// TRIGGER_SERVICE (v2), 3 and 4 all decode to this; source_domain is set only by v4.
struct TriggerService {
    uint32_t version = 4;  // 2, 3 or 4: which message it came as
    std::optional<std::string> source_domain;
    std::string target_domain;
    std::string ident;
    std::string service_name;
};

struct ConnectionTerminated {
    uint32_t domain = 0;
    uint32_t port = 0;
};

struct Data {
    MsgType stream = MsgType::DataStdout;  // DataStdin, DataStdout or DataStderr
    std::string bytes;                     // empty: EOF
};

struct ExitCode {
    uint32_t code = 0;
};

using Message = std::variant<Hello, ExecParams, ServiceConnect, ServiceRefused, TriggerService,
                             ConnectionTerminated, Data, ExitCode>;

// --- decoding (untrusted bytes) -------------------------------------------

// Decodes a header from exactly 8 bytes; rejects a length over max_payload.
Header decode_header(std::string_view bytes, size_t max_payload = kMaxPayload);

// Decodes one message body. For ExecCmdline/JustExec the result is ExecParams
// (the caller knows which from header.type). Throws ProtocolError naming what
// was wrong (unknown type, short payload, missing NUL, oversized field...).
Message decode_message(const Header& header, std::string_view payload);

// --- encoding --------------------------------------------------------------

std::string encode_header(MsgType type, uint32_t len);
std::string encode_hello(uint32_t version);
std::string encode_exec(MsgType type, const ExecParams& params);  // ExecCmdline/JustExec
std::string encode_service_connect(const ServiceConnect& params);
std::string encode_service_refused(std::string_view ident);
std::string encode_trigger(const TriggerService& trigger);  // by trigger.version
std::string encode_connection_terminated(uint32_t domain, uint32_t port);
// The bare struct exec_params (8 bytes, no header): the agent's answer to a
// local qrexec-client-vm whose call was allowed.
std::string encode_connect_params(uint32_t domain, uint32_t port);
std::string encode_data(MsgType stream, std::string_view bytes);
std::string encode_exit_code(uint32_t code);

// Copies s into a fixed-size NUL-padded field; throws if it does not fit
// with its terminating NUL.
void put_fixed(std::string& out, std::string_view s, size_t field_len);

}  // namespace aerie::qrexec
