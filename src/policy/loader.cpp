#include "policy/loader.hpp"

#include <algorithm>
#include <filesystem>
#include <optional>

#include "policy/errors.hpp"
#include "policy/text.hpp"

namespace aerie::policy {

namespace {

namespace fs = std::filesystem;

bool valid_policy_filename(std::string_view name) {
    return std::all_of(name.begin(), name.end(), [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || c == '_' || c == '.' || c == '-';
    });
}

// A line of the old (!include-service) syntax in the current one: Qubes'
// substitutions, in Qubes' order.
std::string old_format_line(std::string_view stripped) {
    std::string line(stripped);
    auto replace_all = [&](std::string_view from, std::string_view to) {
        for (size_t pos = 0; (pos = line.find(from, pos)) != std::string::npos; pos += to.size())
            line.replace(pos, from.size(), to);
    };
    replace_all("$include:", "!include ");
    replace_all("$", "@");
    replace_all(",", " ");
    return line;
}

bool has_suffix(std::string_view s, std::string_view suffix) {
    return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The *.policy files of a directory, as (base name, path), sorted; throws
// `invalid` (a callable building the exception) for a bad file name.
template <typename Invalid>
std::vector<std::pair<std::string, std::string>> policy_files_in(const PolicyFiles& files,
                                                                 const std::string& dir,
                                                                 Invalid&& invalid) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& name : files.list(dir)) {
        if (name.empty() || name[0] == '.' || !has_suffix(name, ".policy")) continue;
        std::string path = (fs::path(dir) / name).string();
        if (files.kind(path) != PolicyFiles::Kind::File) continue;
        if (!valid_policy_filename(name)) invalid(path);
        out.emplace_back(name, path);
    }
    std::sort(out.begin(), out.end());
    return out;
}

class Loader {
public:
    Loader(const PolicyFiles& files, const LoadOptions& options, Policy& policy)
        : files_(files), options_(options), policy_(policy) {}

    void load_top_level(const std::string& path, std::optional<std::string_view> text) {
        base_dir_ = fs::path(path).parent_path().string();
        load_file(path, text, std::nullopt, {}, 0);
    }

private:
    struct Where {
        const std::string& file;
        long line;
    };
    using ServiceArg = std::pair<std::optional<std::string>, std::optional<std::string>>;

    [[noreturn]] static void fail(Where at, std::string message) {
        throw PolicySyntaxError(at.file, at.line, std::move(message));
    }

    std::string resolve(const std::string& included) const {
        fs::path p(included);
        if (p.is_relative()) p = fs::path(base_dir_) / p;
        return files_.resolve(p.string());
    }

    std::string read(const std::string& path, std::optional<Where> from) const {
        try {
            return files_.read(path, kMaxFileBytes);
        } catch (const FileReadError& e) {
            if (from) fail(*from, e.what());
            throw PolicyLoadError(e.what());
        }
    }

    // Loads a file in the current syntax, or (service set) the old
    // three-column syntax of !include-service.
    void load_file(const std::string& path, std::optional<std::string_view> given_text,
                   std::optional<Where> from, std::optional<ServiceArg> service, int depth) {
        std::string resolved = files_.resolve(path);
        // Includes may fan out (a file including another twice, repeatedly):
        // bound the total work, not only the depth.
        if (++files_loaded_ > kMaxFilesLoaded) {
            std::string why = "more than " + std::to_string(kMaxFilesLoaded) + " policy files loaded";
            if (!from) throw PolicyLoadError(why);
            fail(*from, why + " (include fan-out?)");
        }
        if (std::find(stack_.begin(), stack_.end(), resolved) != stack_.end())
            fail(*from, "circular include: " + resolved);
        if (depth > kMaxIncludeDepth)
            fail(*from, "includes nested deeper than " + std::to_string(kMaxIncludeDepth));

        std::string owned;
        std::string_view data;
        if (given_text) {
            data = *given_text;
        } else {
            owned = read(path, from);
            data = owned;
        }
        stack_.push_back(resolved);
        long lineno = 0;
        for (std::string_view raw : text::split_lines(data)) {
            ++lineno;
            Where at{path, lineno};
            check_line_bytes(raw, at);
            std::string_view line = text::strip(raw);
            if (line.empty() || line[0] == '#') continue;
            if (service)
                handle_service_line(*service, line, at, depth);
            else
                handle_line(line, at, depth);
        }
        stack_.pop_back();
    }

