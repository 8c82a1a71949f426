// aerie-air-relay: the Qubes Air transports, run inside a relay qube by its
// qubesair.* services (docs/air.md). `aerie-air-relay COMMAND ARGS...`.
#include <fmt/format.h>

#include <exception>
#include <string>
#include <vector>

#include "air/relay_command.hpp"

int main(int argc, char** argv) {
    using aerie::air::relay_commands;
    std::string name = argc > 1 ? argv[1] : "";
    for (const auto& command : relay_commands()) {
        if (command.name != name) continue;
        try {
            return command.fn(std::vector<std::string>(argv + 2, argv + argc));
        } catch (const std::exception& e) {
            fmt::print(stderr, "aerie-air: {}\n", e.what());
            return 1;
        }
    }
    fmt::print(stderr, "usage: aerie-air-relay COMMAND ARGS...\n");
    for (const auto& command : relay_commands()) fmt::print(stderr, "  {} {}\n", command.name, command.usage);
    return 2;
}
