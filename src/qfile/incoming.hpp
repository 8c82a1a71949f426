// ~/QubesIncoming/<source>: where qubes.Filecopy puts what a qube sends.
#pragma once

#include <string>

#include "base/unique_fd.hpp"

namespace aerie::qfile {

// Opens (making them 0700 if missing) QubesIncoming beneath `home` and the
// folder of `source` beneath it, each made and opened by one component
// beneath its parent's descriptor (base/safe_dir.hpp: a symlink or a file
// planted under either name is refused, never followed). `source` must be a
// valid qube name. Throws base::UnsafePathError or std::invalid_argument.
base::UniqueFd open_incoming_dir(const std::string& home, const std::string& source);

}  // namespace aerie::qfile
