// qrexec's owned descriptor is the base layer's.
#pragma once

#include "base/unique_fd.hpp"

namespace aerie::qrexec {
using base::UniqueFd;
}  // namespace aerie::qrexec
