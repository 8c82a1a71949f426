#include "qrexec/port_pool.hpp"

namespace aerie::qrexec {

PortPool::Grant PortPool::allocate(uint32_t source, uint32_t remote_domain) {
    Grant g;
    bool dom0 = source == kDom0;
    if (!dom0 && held_by(source) >= kPerQubeCap) {
        g.refusal = "domain " + std::to_string(source) + " already holds " + std::to_string(kPerQubeCap) +
                    " data ports (the most one qube may hold)";
        return g;
    }
    // Qubes take ports from the front; the reserve at the back is dom0's.
    uint32_t limit = dom0 ? kPorts : kPorts - kDom0Reserve;
    // The half of the ports for calls between this qube and remote_domain.
    uint32_t first = 0, step = 1;
    if (remote_domain != kDom0) {
        first = remote_domain > own_domain_ ? 1 : 0;
        step = 2;
    }
    for (uint32_t i = first; i < limit; i += step) {
        if (slots_[i]) continue;
        slots_[i] = Slot{source, remote_domain};
        ++held_[source];
        ++in_use_;
        g.port = kFirstDataPort + i;
        return g;
    }
    g.refusal = dom0 ? "no free data port" : "no free data port for qubes (the rest is kept for dom0)";
    return g;
}

bool PortPool::release(uint32_t port, uint32_t remote_domain) {
    if (port < kFirstDataPort || port > kLastDataPort) return false;
    auto& slot = slots_[port - kFirstDataPort];
    if (!slot || slot->remote_domain != remote_domain) return false;
    auto it = held_.find(slot->source);
    if (it != held_.end() && --it->second == 0) held_.erase(it);
    slot.reset();
    --in_use_;
    return true;
}

void PortPool::forget(uint32_t port) {
    if (port < kFirstDataPort || port > kLastDataPort) return;
    auto& slot = slots_[port - kFirstDataPort];
    if (slot) release(port, slot->remote_domain);
}

uint32_t PortPool::held_by(uint32_t source) const {
    auto it = held_.find(source);
    return it == held_.end() ? 0 : it->second;
}

}  // namespace aerie::qrexec
