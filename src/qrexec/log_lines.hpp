// The qrexec daemons' log lines: most carry text a qube chose (service names,
// arguments, reasons built from them). Each line is escaped and bounded
// (base::log_safe) and rate-limited per qube (base::LimitedLog), so a qube
// can neither forge lines nor fill the host's logs.
#pragma once

#include <string>

namespace aerie::qrexec {

// "qrexec-daemon <qube>: <message>" on stderr; `qube` is the daemon's own.
void log_daemon_line(const std::string& qube, const std::string& message);

// "qrexec-agent: <message>" on stderr (the qube's console).
void log_agent_line(const std::string& message);

// "qrexec: <message>" on stderr: a local service that could not be run
// (in the daemon, for a qube's call to dom0; in the agent, for the daemon's).
void log_service_line(const std::string& message);

}  // namespace aerie::qrexec
