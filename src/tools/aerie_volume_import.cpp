// admin.vm.volume.Import and admin.vm.volume.ImportWithSize, the dom0
// services (Qubes' admin.vm.volume.Import script does the same): the data
// can be a whole volume, too much to pass through aeried's socket, so
//   1. internal.vm.volume.ImportBegin asks aeried where it goes (aeried
//      checks the call and makes an empty file of the size beside the
//      volume's image): "SIZE PATH";
//   2. exactly SIZE bytes of stdin are written there (blocks of zeros
//      skipped: the file stays sparse); more or less is a failure;
//   3. internal.vm.volume.ImportEnd with "ok" or "fail\nREASON": aeried
//      replaces the volume (or throws the file away), and its answer is the
//      caller's.
// Called by the name of the method (a link in aeried's --rpc-dir), with the
// volume as argument; QREXEC_REMOTE_DOMAIN is the caller, QREXEC_REQUESTED_TARGET
// the qube. ImportWithSize reads the size first, as a line of stdin.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "base/write_all.hpp"
#include "admin/import_size_line.hpp"
#include "admin/wire.hpp"
#include "base/unique_fd.hpp"

namespace {

using aerie::base::UniqueFd;

constexpr size_t kBlock = 128 * 1024;
constexpr size_t kMaxReply = 1 << 20;

[[noreturn]] void fail(const std::string& message) {
    std::fprintf(stderr, "%s\n", message.c_str());
    std::exit(1);
}

using aerie::base::write_all;

// One request on aeried's internal socket; its raw answer ("" when it
// closed without one).
std::string ask(const std::string& socket_path, const aerie::admin::ApiRequest& request) {
    UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (!sock) fail(std::string("socket: ") + std::strerror(errno));
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (socket_path.size() >= sizeof addr.sun_path) fail("socket path too long: " + socket_path);
    std::memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
    if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) < 0)
        fail("connecting to " + socket_path + ": " + std::strerror(errno));
    std::string bytes = aerie::admin::encode_request(request);
    if (!write_all(sock.get(), bytes.data(), bytes.size())) fail("sending to " + socket_path + " failed");
    ::shutdown(sock.get(), SHUT_WR);
    std::string reply;
    char buf[4096];
    for (;;) {
        ssize_t n = ::read(sock.get(), buf, sizeof buf);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) break;
        reply.append(buf, static_cast<size_t>(n));
        if (reply.size() > kMaxReply) fail("the answer of " + socket_path + " is too long");
    }
    return reply;
}

// ImportWithSize's first line (admin/import_size_line.hpp), a byte at a time.
std::string read_size_line() {
    aerie::admin::SizeLineReader reader;
    while (reader.state() == aerie::admin::SizeLineReader::State::More) {
        unsigned char c;
        ssize_t n = ::read(0, &c, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            reader.end_of_input();
        else
            reader.feed(c);
    }
    if (reader.state() == aerie::admin::SizeLineReader::State::Bad) fail(reader.error());
    return reader.line();
}

size_t read_full(int fd, char* buf, size_t want) {
    size_t got = 0;
    while (got < want) {
        ssize_t n = ::read(fd, buf + got, want - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) throw std::runtime_error("error copying data");
        if (n == 0) break;
        got += static_cast<size_t>(n);
    }
    return got;
}

// Copies exactly `size` bytes of stdin into `path` (made by aeried, of that
// size); "" on success, else why not.
std::string copy_data(const std::string& path, uint64_t size) {
    UniqueFd out(::open(path.c_str(), O_WRONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!out) return "error copying data";
    std::vector<char> buf(kBlock);
    uint64_t copied = 0;
    try {
        while (copied < size) {
            size_t want = static_cast<size_t>(std::min<uint64_t>(kBlock, size - copied));
            size_t got = read_full(0, buf.data(), want);
            if (got == 0) break;
            bool zeros =
                std::all_of(buf.begin(), buf.begin() + static_cast<long>(got), [](char c) { return c == 0; });
            if (zeros) {
                if (::lseek(out.get(), static_cast<off_t>(got), SEEK_CUR) < 0) return "error copying data";
            } else if (!write_all(out.get(), buf.data(), got)) {
                return "error copying data";
            }
            copied += got;
            if (got < want) break;
        }
        if (::fdatasync(out.get()) < 0) return "error copying data";
    } catch (const std::exception& e) {
        return e.what();
    }
    if (copied != size)
        return "not enough data (copied " + std::to_string(copied) + " bytes, expected " +
               std::to_string(size) + " bytes)";
    char extra;
    if (read_full(0, &extra, 1) != 0) return "too much data (expected " + std::to_string(size) + " bytes)";
    return {};
}

}  // namespace

int main(int argc, char** argv) {
    std::string self = argc > 0 ? argv[0] : "";
    self = self.substr(self.rfind('/') + 1);
    bool with_size = self == "admin.vm.volume.ImportWithSize";
    if (!with_size && self != "admin.vm.volume.Import")
        fail("Invoked with unknown basename '" + self + "', cannot continue");
    if (argc != 2) fail("usage: " + self + " VOLUME (a qrexec service)");
    const char* source = std::getenv("QREXEC_REMOTE_DOMAIN");
    const char* target = std::getenv("QREXEC_REQUESTED_TARGET");
    if (!source || !*source || !target || !*target)
        fail("QREXEC_REMOTE_DOMAIN and QREXEC_REQUESTED_TARGET must be set (a qrexec service)");
    const char* socket_env = std::getenv("QUBESD_INTERNAL_SOCKET");
    std::string socket_path = socket_env && *socket_env ? socket_env : "/var/run/qubesd.internal.sock";

    aerie::admin::ApiRequest begin{"internal.vm.volume.ImportBegin", argv[1], source, target,
                                   with_size ? read_size_line() : std::string()};
    std::string reply = ask(socket_path, begin);
    if (reply.rfind(std::string("0\0", 2), 0) != 0) {
        // aeried's refusal is the caller's answer.
        write_all(1, reply.data(), reply.size());
        return 1;
    }
    std::string body = reply.substr(2);
    size_t space = body.find(' ');
    if (space == std::string::npos || space == 0 || body.size() > 4096) fail("bad answer to ImportBegin");
    std::string size_text = body.substr(0, space), path = body.substr(space + 1);
    if (!std::all_of(size_text.begin(), size_text.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
        size_text.size() > 19 || path.empty() || path[0] != '/')
        fail("bad answer to ImportBegin");

    std::string error = copy_data(path, std::stoull(size_text));
    aerie::admin::ApiRequest end{"internal.vm.volume.ImportEnd", argv[1], source, target,
                                 error.empty() ? std::string("ok") : "fail\n" + error};
    reply = ask(socket_path, end);
    write_all(1, reply.data(), reply.size());
    return 0;
}
