// What qvm-copy checks before it calls qubes.Filecopy (Qubes'
// qubes-fs-tree-check): that every argument names something below a parent
// (not "", ".", "..", or "/"), that no symlink would be refused by the
// receiver, and whether every name is safe for display (if not, the call is
// qubes.Filecopy+allow-all-names). It also counts the bytes to send, for the
// progress display.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace aerie::qfile {

class TreeCheckError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

struct TreeCheck {
    std::uint64_t total_bytes = 0;
    bool all_names_safe = true;
};

// Throws TreeCheckError with the reason for the user.
TreeCheck check_trees(const std::vector<std::string>& paths, bool ignore_symlinks);

// A name quoted for a message: "..." with \" \\ \n \t and octal escapes.
std::string quoted(const std::string& text);

}  // namespace aerie::qfile
