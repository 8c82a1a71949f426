// admin.vm.firewall.*, until Aerie has firewall rules of its own: answered as
// Qubes R4.3 answers for a qube with the default rule list (one rule: accept
// everything).
#include "admin/api_call.hpp"

namespace aerie::admin {

namespace {

// qubes.firewall.Firewall's default: [Rule(action="accept")].
constexpr std::string_view kDefaultRules = "action=accept\n";

// Only a QubesVM has a firewall (dom0 and a RemoteVM: an AttributeError
// qubesd does not answer).
void check_has_firewall(const Qube& qube) {
    AdminApi::Call::enforce(!qube.is_admin() && !qube.is_remote(), qube.klass + " has no firewall");
}

}  // namespace

std::string AdminApi::firewall_get(Call& call) {
    check_has_firewall(*call.dest);
    return std::string(kDefaultRules);
}

// The default list again is taken (qvm-clone copies it); other rules need
// the firewall that Aerie does not have yet.
std::string AdminApi::firewall_set(Call& call) {
    check_has_firewall(*call.dest);
    for (unsigned char c : call.payload()) Call::enforce(c < 0x80, "firewall rules are not ASCII");
    std::string rules = call.payload();
    if (!rules.empty() && rules.back() != '\n') rules += '\n';
    if (rules != kDefaultRules)
        throw qubes_error(
            "QubesNotImplementedError",
            "Aerie has no firewall for qubes yet: only the default rule (action=accept) can be set");
    return {};
}

// qubesd fires firewall-changed on the qube; nothing else happens here.
std::string AdminApi::firewall_reload(Call& call) {
    check_has_firewall(*call.dest);
    publish(call.dest, "firewall-changed");
    return {};
}

}  // namespace aerie::admin
