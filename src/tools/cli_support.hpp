// Pieces the command-line tools share: Qubes-style argument errors (exit 2),
// reading a system-info file, loading the policy directories.
#pragma once

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "policy/errors.hpp"
#include "policy/loader.hpp"
#include "policy/system_info.hpp"

namespace aerie::tools {

// Parses argv like Python's argparse does for Qubes' tools: usage errors go to
// stderr with exit code 2; --help exits 0.
inline int parse_args(CLI::App& app, int argc, char** argv) {
    try {
        app.parse(argc, argv);
    } catch (const CLI::CallForHelp& e) {
        std::fputs(app.help().c_str(), stdout);
        return 0;
    } catch (const CLI::ParseError& e) {
        fmt::print(stderr, "{}: error: {}\n", app.get_name(), e.what());
        return 2;
    }
    return -1;  // go on
}

inline std::string read_text_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::ostringstream buf;
    buf << in.rdbuf();
    return buf.str();
}

inline policy::SystemInfo load_system_info_file(const std::string& path) {
    try {
        return policy::SystemInfo::from_json(read_text_file(path));
    } catch (const policy::SystemInfoError& e) {
        throw std::runtime_error(path + ": " + e.what());
    }
}

inline policy::Policy load_policy_dirs(const std::vector<std::string>& dirs) {
    policy::LoadOptions options;
    if (!dirs.empty()) options.dirs = dirs;
    policy::DiskFiles files;
    return policy::load_policy(files, options);
}

}  // namespace aerie::tools