    static void check_line_bytes(std::string_view raw, Where at) {
        if (raw.size() > kMaxLineBytes)
            fail(at, "line too long (" + std::to_string(raw.size()) + " bytes, at most " +
                         std::to_string(kMaxLineBytes) + ")");
        if (raw.find('\0') != std::string_view::npos) fail(at, "line contains a NUL byte");
        if (!text::is_valid_utf8(raw)) fail(at, "line is not valid UTF-8 text");
    }

    void handle_line(std::string_view line, Where at, int depth) {
        if (line[0] != '!') {
            policy_.add(parse_rule_line(line, at.file, at.line));
            return;
        }
        auto fields = text::split_fields(line);
        std::string_view directive = fields[0];
        size_t nparams = fields.size() - 1;
        if (directive == "!include") {
            if (nparams != 1) fail(at, "invalid number of params");
            include_file(std::string(fields[1]), at, std::nullopt, depth);
        } else if (directive == "!include-dir") {
            if (nparams != 1) fail(at, "invalid number of params");
            include_dir(std::string(fields[1]), at, depth);
        } else if (directive == "!include-service") {
            if (nparams != 3) fail(at, "invalid number of params");
            ServiceArg sa;
            validate_service_and_argument(fields[1], fields[2], &sa.first, &sa.second, at.file,
                                          at.line);
            include_file(std::string(fields[3]), at, sa, depth);
        } else if (directive == "!compat-4.0") {
            if (nparams != 0) fail(at, "invalid number of params");
            compat40(at, depth);
        } else {
            fail(at, "invalid directive");
        }
    }

    void handle_service_line(const ServiceArg& service, std::string_view stripped, Where at,
                             int depth) {
        std::string line = old_format_line(stripped);
        if (line[0] == '!') {
            auto fields = text::split_fields(line);
            if (fields[0] != "!include") fail(at, "invalid directive");
            if (fields.size() != 2) fail(at, "invalid number of params");
            include_file(std::string(fields[1]), at, service, depth);
            return;
        }
        policy_.add(parse_service_rule_line(service.first, service.second, line, at.file, at.line));
    }

    void include_file(const std::string& included, Where at, std::optional<ServiceArg> service,
                      int depth) {
        std::string path = resolve(included);
        if (files_.kind(path) != PolicyFiles::Kind::File) fail(at, "not a file: " + path);
        load_file(path, std::nullopt, at, std::move(service), depth + 1);
    }

    void include_dir(const std::string& included, Where at, int depth) {
        std::string dir = resolve(included);
        if (files_.kind(dir) != PolicyFiles::Kind::Directory) fail(at, "not a directory: " + dir);
        std::vector<std::pair<std::string, std::string>> entries;
        try {
            entries = policy_files_in(files_, dir,
                                      [&](const std::string& p) { fail(at, "invalid filename: " + p); });
        } catch (const FileReadError& e) {
            fail(at, e.what());
        }
        for (const auto& entry : entries) load_file(entry.second, std::nullopt, at, std::nullopt, depth + 1);
    }

    // !compat-4.0: every file of the old policy directory as !include-service,
    // ordered by service then argument with "*" (no argument) last; after a
    // specific-argument file, deny what it did not allow.
    void compat40(Where at, int depth) {
        if (in_compat_) fail(at, "!compat-4.0 cannot be nested");
        const std::string& dir = options_.compat_dir;
        if (files_.kind(dir) != PolicyFiles::Kind::Directory) return;
        struct Entry {
            std::string service, argument, path;
        };
        std::vector<Entry> entries;
        std::vector<std::string> names;
        try {
            names = files_.list(dir);
        } catch (const FileReadError& e) {
            fail(at, e.what());
        }
        for (const auto& name : names) {
            if (name.empty() || name[0] == '.' || has_suffix(name, ".rpmsave") ||
                has_suffix(name, ".rpmnew") || has_suffix(name, ".swp"))
                continue;
            std::string path = (fs::path(dir) / name).string();
            if (files_.kind(path) != PolicyFiles::Kind::File) continue;
            auto plus = name.find('+');
            if (plus == std::string::npos)
                entries.push_back({name, "*", path});
            else
                entries.push_back({name.substr(0, plus), name.substr(plus), path});
        }
        std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
            if (a.service != b.service) return a.service < b.service;
            if ((a.argument == "*") != (b.argument == "*")) return b.argument == "*";
            return a.argument < b.argument;
        });
        in_compat_ = true;
        for (const auto& e : entries) {
            Where file_at{e.path, 0};
            ServiceArg sa;
            validate_service_and_argument(e.service, e.argument, &sa.first, &sa.second, e.path, 0);
            load_file(e.path, std::nullopt, at, sa, depth + 1);
            if (sa.second) {
                policy_.add(parse_service_rule_line(sa.first, sa.second, "@anyvm @anyvm deny",
                                                    file_at.file, 0));
                policy_.add(parse_service_rule_line(sa.first, sa.second, "@anyvm @adminvm deny",
                                                    file_at.file, 0));
            }
        }
        in_compat_ = false;
    }

    const PolicyFiles& files_;
    const LoadOptions& options_;
    Policy& policy_;
    std::string base_dir_;
    std::vector<std::string> stack_;
    bool in_compat_ = false;
    size_t files_loaded_ = 0;  // across every top-level file of one load
};

}  // namespace

