#include "air/tls_local.hpp"

#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <vector>

#include "air/fd_message.hpp"
#include "qrexec/vchan.hpp"

namespace aerie::air {

namespace {

constexpr size_t kMaxLine = 512;

bool plain_word(std::string_view w) {
    if (w.empty()) return false;
    for (char c : w)
        if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return false;
    return true;
}

std::vector<std::string_view> words(std::string_view line) {
    std::vector<std::string_view> out;
    while (!line.empty()) {
        size_t space = line.find(' ');
        out.push_back(line.substr(0, space));
        if (space == std::string_view::npos) break;
        line.remove_prefix(space + 1);
    }
    return out;
}

}  // namespace

std::filesystem::path relay_socket_path(const std::filesystem::path& home) { return home / "run" / "relay.sock"; }

void send_call(int sock, const LocalCall& call, int input_fd, int output_fd) {
    for (const std::string* w : {&call.zone, &call.source, &call.target, &call.service})
        if (!plain_word(*w)) throw AirError("a call's field is empty or holds a space");
    std::string line = "call " + call.zone + " " + call.source + " " + call.target + " " + call.service + "\n";
    if (line.size() > kMaxLine) throw AirError("a call's fields are too long");
    int fds[2] = {input_fd, output_fd};
    try {
        send_message(sock, line, fds);
    } catch (const AirError& e) {
        throw AirError(std::string("sending the call to the serve daemon: ") + e.what());
    }
}

ReceivedCall receive_call(int sock) {
    char buf[kMaxLine + 1];
    std::vector<qrexec::UniqueFd> fds;  // owned at once, so none leaks on a refusal
    ssize_t n;
    do {
        n = qrexec::recv_with_fds(sock, buf, sizeof buf, 0, &fds);
    } while (n < 0 && errno == EINTR);
    if (n < 0) throw AirError(std::string("reading a call: ") + std::strerror(errno));
    if (n == 0) throw AirError("the caller went away");
    std::string_view line(buf, static_cast<size_t>(n));
    if (line.size() > kMaxLine || line.back() != '\n') throw AirError("a call without its newline");
    line.remove_suffix(1);
    auto w = words(line);
    if (w.size() != 5 || w[0] != "call") throw AirError("not a call");
    for (size_t i = 1; i < 5; ++i)
        if (!plain_word(w[i])) throw AirError("a call with an empty field");
    if (fds.size() != 2) throw AirError("a call without its stdin and stdout");
    ReceivedCall out{{std::string(w[1]), std::string(w[2]), std::string(w[3]), std::string(w[4])},
                     std::move(fds[0]),
                     std::move(fds[1])};
    return out;
}

std::string format_exit(int code) { return "exit " + std::to_string(code) + "\n"; }

std::string format_reset(std::string_view why) {
    std::string line = "reset ";
    for (char c : why.substr(0, kMaxLine - 8)) line += static_cast<unsigned char>(c) < 0x20 || c == 0x7f ? '?' : c;
    return line + "\n";
}

CallEnd parse_call_end(std::string_view line) {
    if (line.starts_with("exit ")) {
        std::string_view digits = line.substr(5);
        int code = 0;
        auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), code);
        if (ec != std::errc() || end != digits.data() + digits.size() || code < 0 || code > 255)
            throw AirError("the serve daemon answered with a bad exit code");
        return {code, {}};
    }
    if (line.starts_with("reset ")) return {std::nullopt, std::string(line.substr(6))};
    throw AirError("the serve daemon answered something else than an exit or a reset");
}

}  // namespace aerie::air
