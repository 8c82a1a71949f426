#include "qfile/incoming.hpp"

#include <fcntl.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "base/safe_dir.hpp"
#include "qfile/names.hpp"

namespace aerie::qfile {

base::UniqueFd open_incoming_dir(const std::string& home, const std::string& source) {
    if (!valid_qube_name(source)) throw std::invalid_argument("not a valid qube name as the source");
    // The home folder is the receiving user's own and trusted as a path.
    base::UniqueFd home_fd(::open(home.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!home_fd) throw base::UnsafePathError(home + ": " + std::strerror(errno), errno);
    auto top = base::ensure_dir_beneath(home_fd.get(), "QubesIncoming", 0700, home);
    return base::ensure_dir_beneath(top.get(), source, 0700, home + "/QubesIncoming");
}

}  // namespace aerie::qfile
