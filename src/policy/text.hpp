// Text helpers that reproduce how Qubes' policy reader sees a file: universal
// newlines, Python's notion of whitespace for strip() and split(), UTF-8 checks.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace aerie::policy::text {

// Splits on "\n", "\r\n" and lone "\r" (Python's universal newlines).
// The line terminators are not kept. A trailing terminator adds no empty line.
std::vector<std::string_view> split_lines(std::string_view data);

// Python's str.strip() / str.split() with no argument: whitespace is ASCII
// space, \t \n \v \f \r, \x1c-\x1f and the Unicode space separators.
std::string_view strip(std::string_view s);
std::vector<std::string_view> split_fields(std::string_view s);

// True if s is well-formed UTF-8 (no overlongs, no surrogates, <= U+10FFFF).
bool is_valid_utf8(std::string_view s);

// Python's repr() of a str: 'text' with escapes, or "text" when the text
// holds ' but not ". Characters Python does not print (controls, format
// characters such as U+FEFF, private use) are escaped as \xNN, \uNNNN or
// \UNNNNNNNN. Used so error messages match Qubes' own.
std::string py_repr(std::string_view s);

// Python's repr() of a tuple of one-character strings, e.g. ('!', '@') or ('!',).
std::string py_repr_char_tuple(const std::vector<std::string>& chars);

// Python's repr() of a list of strings, e.g. ['a=b', 'c'].
std::string py_repr_list(const std::vector<std::string_view>& items);

}  // namespace aerie::policy::text
