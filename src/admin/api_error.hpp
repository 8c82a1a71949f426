// Errors an Admin API handler raises. Two kinds, as in qubesd:
// - a Qubes exception (QubesVMNotFoundError, QubesVMNotHaltedError, ...) is
//   answered with "2\0TYPE\0\0MESSAGE\0";
// - a protocol error or a refused permission (qubesd's ProtocolError,
//   PermissionDenied and their subclasses such as QubesValueError) closes the
//   connection without a reply; the reason only goes to the daemon's log.
#pragma once

#include <stdexcept>
#include <string>

namespace aerie::admin {

struct ApiError : std::runtime_error {
    std::string type;  // the Qubes exception class name
    bool silent;       // close without a reply

    ApiError(std::string type_name, std::string message, bool is_silent)
        : std::runtime_error(std::move(message)), type(std::move(type_name)), silent(is_silent) {}
};

// A Qubes exception the client sees.
inline ApiError qubes_error(std::string type, std::string message) {
    return ApiError(std::move(type), std::move(message), false);
}
// A malformed or disallowed request: the client gets nothing.
inline ApiError protocol_error(std::string reason) { return ApiError("ProtocolError", std::move(reason), true); }
// An invalid value: QubesValueError is a ProtocolError in qubesd (no reply).
inline ApiError value_error(std::string reason) { return ApiError("QubesValueError", std::move(reason), true); }
inline ApiError permission_denied(std::string reason) {
    return ApiError("PermissionDenied", std::move(reason), true);
}

}  // namespace aerie::admin
