// Errors an Admin API handler raises. Two kinds, as in Qubes R4.3's qubesd:
// - a Qubes exception (QubesVMNotFoundError, QubesVMNotHaltedError,
//   QubesValueError and its subclass QubesPropertyValueError, ...) is
//   answered with "2\0TYPE\0\0MESSAGE\0" (an empty traceback: qubesd
//   without --debug);
// - a protocol error or a refused permission (ProtocolError, PermissionDenied,
//   and what qubesd does not catch: KeyError, AttributeError, ...) closes the
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
// An invalid value: QubesValueError is a QubesException in R4.3 (answered).
inline ApiError value_error(std::string message) { return qubes_error("QubesValueError", std::move(message)); }
// A value a property's setter refuses.
inline ApiError property_value_error(std::string message) {
    return qubes_error("QubesPropertyValueError", std::move(message));
}
inline ApiError permission_denied(std::string reason) {
    return ApiError("PermissionDenied", std::move(reason), true);
}

}  // namespace aerie::admin
