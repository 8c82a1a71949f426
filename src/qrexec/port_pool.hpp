// The data ports of one qrexec daemon (513..768), shared fairly between the
// callers that hold them. Each port is held by a source: the domain whose
// call it serves (another qube calling this one, dom0's qrexec-client, or
// this qube itself calling dom0). Without a bound one source could take all
// 256 ports and every other caller, dom0 included, would be refused until
// its calls ended. So:
//   - dom0 (domain 0) always finds a port: the last kDom0Reserve ports are
//     never given to a qube;
//   - no qube holds more than kPerQubeCap ports at once; its next call is
//     refused with a reason naming the cap, while others' calls go on.
// As Qubes', a port for a call with a qube (not dom0) is taken from one half
// of the ports only: when both qubes' daemons give ports for calls between
// them, the daemon of the lower domain id gives even ports (514, 516, ...),
// the other's odd ones (513, 515, ...), so the two never collide.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "qrexec/protocol.hpp"

namespace aerie::qrexec {

class PortPool {
public:
    // own_domain: the domain id of the qube whose daemon this is.
    explicit PortPool(uint32_t own_domain = 0) : own_domain_(own_domain) {}

    static constexpr uint32_t kPorts = kLastDataPort - kFirstDataPort + 1;  // 256
    static constexpr uint32_t kDom0Reserve = 32;
    static constexpr uint32_t kPerQubeCap = 64;  // a quarter of the ports
    static constexpr uint32_t kDom0 = 0;

    struct Grant {
        std::optional<uint32_t> port;
        std::string refusal;  // set when no port was given: why
    };

    // A port for a call of `source` whose data end is in `remote_domain`.
    Grant allocate(uint32_t source, uint32_t remote_domain);
    // Releases `port` if it is held for `remote_domain` (a peer may only
    // release its own). False when it was not.
    bool release(uint32_t port, uint32_t remote_domain);
    // Releases `port` whoever holds it (its agent is gone: no one will).
    void forget(uint32_t port);

    uint32_t held_by(uint32_t source) const;
    uint32_t in_use() const { return in_use_; }

private:
    struct Slot {
        uint32_t source;
        uint32_t remote_domain;
    };
    uint32_t own_domain_;
    std::array<std::optional<Slot>, kPorts> slots_{};
    std::map<uint32_t, uint32_t> held_;  // source -> ports held (no zero entries)
    uint32_t in_use_ = 0;
};

}  // namespace aerie::qrexec
