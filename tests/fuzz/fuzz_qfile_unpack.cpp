// The qubes.Filecopy receiver (qfile/unpacker.hpp) on any stream: it never
// crashes, always answers in the wire format (a 16-byte header, then a length
// and that many name bytes, or nothing), answers success only for a stream
// with its end marker, and never creates anything outside its incoming
// folder. The first byte picks the options (all names, limits).
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "qfile/names.hpp"
#include "qfile/unpacker.hpp"
#include "qfile/wire.hpp"

namespace fs = std::filesystem;
using namespace aerie::qfile;

namespace {

[[noreturn]] void violated(const char* what) {
    std::fprintf(stderr, "property violated: %s\n", what);
    std::abort();
}

int memfd_with(const uint8_t* data, size_t size) {
    int fd = ::memfd_create("qfile-fuzz", MFD_CLOEXEC);
    if (fd < 0) std::abort();
    size_t done = 0;
    while (done < size) {
        ssize_t n = ::write(fd, data + done, size - done);
        if (n <= 0) std::abort();
        done += static_cast<size_t>(n);
    }
    ::lseek(fd, 0, SEEK_SET);
    return fd;
}

std::string read_all(int fd) {
    ::lseek(fd, 0, SEEK_SET);
    std::string out;
    char buf[4096];
    ssize_t n;
    while ((n = ::read(fd, buf, sizeof buf)) > 0) out.append(buf, static_cast<size_t>(n));
    return out;
}

void remove_tree(const fs::path& root) {
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(root, ec); it != fs::recursive_directory_iterator();
         it.increment(ec))
        if (it->is_directory(ec) && !it->is_symlink(ec))
            fs::permissions(it->path(), fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(root, ec);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    UnpackOptions options;
    if (size > 0) {
        if (data[0] & 1) options.name_flags |= kAllowUnsafeCharacters;
        if (data[0] & 2) options.max_files = 3;
        if (data[0] & 4) options.max_bytes = 64;
        if (data[0] & 8) options.name_flags &= ~kAllowNonCanonicalSymlinks;
        ++data;
        --size;
    }
    static const fs::path base = fs::exists("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
    fs::path root = base / ("aerie-qfile-fuzz-" + std::to_string(::getpid()));
    remove_tree(root);
    fs::create_directories(root / "in");
    fs::create_directories(root / "outside");
    // Links a stream might try to use (as if left by an earlier transfer).
    fs::create_directories(root / "in" / "d");
    fs::create_symlink(root / "outside", root / "in" / "d" / "out");
    fs::create_symlink("../outside", root / "in" / "up");

    int in = memfd_with(data, size);
    int out = ::memfd_create("qfile-answer", MFD_CLOEXEC);
    int dir = ::open((root / "in").c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (out < 0 || dir < 0) std::abort();
    UnpackResult r = Unpacker(dir, options).run(in, out);
    std::string answer = read_all(out);
    ::close(in);
    ::close(out);
    ::close(dir);

    if (answer.size() < kResultHeaderSize) violated("an answer has its header");
    const auto* a = reinterpret_cast<const uint8_t*>(answer.data());
    if (get_le32(a) != r.error_code || get_le32(a + 4) != 0) violated("the header holds the error code");
    if (answer.size() == kResultHeaderSize) {
        if (r.last_name) violated("a name is sent when there is one");
    } else {
        if (answer.size() < kResultHeaderSize + kResultExtSize) violated("the name part has its length");
        if (get_le32(a + kResultHeaderSize) != answer.size() - kResultHeaderSize - kResultExtSize)
            violated("the name length is that of the name");
    }
    if (r.error_code == 0) {
        bool marker = false;
        // A success means a complete stream ending with a zero name length.
        for (size_t off = 0; off + kFileHeaderSize <= size;) {
            FileHeader h =
                decode_file_header(std::span<const uint8_t, kFileHeaderSize>(data + off, kFileHeaderSize));
            off += kFileHeaderSize;
            if (h.namelen == 0) {
                marker = true;
                break;
            }
            off += h.namelen;
            if (S_ISREG(h.mode) || S_ISLNK(h.mode)) off += h.filelen;
        }
        if (!marker) violated("success only with the end marker");
    }
    for (auto it = fs::recursive_directory_iterator(root / "outside");
         it != fs::recursive_directory_iterator(); ++it)
        violated("nothing is created outside the incoming folder");
    for (auto& e : fs::directory_iterator(root))
        if (e.path().filename() != "in" && e.path().filename() != "outside")
            violated("nothing lands beside it");
    remove_tree(root);
    return 0;
}
