// qubes.VMExec's argument as a caller sends it (services/vmexec_args.hpp):
// any bytes decode or are refused, never more; what decodes encodes back to
// the same words, and a command accepted is exactly the decoded words.
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "services/vmexec_args.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    using namespace aerie::services;
    std::string_view argument(reinterpret_cast<const char*>(data), size);
    auto words = decode_vmexec_argument(argument);
    auto command = vmexec_command(argument);
    if (!words) {
        if (command) std::abort();
        return 0;
    }
    if (words->empty() || words->size() > kMaxVmexecWords) std::abort();
    if (decode_vmexec_argument(encode_vmexec_argument(*words)) != words) std::abort();
    if (command && *command != *words) std::abort();
    return 0;
}
