// Shared fixtures for the policy engine unit tests: a small but varied set of
// qubes, and shorthands to parse policy text and evaluate one call.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "policy/errors.hpp"
#include "policy/evaluate.hpp"
#include "policy/files.hpp"
#include "policy/loader.hpp"
#include "policy/policy.hpp"
#include "policy/system_info.hpp"

namespace aerie::policy::test {

// Where parsed test text pretends to live.
inline const std::string kFile = "/etc/qubes/policy.d/30-test.policy";

inline constexpr const char* kWorkUuid = "11111111-1111-4111-8111-111111111111";
inline constexpr const char* kPersonalUuid = "22222222-2222-4222-8222-222222222222";
inline constexpr const char* kDefaultDvmUuid = "33333333-3333-4333-8333-333333333333";
inline constexpr const char* kOtherDvmUuid = "44444444-4444-4444-8444-444444444444";
inline constexpr const char* kFedoraUuid = "55555555-5555-4555-8555-555555555555";
inline constexpr const char* kDisp42Uuid = "66666666-6666-4666-8666-666666666666";
inline constexpr const char* kInternalUuid = "77777777-7777-4777-8777-777777777777";
inline constexpr const char* kNoDvmUuid = "88888888-8888-4888-8888-888888888888";
inline constexpr const char* kRelayUuid = "99999999-9999-4999-8999-999999999999";
inline constexpr const char* kRemoteUuid = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
inline constexpr const char* kBadDvmUserUuid = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";
inline constexpr const char* kAdminUuid = "00000000-0000-0000-0000-000000000000";

inline Domain make_domain(std::string name, std::string type, std::string uuid,
                          std::string power_state = "Halted") {
    Domain d;
    d.name = std::move(name);
    d.type = std::move(type);
    d.uuid = std::move(uuid);
    d.power_state = std::move(power_state);
    return d;
}

// The qubes most tests use:
//   work         AppVM, Running, tags work-tag shared, default_dispvm default-dvm
//   personal     AppVM, Halted,  tag shared,            default_dispvm other-dvm
//   default-dvm  AppVM, disposable template, tag dvm-tag, default_dispvm itself
//   other-dvm    AppVM, disposable template, tag other-tag
//   fedora       TemplateVM, tag dvm-tag (but not a disposable template)
//   disp42       DispVM, Running
//   internal-q   AppVM, Running, internal
//   nodvm        AppVM, Running, no default_dispvm
//   relay        AppVM, Running (relay of remote-a)
//   remote-a     RemoteVM via relay, transport qubesair.SSHProxy
//   bad-dvm-user AppVM, Running, default_dispvm fedora (not a disposable template)
inline SystemInfo standard_system() {
    SystemInfo sys;
    auto work = make_domain("work", "AppVM", kWorkUuid, "Running");
    work.tags = {"work-tag", "shared"};
    work.default_dispvm = "default-dvm";
    sys.add(work);

    auto personal = make_domain("personal", "AppVM", kPersonalUuid);
    personal.tags = {"shared"};
    personal.default_dispvm = "other-dvm";
    sys.add(personal);

    auto dvm = make_domain("default-dvm", "AppVM", kDefaultDvmUuid);
    dvm.tags = {"dvm-tag"};
    dvm.template_for_dispvms = true;
    dvm.default_dispvm = "default-dvm";
    sys.add(dvm);

    auto other = make_domain("other-dvm", "AppVM", kOtherDvmUuid);
    other.tags = {"other-tag"};
    other.template_for_dispvms = true;
    sys.add(other);

    auto fedora = make_domain("fedora", "TemplateVM", kFedoraUuid);
    fedora.tags = {"dvm-tag"};
    sys.add(fedora);

    sys.add(make_domain("disp42", "DispVM", kDisp42Uuid, "Running"));

    auto internal = make_domain("internal-q", "AppVM", kInternalUuid, "Running");
    internal.internal = true;
    sys.add(internal);

    sys.add(make_domain("nodvm", "AppVM", kNoDvmUuid, "Running"));
    sys.add(make_domain("relay", "AppVM", kRelayUuid, "Running"));

    auto remote = make_domain("remote-a", "RemoteVM", kRemoteUuid);
    remote.relayvm = "relay";
    remote.transport_rpc = "qubesair.SSHProxy";
    sys.add(remote);

    auto bad = make_domain("bad-dvm-user", "AppVM", kBadDvmUserUuid, "Running");
    bad.default_dispvm = "fedora";
    sys.add(bad);
    return sys;
}

// Parses one file's text as if it were kFile (or `path`); includes are looked
// up in `files`.
inline Policy parse(std::string_view text, const PolicyFiles& files,
                    const std::string& path = kFile, const LoadOptions& options = {}) {
    return load_policy_text(files, path, text, options);
}

inline Policy parse(std::string_view text) {
    MemoryFiles none;
    return parse(text, none);
}

// The what() of the PolicySyntaxError that parsing raises, or "no error".
inline std::string parse_error(std::string_view text, const PolicyFiles& files,
                               const std::string& path = kFile,
                               const LoadOptions& options = {}) {
    try {
        parse(text, files, path, options);
    } catch (const PolicySyntaxError& e) {
        return e.what();
    }
    return "no error";
}

inline std::string parse_error(std::string_view text) {
    MemoryFiles none;
    return parse_error(text, none);
}

// The error message of the whole policy load, or "no error".
inline std::string load_error(const PolicyFiles& files, const LoadOptions& options) {
    try {
        load_policy(files, options);
    } catch (const PolicySyntaxError& e) {
        return e.what();
    } catch (const PolicyLoadError& e) {
        return e.what();
    }
    return "no error";
}

inline Decision eval(const Policy& policy, const SystemInfo& system,
                     std::string_view service_and_arg, std::string source, std::string target,
                     std::optional<std::string> requested_source = std::nullopt) {
    Request r = Request::from_service_and_arg(service_and_arg, std::move(source),
                                              std::move(target));
    r.requested_source = std::move(requested_source);
    return evaluate(policy, system, r);
}

// "FILE:LINE" of a line of kFile, as deny reasons spell it.
inline std::string at(long line) { return kFile + ":" + std::to_string(line); }

}  // namespace aerie::policy::test
