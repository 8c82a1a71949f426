// qrexec-policy-exec: evaluates the qrexec policy for one call and prints the
// answer the qrexec daemon acts on. Exit 0 only when the call is allowed.
#include <cstdio>
#include <cstdlib>
#include <optional>

#include "policy/evaluate.hpp"
#include "qrexec/policy_client.hpp"
#include "qrexec/system_info_source.hpp"
#include "tools/cli_support.hpp"

using namespace aerie;

int main(int argc, char** argv) {
    CLI::App app{"Evaluate the qrexec policy for one call", "qrexec-policy-exec"};
    bool just_evaluate = false, assume_yes = false;
    std::vector<std::string> paths;
    std::string system_info_path, requested_source, source, target, service_and_arg;
    std::string internal_socket = qrexec::default_internal_socket();
    app.add_flag("--just-evaluate", just_evaluate, "Only evaluate; exit 0 means allow");
    app.add_flag("--assume-yes-for-ask", assume_yes, "Answer 'ask' as if the user agreed");
    app.add_option("--path", paths, "Policy directory (repeatable; the first wins a name clash)")
        ->allow_extra_args(false);
    app.add_option("--system-info", system_info_path, "System info JSON file (else ask the admin daemon)");
    app.add_option("--internal-socket", internal_socket, "The admin daemon's internal socket")
        ->capture_default_str();
    app.add_option("--requested-source", requested_source,
                   "RemoteVM the calling relay speaks for (else $QREXEC_REQUESTED_SOURCE, as the qrexec "
                   "daemon passes it)");
    app.add_option("source", source, "Calling qube")->required();
    app.add_option("target", target, "Requested target")->required();
    app.add_option("service_and_arg", service_and_arg, "SERVICE+ARGUMENT")->required();
    if (int rc = tools::parse_args(app, argc, argv); rc >= 0) return rc;
    if (const char* env = std::getenv(qrexec::kRequestedSourceEnv); env && requested_source.empty())
        requested_source = env;

    std::string prefix = fmt::format("qrexec: {}: {} -> {}:", service_and_arg, source, target);
    auto deny = [&](const std::string& why) {
        fmt::print(stderr, "{} denied: {}\n", prefix, why);
        std::fputs("result=deny\n", stdout);
        return 1;
    };

    policy::SystemInfo system;
    try {
        system = system_info_path.empty()
                     ? policy::SystemInfo::from_json(qrexec::fetch_system_info_json(internal_socket))
                     : tools::load_system_info_file(system_info_path);
    } catch (const std::exception& e) {
        return deny(std::string("error getting system info: ") + e.what());
    }

    policy::Policy pol;
    try {
        pol = tools::load_policy_dirs(paths);
    } catch (const std::exception& e) {
        return deny(std::string("error loading policy: ") + e.what());
    }

    auto request = policy::Request::from_service_and_arg(service_and_arg, source, target);
    if (!requested_source.empty()) request.requested_source = requested_source;
    policy::Decision decision = policy::decide(pol, system, request, just_evaluate, assume_yes);
    if (!policy::answer_allows(decision, just_evaluate))
        return deny(decision.refusal ? *decision.refusal : decision.reason);

    std::fputs(policy::render_answer(decision, just_evaluate).c_str(), stdout);
    return 0;
}
