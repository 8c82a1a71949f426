#include "air/relay_command.hpp"

namespace aerie::air {

namespace {
std::vector<RelayCommand>& table() {
    static std::vector<RelayCommand> commands;
    return commands;
}
}  // namespace

RelayCommandRegistration::RelayCommandRegistration(std::string_view name, std::string_view usage, RelayCommandFn fn) {
    table().push_back({std::string(name), std::string(usage), fn});
}

const std::vector<RelayCommand>& relay_commands() { return table(); }

}  // namespace aerie::air
