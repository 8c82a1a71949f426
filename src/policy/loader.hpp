// Reads a policy the way Qubes R4.3 does: the *.policy files of several
// directories (the first directory wins a base-name clash, as /run/qubes/policy.d
// over /etc/qubes/policy.d), sorted by base name, with !include, !include-dir,
// !include-service and !compat-4.0 inlined where they stand.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "policy/errors.hpp"
#include "policy/files.hpp"
#include "policy/policy.hpp"

namespace aerie::policy {

inline constexpr const char* kRunPolicyDir = "/run/qubes/policy.d";
inline constexpr const char* kEtcPolicyDir = "/etc/qubes/policy.d";
inline constexpr const char* kCompatPolicyDir = "/etc/qubes-rpc/policy";

// Hostile-input limits: a policy beyond them is rejected with a clear error.
inline constexpr size_t kMaxFileBytes = 64u << 20;
inline constexpr size_t kMaxLineBytes = 65536;
inline constexpr int kMaxIncludeDepth = 32;
inline constexpr size_t kMaxFilesLoaded = 4096;  // file loads in one policy, includes counted

struct LoadOptions {
    std::vector<std::string> dirs{kRunPolicyDir, kEtcPolicyDir};
    std::string compat_dir = kCompatPolicyDir;
};

// Loads the whole policy. Throws PolicySyntaxError ("FILE:LINE: message") or
// PolicyLoadError; either means every call is denied.
Policy load_policy(const PolicyFiles& files, const LoadOptions& options);

// Parses one file's text on its own as if it were at `path` (includes are
// resolved relative to its directory through `files`).
Policy load_policy_text(const PolicyFiles& files, const std::string& path, std::string_view text,
                        const LoadOptions& options = {});

// Visitor of a single file, line by line, for the linter: checks every line on
// its own without following includes. Returns every error found.
std::vector<PolicySyntaxError> lint_policy_text(const std::string& path, std::string_view text,
                                                bool include_service_format);

}  // namespace aerie::policy
