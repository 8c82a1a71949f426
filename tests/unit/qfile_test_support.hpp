// Shared by the qfile tests: qfile streams built by hand, a sandbox with an
// incoming folder and a folder outside it, and running the receiver on bytes.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <set>
#include <string>
#include <thread>

#include "base/unique_fd.hpp"
#include "qfile/unpacker.hpp"
#include "qfile/wire.hpp"

namespace aerie::qfile::test {

namespace fs = std::filesystem;

constexpr std::uint32_t kReg = 0100644, kDir = 040755, kLink = 0120777;

inline std::string header(std::uint32_t namelen, std::uint32_t mode, std::uint64_t filelen,
                          std::uint32_t atime_nsec = 0, std::uint32_t mtime_nsec = 0) {
    FileHeader h{namelen, mode, filelen, 1000, atime_nsec, 2000, mtime_nsec};
    auto b = encode_file_header(h);
    return std::string(b.begin(), b.end());
}

// One entry as a sender writes it: the name with its NUL, then the body.
inline std::string entry(const std::string& name, std::uint32_t mode, const std::string& body = "") {
    return header(static_cast<std::uint32_t>(name.size() + 1), mode, body.size()) + name +
           std::string(1, '\0') + body;
}

inline std::string end_marker() {
    return std::string(kFileHeaderSize, '\0');
}

// A scratch folder: root/in is the incoming folder, root/outside must stay
// as it is whatever the stream says.
class Sandbox {
public:
    Sandbox() {
        char tmpl[] = "/tmp/aerie-qfile-XXXXXX";
        if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp");
        root = tmpl;
        fs::create_directories(root / "in");
        fs::create_directories(root / "outside");
        std::ofstream(root / "outside" / "keep") << "host";
    }
    ~Sandbox() {
        std::error_code ec;
        // Received folders may have come without write permission.
        for (auto it = fs::recursive_directory_iterator(root, ec); it != fs::recursive_directory_iterator();
             it.increment(ec))
            if (it->is_directory(ec) && !it->is_symlink(ec))
                fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ec);
        fs::remove_all(root, ec);
    }

    // Everything under root but in/, as "path type" lines.
    std::set<std::string> outside_listing() const {
        std::set<std::string> out;
        for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator();
             ++it) {
            auto rel = fs::relative(it->path(), root).string();
            if (rel == "in" || rel.rfind("in/", 0) == 0) {
                if (rel == "in") it.disable_recursion_pending();
                continue;
            }
            out.insert(rel + " " + std::to_string(static_cast<int>(it->symlink_status().type())));
        }
        return out;
    }

    std::set<std::string> incoming_listing() const {
        std::set<std::string> out;
        for (auto it = fs::recursive_directory_iterator(root / "in");
             it != fs::recursive_directory_iterator(); ++it)
            out.insert(fs::relative(it->path(), root / "in").string());
        return out;
    }

    fs::path root;
};

struct Received {
    UnpackResult result;
    std::string answer;  // the bytes written back to the sender
};

// Runs the receiver on `stream` (from a pipe that then reaches EOF) beneath
// `dir`, collecting its answer.
inline Received receive(const fs::path& dir, const std::string& stream, UnpackOptions options = {}) {
    ::signal(SIGPIPE, SIG_IGN);  // the feeder writes into a receiver that may stop reading
    int in[2], out[2];
    if (::pipe(in) != 0 || ::pipe(out) != 0) throw std::runtime_error("pipe");
    std::thread feeder([fd = in[1], stream] {
        std::size_t done = 0;
        while (done < stream.size()) {
            ssize_t n = ::write(fd, stream.data() + done, stream.size() - done);
            if (n <= 0) break;  // the receiver stopped reading
            done += static_cast<std::size_t>(n);
        }
        ::close(fd);
    });
    std::string answer;
    std::thread reader([fd = out[0], &answer] {
        char buf[4096];
        ssize_t n;
        while ((n = ::read(fd, buf, sizeof buf)) > 0) answer.append(buf, static_cast<std::size_t>(n));
        ::close(fd);
    });
    base::UniqueFd dirfd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    Unpacker unpacker(dirfd.get(), options);
    Received r;
    r.result = unpacker.run(in[0], out[1]);
    ::close(in[0]);
    ::close(out[1]);
    feeder.join();
    reader.join();
    r.answer = answer;
    return r;
}

inline std::string hex_bytes(const std::string& hex) {
    std::string out;
    unsigned value = 0;
    int digits = 0;
    for (char c : hex) {
        int v = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (v < 0) continue;
        value = value * 16 + static_cast<unsigned>(v);
        if (++digits == 2) {
            out += static_cast<char>(value);
            value = 0;
            digits = 0;
        }
    }
    return out;
}

}  // namespace aerie::qfile::test
