#include "air/layout.hpp"

#include <cstdlib>

namespace aerie::air {

std::filesystem::path relay_home() {
    if (const char* explicit_home = std::getenv("AERIE_AIR_HOME"); explicit_home && *explicit_home)
        return explicit_home;
    const char* home = std::getenv("HOME");
    return std::filesystem::path(home && *home ? home : "/home/user") / ".aerie-air";
}

}  // namespace aerie::air
