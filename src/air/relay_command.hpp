// aerie-air-relay's subcommands: each relay_cmd_*.cpp registers its own
// (a static RelayCommandRegistration), src/tools/aerie_air_relay.cpp
// dispatches on argv[1].
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace aerie::air {

using RelayCommandFn = int (*)(const std::vector<std::string>& args);  // args after the subcommand

struct RelayCommandRegistration {
    RelayCommandRegistration(std::string_view name, std::string_view usage, RelayCommandFn fn);
};

struct RelayCommand {
    std::string name;
    std::string usage;
    RelayCommandFn fn;
};
const std::vector<RelayCommand>& relay_commands();

}  // namespace aerie::air
