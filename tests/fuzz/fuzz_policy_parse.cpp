// Fuzzes the policy reader: the input is a small tree of policy files, loaded
// as a whole (load_policy), as one text (load_policy_text) and linted. Syntax
// and load errors are expected; anything else (another exception, a crash, a
// sanitizer report) is a bug. Whatever loads is then evaluated.
//
// Input format (text): the first section is /etc/qubes/policy.d/30-fuzz.policy.
// A line "%% PATH" starts a new file at PATH (relative paths are under
// /etc/qubes/policy.d); "%% PATH/" only creates a directory. Useful places:
// /run/qubes/policy.d (wins over /etc), /etc/qubes-rpc/policy (!compat-4.0).

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "fuzz_common.hpp"
#include "policy/errors.hpp"
#include "policy/files.hpp"
#include "policy/loader.hpp"

namespace {

namespace ap = aerie::policy;

constexpr const char* kEtcDir = "/etc/qubes/policy.d";
constexpr const char* kTopFile = "/etc/qubes/policy.d/30-fuzz.policy";

// An absolute, normalised path for a header, or empty if unusable.
std::string place(std::string_view raw, bool* is_dir) {
    *is_dir = !raw.empty() && raw.back() == '/';
    std::filesystem::path p(raw);
    if (p.is_relative()) p = std::filesystem::path(kEtcDir) / p;
    std::string norm = p.lexically_normal().string();
    while (norm.size() > 1 && norm.back() == '/') norm.pop_back();
    if (norm.empty() || norm[0] != '/' || norm == "/") return {};
    return norm;
}

void add(ap::MemoryFiles& files, std::string_view header, std::string_view body) {
    bool is_dir = false;
    std::string path = place(header, &is_dir);
    if (path.empty()) return;
    if (is_dir)
        files.add_dir(path);
    else
        files.add_file(path, std::string(body));
}

// A few requests that exercise each kind of source and target.
void evaluate_some(const ap::Policy& policy) {
    static const ap::Request requests[] = {
        ap::Request::from_service_and_arg("qubes.Filecopy", "work", "vault"),
        ap::Request::from_service_and_arg("qubes.Filecopy+arg", "untrusted", ""),
        ap::Request::from_service_and_arg("qubes.OpenInVM", "personal", "@dispvm"),
        ap::Request::from_service_and_arg("qubes.OpenInVM", "work", "@dispvm:default-dvm"),
        ap::Request::from_service_and_arg("qubes.GetDate", "work", "dom0"),
        ap::Request::from_service_and_arg("qubes.Gpg+sign", "dom0",
                                          "uuid:0b5d6f3a-9c2e-4d71-8e44-7a2b1c9d0e53"),
        ap::Request::from_service_and_arg("x", "work", "remote-vault"),
        ap::Request::from_service_and_arg("test.Service+a", "nonexistent", "@default"),
    };
    for (const auto& r : requests)
        aerie::fuzz::evaluate_all_ways(policy, r, std::string("sys-net"));
    // The index offers each rule among the candidates of its own service and
    // source, with the candidates in file order.
    size_t checked = 0;
    for (const auto& rule : policy.rules()) {
        if (++checked > 64) break;
        bool literal =
            rule.source.kind == ap::TokenKind::Name || rule.source.kind == ap::TokenKind::AdminVM;
        ap::Policy::SourceKeys keys;
        keys.keys[0] = literal ? std::string_view(rule.source.text) : std::string_view("work");
        keys.count = 1;
        auto candidates = policy.candidates(rule.service ? *rule.service : "some.Service", keys);
        if (std::find(candidates.begin(), candidates.end(), &rule) == candidates.end())
            aerie::fuzz::violated("the index offers a rule for its own service and source",
                                  rule.location());
        if (!std::is_sorted(candidates.begin(), candidates.end()))
            aerie::fuzz::violated("candidates come in file order", rule.location());
    }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
    std::string_view input(reinterpret_cast<const char*>(data), size);

    ap::MemoryFiles files;
    files.add_dir(kEtcDir);
    std::string_view top;
    std::string_view header;
    bool in_top = true;
    size_t section_start = 0;
    auto flush = [&](size_t end) {
        std::string_view body = input.substr(section_start, end - section_start);
        if (in_top) {
            top = body;
            files.add_file(kTopFile, std::string(body));
        } else {
            add(files, header, body);
        }
    };
    size_t pos = 0;
    while (pos < input.size()) {
        size_t nl = input.find('\n', pos);
        size_t line_end = nl == std::string_view::npos ? input.size() : nl;
        std::string_view line = input.substr(pos, line_end - pos);
        size_t next = nl == std::string_view::npos ? input.size() : nl + 1;
        if (line.substr(0, 3) == "%% ") {
            flush(pos);
            in_top = false;
            header = line.substr(3);
            section_start = next;
        }
        pos = next;
    }
    flush(input.size());

    ap::LoadOptions options;  // /run/qubes/policy.d, /etc/qubes/policy.d
    try {
        ap::Policy policy = ap::load_policy(files, options);
        evaluate_some(policy);
    } catch (const ap::PolicySyntaxError&) {
    } catch (const ap::PolicyLoadError&) {
    }
    try {
        ap::Policy policy = ap::load_policy_text(files, kTopFile, top, options);
        evaluate_some(policy);
    } catch (const ap::PolicySyntaxError&) {
    } catch (const ap::PolicyLoadError&) {
    }
    (void)ap::lint_policy_text(kTopFile, top, false);
    (void)ap::lint_policy_text(kTopFile, top, true);
    return 0;
}
