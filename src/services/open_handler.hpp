// The program a qube opens files and URLs with (qubes.OpenInVM,
// qubes.OpenURL). Aerie's qubes have no desktop, so the handler is
// configured, the first of:
//   $HOME/.config/aerie/open-handler   the service user's own (an AppVM's home persists)
//   /etc/aerie/open-handler            for every qube of a template
//   xdg-open                           found in PATH, as Qubes' qubes-open uses
// each an executable file, called with the file's path or the URL as its one
// argument.
#pragma once

#include <optional>
#include <string>

namespace aerie::services {

// The handler's path, or nullopt when there is none.
std::optional<std::string> find_open_handler();

// Runs the handler on `target` and waits for it: stdin /dev/null, its stdout
// on our stderr (our stdout belongs to the caller). Returns its exit status
// (128 + signal when killed), or -1 with *error when it could not start.
int run_open_handler(const std::string& handler, const std::string& target, std::string* error = nullptr);

}  // namespace aerie::services
