#include "qrexec/log_lines.hpp"

#include "base/limited_log.hpp"

namespace aerie::qrexec {

void log_daemon_line(const std::string& qube, const std::string& message) {
    // One daemon per qube, one qube per process: the first name is the only one.
    static base::LimitedLog log("qrexec-daemon " + base::log_safe(qube, 64));
    log.line(qube, message);
}

void log_agent_line(const std::string& message) {
    static base::LimitedLog log("qrexec-agent");
    log.line("daemon", message);
}

void log_service_line(const std::string& message) {
    static base::LimitedLog log("qrexec");
    log.line("service", message);
}

}  // namespace aerie::qrexec
