// wait-for-session (Qubes R4.3 agent behaviour): a call whose rpc-config sets
// wait-for-session (and whose command line has no "nogui:") is held back
// until qubes.WaitForSession has run and exited. One such process runs at a
// time; every call held meanwhile goes on when it exits, whatever its exit
// status. It is found along QREXEC_SERVICE_PATH, run as the agent's user with
// no argument, QREXEC_REMOTE_DOMAIN set to the caller and the call's user
// name and a newline on its stdin; its stdout and stderr are the agent's.
#pragma once

#include <asio.hpp>
#include <functional>
#include <string>
#include <vector>

#include "qrexec/child_reaper.hpp"

namespace aerie::qrexec {

inline constexpr const char* kWaitForSessionService = "qubes.WaitForSession";

class SessionWait {
public:
    explicit SessionWait(ChildReaper& reaper) : reaper_(reaper) {}

    // Holds `run` back if the command line asks to wait for the session:
    // returns true then (run is called later), false when it need not wait.
    // default_user stands for "DEFAULT".
    bool defer(const std::string& cmdline, const std::string& default_user, std::function<void()> run);

private:
    bool start_waiter(const std::string& source, const std::string& user);
    void release();

    ChildReaper& reaper_;
    bool waiting_ = false;
    std::vector<std::function<void()>> held_;
};

}  // namespace aerie::qrexec
