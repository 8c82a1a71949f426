#include "services/vmexec_args.hpp"

#include <cstdio>

namespace aerie::services {

namespace {

bool plain_byte(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.';
}

// Only upper-case hex digits, as Qubes' decoder reads them.
int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

std::string byte_text(unsigned char c) {
    char buf[32];
    if (c >= 0x21 && c < 0x7f)
        std::snprintf(buf, sizeof buf, "'%c'", c);
    else
        std::snprintf(buf, sizeof buf, "byte 0x%02x", c);
    return buf;
}

void set(std::string* error, std::string text) {
    if (error) *error = std::move(text);
}

}  // namespace

std::optional<std::vector<std::string>> decode_vmexec_argument(std::string_view argument,
                                                               std::string* error) {
    std::vector<std::string> words(1);
    for (size_t i = 0; i < argument.size(); ++i) {
        char c = argument[i];
        if (c == '+') {
            if (words.size() >= kMaxVmexecWords) {
                set(error, "more than " + std::to_string(kMaxVmexecWords) + " words");
                return std::nullopt;
            }
            words.emplace_back();
        } else if (plain_byte(c)) {
            words.back() += c;
        } else if (c == '-') {
            if (i + 1 < argument.size() && argument[i + 1] == '-') {
                words.back() += '-';
                i += 1;
                continue;
            }
            int high = i + 1 < argument.size() ? hex_digit(argument[i + 1]) : -1;
            int low = i + 2 < argument.size() ? hex_digit(argument[i + 2]) : -1;
            if (high < 0 || low < 0) {
                set(error, "bad escape at offset " + std::to_string(i) +
                               ": '-' can be used only in '-HH' (upper-case hex) or '--'");
                return std::nullopt;
            }
            words.back() += static_cast<char>(high * 16 + low);
            i += 2;
        } else {
            set(error, "illegal character " + byte_text(static_cast<unsigned char>(c)) + " at offset " +
                           std::to_string(i) + " (allowed: A-Z a-z 0-9 _ . - +)");
            return std::nullopt;
        }
    }
    return words;
}

std::string encode_vmexec_argument(const std::vector<std::string>& words) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    for (size_t w = 0; w < words.size(); ++w) {
        if (w) out += '+';
        for (char c : words[w]) {
            auto b = static_cast<unsigned char>(c);
            if (plain_byte(c)) {
                out += c;
            } else if (c == '-') {
                out += "--";
            } else {
                out += '-';
                out += hex[b >> 4];
                out += hex[b & 15];
            }
        }
    }
    return out;
}

std::optional<std::vector<std::string>> vmexec_command(std::string_view argument, std::string* error) {
    if (argument.empty()) {
        set(error, "no command given (the service argument is empty)");
        return std::nullopt;
    }
    std::string decode_error;
    auto words = decode_vmexec_argument(argument, &decode_error);
    if (!words) {
        set(error, "decode error: " + decode_error);
        return std::nullopt;
    }
    for (size_t w = 0; w < words->size(); ++w) {
        if ((*words)[w].find('\0') != std::string::npos) {
            set(error, "word " + std::to_string(w) + " contains a NUL byte");
            return std::nullopt;
        }
    }
    const std::string& program = words->front();
    if (program.empty()) {
        set(error, "the program name is empty");
        return std::nullopt;
    }
    if (program == ".") {
        set(error, "the program name is '.'");
        return std::nullopt;
    }
    for (size_t start = 0; start <= program.size();) {
        size_t end = program.find('/', start);
        if (end == std::string::npos) end = program.size();
        if (program.compare(start, end - start, "..") == 0) {
            set(error, "the program path has a '..' component");
            return std::nullopt;
        }
        start = end + 1;
    }
    return words;
}

}  // namespace aerie::services
