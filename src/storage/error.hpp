// The one exception type of the storage layer.
#pragma once

#include <stdexcept>
#include <string>

namespace aerie::storage {

struct StorageError : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// "what: strerror(err)" as a StorageError.
[[noreturn]] void throw_storage_errno(const std::string& what, int err);

}  // namespace aerie::storage
