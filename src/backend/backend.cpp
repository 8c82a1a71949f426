#include "backend/backend.hpp"

namespace aerie::backend {

const char* to_string(PowerState state) {
    switch (state) {
        case PowerState::Halted:
            return "Halted";
        case PowerState::Running:
            return "Running";
        case PowerState::Paused:
            return "Paused";
        case PowerState::Crashed:
            return "Crashed";
    }
    return "Unknown";
}

}  // namespace aerie::backend
