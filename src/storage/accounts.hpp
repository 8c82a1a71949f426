// The account every Qubes template has: `user` (uid and gid 1000), the
// default_user of qubes, with a locked password. A template made from
// another system must not carry that system's own uid-1000 account instead.
#pragma once

#include <filesystem>

namespace aerie::storage {

// In a template's /etc (passwd, group and, where present, shadow and
// gshadow): drops other entries with id 1000, then adds `user` if missing.
void ensure_qube_user(const std::filesystem::path& etc);

}  // namespace aerie::storage
