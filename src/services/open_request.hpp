// What a caller sends to open something in another qube, parsed once:
// qubes.OpenInVM's fixed 256-byte file name block (Qubes' DVM_FILENAME_SIZE,
// "view-only-" prefixed for --view-only, NUL padded), and qubes.OpenURL's
// one line.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace aerie::services {

inline constexpr size_t kOpenNameBlockSize = 256;
inline constexpr std::string_view kViewOnlyPrefix = "view-only-";
// A URL line longer than this is refused.
inline constexpr size_t kMaxUrlLine = 64 * 1024;

struct OpenFileName {
    std::string name;  // a plain file name: no '/', never "", "." or ".."
    bool view_only = false;
};

// The name block of a file sent to qubes.OpenInVM, as Qubes' qopen-in-vm
// writes it: the prefix for view-only, then the file's base name (its last
// kOpenNameBlockSize - 1 - prefix bytes when longer), NUL padded.
std::string encode_open_name_block(std::string_view path, bool view_only);

// Reads a name block as Qubes' receiver does: the last byte counts as NUL,
// the name ends at the first NUL, the prefix sets view-only; every byte
// outside [A-Za-z0-9._+@-] becomes '_' but a '/' refuses the block. Also
// refused (nullopt, *error): an empty name, "." and "..", a block not of
// kOpenNameBlockSize bytes.
std::optional<OpenFileName> parse_open_name_block(std::string_view block, std::string* error = nullptr);

// Reads qubes.OpenURL's line (without its newline): blanks around it are
// dropped (as `read` does); it must start with http://, https:// or ftp://
// (as Qubes' service checks), hold no control character and be at most
// kMaxUrlLine bytes. nullopt with *error otherwise.
std::optional<std::string> parse_open_url_line(std::string_view line, std::string* error = nullptr);

// The calling qube's name as used for the receiving folder's name: not
// empty, no '/', not "." or "..".
bool usable_source_name(std::string_view name);

}  // namespace aerie::services
