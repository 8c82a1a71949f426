// Fuzzes evaluation: a fixed policy that uses every action, token kind and
// parameter, a fixed system (fuzz_common.hpp), and requests whose every field
// comes from the input. evaluate(), answer_ask() and render_answer() must
// never crash or throw, and their results must keep the properties checked
// in fuzz_common.hpp.
//
// Input format (text, one field per line):
//   SERVICE+ARG          (or SERVICE<TAB>ARG to set the argument verbatim)
//   SOURCE
//   TARGET
//   REQUESTED_SOURCE     (optional; an empty line is an empty requested source)
//   CHOICE               (optional; a target to answer an ask with)
//   POLICY LINES...      (optional; put before the fixed policy if they parse)

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.hpp"
#include "policy/errors.hpp"
#include "policy/files.hpp"
#include "policy/loader.hpp"

namespace {

namespace ap = aerie::policy;

constexpr const char* kPolicyPath = "/etc/qubes/policy.d/30-fuzz.policy";

constexpr const char* kFixedPolicy = R"(# Every action, token kind and parameter.
qubes.Filecopy      *       work            vault           allow
qubes.Filecopy      *       @anyvm          vault           deny    notify=no
qubes.Filecopy      *       @tag:untrusted  @anyvm          deny
qubes.Filecopy      *       @anyvm          @anyvm          ask     default_target=personal
qubes.OpenInVM      *       @anyvm          @dispvm         allow
qubes.OpenInVM      *       @anyvm          @dispvm:@tag:dvm allow  autostart=no
qubes.OpenInVM      *       @anyvm          @default        allow   target=@dispvm:default-dvm
qubes.OpenURL       *       @anyvm          @dispvm:online-dvm ask  default_target=@dispvm:online-dvm
qubes.OpenURL       *       @anyvm          @anyvm          ask     target=@dispvm
qubes.GetDate       *       @anyvm          dom0            allow
qubes.GetDate       *       @anyvm          @adminvm        allow   notify=yes
qubes.Gpg           +sign   @tag:trusted    vault           allow   user=user autostart=no
qubes.Gpg           +sign   @tag:trusted    @default        ask     target=vault default_target=vault
qubes.Gpg           *       @anyvm          vault           deny    notify=no
qubes.Gpg           *       @anyvm          @anyvm          ask     autostart=no
qubes.VMShell       *       dom0            @type:AppVM     allow   user=root
qubes.VMShell       *       @adminvm        @type:TemplateVM ask
qubes.VMShell       *       uuid:6f1c0d4e-2a7b-4c38-9a51-3c1e8f0b7d21 uuid:9e7f2c1b-5a4d-4e3f-8b2a-1d0c9e8f7a65 allow
qubes.Backup        *       remote-vault    work            allow
qubes.Backup        *       work            remote-vault    allow
qubes.Backup        *       work            remote-orphan   allow
qubes.Backup        *       remote-by-uuid  @anyvm          ask
qubes.Backup        *       @anyvm          @tag:net        ask     default_target=sys-net
test.Any            *       *               *               ask
test.Any            *       @anyvm          @default        allow   target=dom0
test.Any            *       @anyvm          @default        allow   target=work
*                   *       @type:RemoteVM  @anyvm          allow   target=sys-relay
*                   *       @dispvm:default-dvm @anyvm      allow
*                   *       @anyvm          @anyvm          deny
)";

const ap::Policy& fixed_policy() {
    static const ap::Policy policy = [] {
        ap::MemoryFiles files;
        return ap::load_policy_text(files, kPolicyPath, kFixedPolicy);
    }();
    return policy;
}

std::vector<std::string_view> lines_of(std::string_view input, size_t max_fields) {
    std::vector<std::string_view> out;
    while (out.size() + 1 < max_fields) {
        auto nl = input.find('\n');
        if (nl == std::string_view::npos) break;
        out.push_back(input.substr(0, nl));
        input.remove_prefix(nl + 1);
    }
    out.push_back(input);
    return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);
    auto fields = lines_of(input, 6);
    auto field = [&](size_t i) -> std::optional<std::string> {
        if (i < fields.size()) return std::string(fields[i]);
        return std::nullopt;
    };

    ap::Request request;
    std::string service_and_arg = field(0).value_or("");
    if (auto tab = service_and_arg.find('\t'); tab != std::string::npos) {
        request.service = service_and_arg.substr(0, tab);
        request.argument = service_and_arg.substr(tab + 1);
        request.source = field(1).value_or("");
        request.target = field(2).value_or("");
    } else {
        request = ap::Request::from_service_and_arg(service_and_arg, field(1).value_or(""),
                                                    field(2).value_or(""));
    }
    request.requested_source = field(3);
    std::optional<std::string> choice = field(4);

    std::optional<ap::Policy> extended;
    if (auto extra = field(5); extra && !extra->empty()) {
        try {
            ap::MemoryFiles files;
            extended = ap::load_policy_text(files, kPolicyPath, *extra + "\n" + kFixedPolicy);
        } catch (const ap::PolicySyntaxError&) {
        } catch (const ap::PolicyLoadError&) {
        }
    }
    const ap::Policy& policy = extended ? *extended : fixed_policy();

    aerie::fuzz::evaluate_all_ways(policy, request, choice);
    // The same call without the requested source.
    if (request.requested_source) {
        ap::Request plain = request;
        plain.requested_source.reset();
        aerie::fuzz::evaluate_all_ways(policy, plain, choice);
    }
    return 0;
}
