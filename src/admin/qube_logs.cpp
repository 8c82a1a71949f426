#include "admin/qube_logs.hpp"

#include <memory>

namespace aerie::admin {

base::LogCap console_log_cap(uint64_t max_bytes) {
    base::LogCap cap;
    cap.max_bytes = max_bytes;
    cap.bytes_per_second = 1u << 20;
    cap.burst_bytes = 4u << 20;
    return cap;
}

void remove_qube_logs(const std::filesystem::path& log_dir, const std::string& name) {
    for (const char* kind : {"console", "qrexec-daemon", "air-serve"})
        base::remove_log(log_dir / (name + "." + kind + ".log"));
}

}  // namespace aerie::admin
