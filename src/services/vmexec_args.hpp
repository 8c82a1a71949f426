// qubes.VMExec's argument: a command line (program and arguments) carried in
// a service argument, as Qubes' qubesadmin encodes it and its agent decodes
// it. The words are joined by '+'; in a word, the bytes [A-Za-z0-9_.] stand
// for themselves, "--" for '-', and "-HH" (two upper-case hex digits) for any
// byte. Nothing else may appear.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace aerie::services {

// Words longer than this, or more words than kMaxVmexecWords, are refused
// (a service argument is bounded anyway; these keep a decoded command small).
inline constexpr size_t kMaxVmexecWords = 4096;

// Decodes the argument into its words exactly as Qubes' agent does (an
// empty word is kept: "a++b" is "a", "", "b"). On a bad encoding returns
// nullopt and sets *error to what was wrong and where: a byte outside
// [A-Za-z0-9_.+-], or a '-' not starting "--" or "-HH" (lower-case hex
// included).
std::optional<std::vector<std::string>> decode_vmexec_argument(std::string_view argument,
                                                               std::string* error = nullptr);

// The words of a command line as qubesadmin's encode_for_vmexec writes them.
std::string encode_vmexec_argument(const std::vector<std::string>& words);

// The command qubes.VMExec runs: the decoded words, with what no exec can
// take or no honest caller sends refused (nullopt, *error set): an empty
// argument, more than kMaxVmexecWords words, an empty program, a NUL byte
// in any word (exec would cut it), and a program that is "." or has a ".."
// path component (the program is looked up in PATH or taken as a path; a
// climb out of the service's working directory is no command an honest
// caller sends). Arguments after the program are data and pass as decoded,
// empty ones included.
std::optional<std::vector<std::string>> vmexec_command(std::string_view argument,
                                                       std::string* error = nullptr);

}  // namespace aerie::services
