// qubes-policy-lint: checks policy files line by line without following
// includes. Prints "PATH:LINE: error: MESSAGE"; exit 1 if any error.
#include <iostream>
#include <iterator>

#include "policy/loader.hpp"
#include "policy/text.hpp"
#include "tools/cli_support.hpp"

using namespace aerie;

int main(int argc, char** argv) {
    CLI::App app{"Lint qrexec policy files", "qubes-policy-lint"};
    bool show_line = false, include_service = false;
    std::vector<std::string> files;
    app.add_flag("-s,--show-line", show_line, "Show the line that caused the error");
    app.add_flag("-i,--include-service", include_service,
                 "Lint files in the old format of !include-service");
    app.add_option("file", files, "Files to lint, - for standard input")->required();
    if (int rc = tools::parse_args(app, argc, argv); rc >= 0) return rc;

    int exit_code = 0;
    for (const auto& path : files) {
        std::string data;
        try {
            if (path == "-")
                data.assign(std::istreambuf_iterator<char>(std::cin), {});
            else
                data = tools::read_text_file(path);
        } catch (const std::exception&) {
            fmt::print("{}:0: error: File does not exist.\n", path);
            exit_code = 1;
            continue;
        }
        auto lines = policy::text::split_lines(data);
        for (const auto& err : policy::lint_policy_text(path, data, include_service)) {
            std::string out = fmt::format("{}:{}: error: {}", path, err.line(), err.message());
            if (show_line && err.line() >= 1 && static_cast<size_t>(err.line()) <= lines.size())
                out += ": " + std::string(policy::text::strip(lines[err.line() - 1]));
            fmt::print("{}\n", out);
            exit_code = 1;
        }
    }
    return exit_code;
}
