// The checks a qfile receiver makes on every name and link target it is sent
// (Qubes' rules, so that both sides accept exactly the same archives), and the
// sender's check of whether its names need qubes.Filecopy+allow-all-names.
//
// A name is a relative path in canonical form: components separated by one
// "/", none empty, "." or "..", no leading or trailing "/", every byte
// printable ASCII or (unless unsafe characters are allowed) UTF-8 of a code
// point that is safe to display. A symlink must sit at least two components
// deep ("a/b", never a top-level entry) and its target may climb with leading
// ".." at most to the top-level directory that holds it: a link in
// ~/QubesIncoming/<source>/a/... can never point outside of a/.
#pragma once

#include <cstdint>
#include <string_view>

namespace aerie::qfile {

enum NameFlags : std::uint32_t {
    kAllowUnsafeCharacters = 1u << 0,      // any bytes but NUL and "/" in components
    kAllowNonCanonicalSymlinks = 1u << 1,  // "." and "//" inside link targets
    kAllowUnsafeSymlinks = 1u << 2,        // link targets unchecked
    kAllowNonCanonicalPaths = 1u << 3,     // "." and "//" in names too
    kAllowTrailingSlash = 1u << 4,
};

// 0 if `name` may be created as a file or directory, else EILSEQ.
int validate_file_name(std::string_view name, std::uint32_t flags);

// 0 if a symlink `name` → `target` may be created, else EILSEQ (a bad name or
// bad characters) or ENOLINK (a target that leaves the link's top directory,
// an absolute target, a top-level link).
int validate_symlink(std::string_view name, std::string_view target, std::uint32_t flags);

// Whether a code point is allowed in names without allow-all-names (the
// table is generated from Unicode properties at build time).
bool code_point_safe_for_display(std::uint32_t code_point);

// Whether a whole string is printable ASCII or UTF-8 of safe code points.
bool safe_for_display(std::string_view text);

// Whether `name` is a valid qube name (what may become ~/QubesIncoming/<name>).
bool valid_qube_name(std::string_view name);

}  // namespace aerie::qfile
