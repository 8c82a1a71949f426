#include "policy/policy.hpp"

namespace aerie::policy {

namespace {

// The key a rule's source is filed under, or empty for non-literal sources.
std::string_view source_key(const Token& source) {
    if (source.kind == TokenKind::Name || source.kind == TokenKind::AdminVM) return source.text;
    return {};
}

}  // namespace

void Policy::add(Rule rule) {
    auto index = static_cast<uint32_t>(rules_.size());
    Bucket& bucket = rule.service ? by_service_[*rule.service] : any_service_;
    if (auto key = source_key(rule.source); !key.empty())
        bucket.by_source[std::string(key)].push_back(index);
    else
        bucket.any_source.push_back(index);
    rules_.push_back(std::move(rule));
}

const std::vector<uint32_t>* Policy::lookup(const Bucket& bucket, std::string_view key) {
    if (bucket.by_source.empty()) return nullptr;
    auto it = bucket.by_source.find(std::string(key));
    return it == bucket.by_source.end() ? nullptr : &it->second;
}

size_t Policy::collect_cursors(std::string_view service, const SourceKeys& source,
                               Cursor (&cursors)[6]) const {
    size_t n = 0;
    auto push = [&](const std::vector<uint32_t>* list) {
        if (list && !list->empty()) cursors[n++] = Cursor{list->data(), list->data() + list->size()};
    };
    auto add_bucket = [&](const Bucket& bucket) {
        push(&bucket.any_source);
        for (size_t k = 0; k < source.count; ++k) push(lookup(bucket, source.keys[k]));
    };
    if (auto it = by_service_.find(std::string(service)); it != by_service_.end())
        add_bucket(it->second);
    add_bucket(any_service_);
    return n;
}

std::vector<const Rule*> Policy::candidates(std::string_view service,
                                            const SourceKeys& source) const {
    std::vector<const Rule*> out;
    find(service, source, [&](const Rule& rule) {
        out.push_back(&rule);
        return false;
    });
    return out;
}

}  // namespace aerie::policy
