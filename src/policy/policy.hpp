// A loaded policy: every rule in file order, plus an index so that finding the
// first matching rule costs time in proportion to the rules that could match
// (same service or "*", same literal source or a non-literal source), never to
// the rules of other services.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "policy/rule.hpp"

namespace aerie::policy {

class Policy {
public:
    void add(Rule rule);
    const std::vector<Rule>& rules() const { return rules_; }
    size_t size() const { return rules_.size(); }

    // Index keys under which a request's source is filed: its name,
    // "uuid:<uuid>", or "@adminvm" for dom0.
    struct SourceKeys {
        std::string_view keys[2];
        size_t count = 0;
    };

    // Visits, in file order, the rules that may match a request for this
    // service and source; stops at the first rule for which visit() is true
    // and returns it (or nullptr).
    template <typename Visit>
    const Rule* find(std::string_view service, const SourceKeys& source, Visit&& visit) const;

    // The same candidate rules, in file order, as a list.
    std::vector<const Rule*> candidates(std::string_view service, const SourceKeys& source) const;

private:
    struct Bucket {
        std::vector<uint32_t> any_source;  // rules whose source is not a literal
        std::unordered_map<std::string, std::vector<uint32_t>> by_source;
    };
    struct Cursor {
        const uint32_t* at = nullptr;
        const uint32_t* end = nullptr;
    };

    static const std::vector<uint32_t>* lookup(const Bucket& bucket, std::string_view key);
    size_t collect_cursors(std::string_view service, const SourceKeys& source,
                           Cursor (&cursors)[6]) const;

    std::vector<Rule> rules_;
    std::unordered_map<std::string, Bucket> by_service_;
    Bucket any_service_;
};

template <typename Visit>
const Rule* Policy::find(std::string_view service, const SourceKeys& source,
                         Visit&& visit) const {
    Cursor cursors[6];
    size_t n = collect_cursors(service, source, cursors);
    // k-way merge of the sorted index lists, so rules keep their file order.
    for (;;) {
        Cursor* best = nullptr;
        for (size_t i = 0; i < n; ++i) {
            if (cursors[i].at != cursors[i].end && (!best || *cursors[i].at < *best->at))
                best = &cursors[i];
        }
        if (!best) return nullptr;
        const Rule& rule = rules_[*best->at++];
        if (visit(rule)) return &rule;
    }
}

}  // namespace aerie::policy
