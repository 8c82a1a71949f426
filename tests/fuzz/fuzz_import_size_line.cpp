// Fuzzes the size line admin.vm.volume.ImportWithSize reads from its caller
// (a qube, through qrexec) before the volume's data.
#include <cstdint>
#include <cstdlib>

#include "admin/import_size_line.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
    aerie::admin::SizeLineReader reader;
    size_t used = 0;
    while (used < size && reader.state() == aerie::admin::SizeLineReader::State::More)
        reader.feed(bytes[used++]);
    if (used == size) reader.end_of_input();
    using State = aerie::admin::SizeLineReader::State;
    // Done: printable ASCII, shorter than the limit, the newline consumed
    // and nothing after it; Bad: a reason, no line.
    if (reader.state() == State::Done) {
        if (used != reader.line().size() + 1 || bytes[used - 1] != '\n' || used > reader.kMaxBytes)
            std::abort();
        for (char c : reader.line())
            if (c < 0x20 || c > 0x7e) std::abort();
    } else if (reader.state() != State::Bad || reader.error().empty() || !reader.line().empty()) {
        std::abort();
    }
    return 0;
}
