// What the qrexec policy lets a management qube see, as Qubes R4.3's
// qubes.ext.admin asks it: admin.vm.List lists a qube only if the policy
// would allow the caller admin.vm.List on it, and admin.Events passes an
// event only if it would allow admin.Events+EVENT (':' as '_') on the
// event's qube (its subject, else its "vm" argument, else @adminvm). An
// "ask" counts as no; dom0 sees everything. The policy and the system info
// are read again at most once a second (qubesd watches the files).
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "policy/loader.hpp"
#include "policy/policy.hpp"
#include "policy/system_info.hpp"

namespace aerie::admin {

class Model;

class AdminPolicy {
public:
    // `dirs`: the policy folders (empty: Qubes' /run and /etc ones).
    explicit AdminPolicy(std::vector<std::string> dirs = {});

    bool allows(const Model& model, std::string_view service, std::string_view argument,
                const std::string& source, const std::string& target);
    // The admin.Events check of one encoded event ("1\0SUBJECT\0EVENT\0(K\0V\0)*\0").
    bool allows_event(const Model& model, const std::string& source, std::string_view encoded);

private:
    void refresh(const Model& model);

    policy::LoadOptions options_;
    std::unique_ptr<policy::Policy> policy_;  // null: the policy did not load (everything denied)
    std::unique_ptr<policy::SystemInfo> system_;
    std::optional<std::chrono::steady_clock::time_point> loaded_at_;
};

}  // namespace aerie::admin