Policy load_policy(const PolicyFiles& files, const LoadOptions& options) {
    // Base name -> path; the first directory that has a name keeps it.
    std::vector<std::pair<std::string, std::string>> chosen;
    for (const auto& dir : options.dirs) {
        auto kind = files.kind(dir);
        if (kind == PolicyFiles::Kind::Missing) continue;
        if (kind != PolicyFiles::Kind::Directory) throw PolicyLoadError("not a directory: " + dir);
        std::vector<std::pair<std::string, std::string>> entries;
        try {
            entries = policy_files_in(files, dir, [](const std::string& p) -> void {
                throw PolicyLoadError("invalid filename: " + p);
            });
        } catch (const FileReadError& e) {
            throw PolicyLoadError(e.what());
        }
        for (auto& entry : entries) {
            bool taken = std::any_of(chosen.begin(), chosen.end(),
                                     [&](const auto& c) { return c.first == entry.first; });
            if (!taken) chosen.push_back(std::move(entry));
        }
    }
    std::sort(chosen.begin(), chosen.end());

    Policy policy;
    Loader loader(files, options, policy);
    for (const auto& [name, path] : chosen) loader.load_top_level(path, std::nullopt);
    return policy;
}

Policy load_policy_text(const PolicyFiles& files, const std::string& path, std::string_view text,
                        const LoadOptions& options) {
    Policy policy;
    Loader loader(files, options, policy);
    loader.load_top_level(path, text);
    return policy;
}

std::vector<PolicySyntaxError> lint_policy_text(const std::string& path, std::string_view data,
                                                bool include_service_format) {
    std::vector<PolicySyntaxError> errors;
    long lineno = 0;
    for (std::string_view raw : text::split_lines(data)) {
        ++lineno;
        try {
            if (raw.size() > kMaxLineBytes)
                throw PolicySyntaxError(path, lineno, "line too long");
            if (!text::is_valid_utf8(raw) || raw.find('\0') != std::string_view::npos)
                throw PolicySyntaxError(path, lineno, "line is not valid UTF-8 text");
            std::string_view line = text::strip(raw);
            if (line.empty() || line[0] == '#') continue;
            if (include_service_format) {
                std::string old = old_format_line(line);
                if (old[0] == '!') {
                    auto fields = text::split_fields(old);
                    if (fields[0] != "!include")
                        throw PolicySyntaxError(path, lineno, "invalid directive");
                    if (fields.size() != 2)
                        throw PolicySyntaxError(path, lineno, "invalid number of params");
                    continue;  // included files are linted on their own
                }
                parse_service_rule_line(std::nullopt, std::nullopt, old, path, lineno);
                continue;
            }
            if (line[0] == '!') {
                auto fields = text::split_fields(line);
                size_t n = fields.size() - 1;
                std::string_view d = fields[0];
                bool known = d == "!include" || d == "!include-dir" || d == "!include-service" ||
                             d == "!compat-4.0";
                if (!known) throw PolicySyntaxError(path, lineno, "invalid directive");
                size_t want = d == "!include-service" ? 3 : d == "!compat-4.0" ? 0 : 1;
                if (n != want) throw PolicySyntaxError(path, lineno, "invalid number of params");
                if (d == "!include-service") {
                    std::optional<std::string> s, a;
                    validate_service_and_argument(fields[1], fields[2], &s, &a, path, lineno);
                }
                continue;  // included files are linted on their own
            }
            parse_rule_line(line, path, lineno);
        } catch (const PolicySyntaxError& e) {
            errors.push_back(e);
        }
    }
    return errors;
}

}  // namespace aerie::policy
