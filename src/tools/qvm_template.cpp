// qvm-template: makes TemplateVMs from Aerie's template sources, in the
// manner of Qubes' qvm-template (whose sources are RPM repositories, which
// Aerie does not have):
//   qvm-template create-from-host NAME
//       a template reusing the host's own system (its /usr bound read-only
//       at start, a cleaned copy of its /etc): seconds, the demo's default
//   qvm-template create-from-debootstrap [--suite SUITE] [--mirror URL] NAME
//       a Debian of its own made by debootstrap (default suite bookworm, the
//       mirror of the host's apt sources): minutes, debootstrap's progress
//       shown on stderr
// The TemplateVM is created over the Admin API (admin.vm.Create.TemplateVM,
// label black as qvm-template-postprocess gives), its root volume's image
// asked with admin.vm.volume.Info (path=), mounted and filled here; the template-*
// features record where it came from (template-reponame "@host" or
// "@debootstrap"), and the features a Qubes template announces (os, qrexec,
// vmexec, supported-rpc.* of the services every qube has, services/shipped.hpp).
// A failure removes the new qube again and is reported as
// "qvm-template: error: MESSAGE" with exit code 1.
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <functional>

#include "services/shipped.hpp"
#include "storage/debootstrap.hpp"
#include "storage/mounts.hpp"
#include "storage/pool.hpp"
#include "storage/host_template.hpp"
#include "tools/qvm_support.hpp"

using namespace aerie;
using tools::qvm::ToolCli;
namespace fs = std::filesystem;

namespace {

const std::vector<std::string> kCommonUsage = {"[--verbose]", "[--quiet]", "[--help]"};

struct Args {
    std::string command;  // "create-from-host" / "create-from-debootstrap"
    std::string name;
    std::string suite = "bookworm";
    std::string mirror;
};

// qvm-template's DATE_FMT, in UTC.
std::string now_utc() {
    std::time_t t = std::time(nullptr);
    std::tm tm{};
    ::gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", &tm);
    return buf;
}

Args read_args(ToolCli& cli, std::vector<std::string> rest) {
    static const std::vector<std::string> commands = {"create-from-host", "create-from-debootstrap"};
    // Options the main parser does not know are argparse's leftovers.
    std::vector<std::string> extras;
    while (!rest.empty() && rest[0].size() > 1 && rest[0][0] == '-') {
        extras.push_back(rest[0]);
        rest.erase(rest.begin());
    }
    if (rest.empty()) cli.usage_error("the following arguments are required: command");
    if (std::find(commands.begin(), commands.end(), rest[0]) == commands.end()) {
        std::vector<std::string> choices;
        for (const auto& c : commands) choices.push_back(tools::qvm::py_repr(c));
        cli.usage_error("argument command: invalid choice: " + tools::qvm::py_repr(rest[0]) + " (choose from " +
                        tools::qvm::join(choices, ", ") + ")");
    }
    Args args;
    args.command = rest[0];
    bool debootstrap = args.command == "create-from-debootstrap";
    std::string prog = cli.prog() + " " + args.command;
    std::vector<std::string> usage_opts = kCommonUsage;
    if (debootstrap) usage_opts.insert(usage_opts.end(), {"[--suite SUITE]", "[--mirror MIRROR]"});
    auto sub_error = [&](const std::string& message) { cli.usage_error_of(prog, usage_opts, {"NAME"}, message); };

    std::vector<std::string> positionals;
    bool help = false;
    for (size_t i = 1; i < rest.size(); ++i) {
        const std::string& w = rest[i];
        if (w.size() < 2 || w[0] != '-') {
            positionals.push_back(w);
            continue;
        }
        size_t eq = w.find('=');
        std::string name = w.substr(0, eq);
        std::optional<std::string> inline_value;
        if (eq != std::string::npos && w[1] == '-') inline_value = w.substr(eq + 1);
        auto value = [&](const std::string& display) -> std::string {
            if (inline_value) return *inline_value;
            if (i + 1 < rest.size() && !(rest[i + 1].size() > 1 && rest[i + 1][0] == '-')) return rest[++i];
            sub_error("argument " + display + ": expected one argument");
            throw tools::qvm::ExitStatus{2};  // not reached
        };
        if (name == "-v" || name == "--verbose") {
            cli.add_verbosity(1, 0);
        } else if (name == "-q" || name == "--quiet") {
            cli.add_verbosity(0, 1);
        } else if (name == "-h" || name == "--help") {
            help = true;
        } else if (debootstrap && name == "--suite") {
            args.suite = value("--suite");
        } else if (debootstrap && name == "--mirror") {
            args.mirror = value("--mirror");
        } else {
            extras.push_back(w);
        }
    }
    if (help) {
        std::fputs(tools::qvm::format_usage(prog, usage_opts, {"NAME"}).c_str(), stdout);
        fmt::print("\n{}\n", debootstrap ? "create a TemplateVM with a Debian made by debootstrap"
                                         : "create a TemplateVM that reuses the host's system");
        throw tools::qvm::ExitStatus{0};
    }
    if (positionals.empty()) sub_error("the following arguments are required: NAME");
    if (positionals.size() > 1) extras.insert(extras.begin(), positionals.begin() + 1, positionals.end());
    if (!extras.empty()) cli.usage_error("unrecognized arguments: " + tools::qvm::join(extras, " "));
    args.name = positionals[0];
    return args;
}

// The root volume's path= (admin.vm.volume.Info): an image file (Aerie's
// pool), or a folder (a pool of folders, as tests' stand-ins give).
fs::path root_volume(const admin::AdminClient& client, const std::string& name) {
    auto info = client.volume_info(name, "root");
    auto it = info.find("path");
    if (it == info.end() || it->second.empty())
        throw admin::AdminError("QubesException", "the root volume of " + name + " has no path");
    return it->second;
}

// Fills the (halted, new) template's root volume with `build`, which makes
// the root folder it is given. An image is mounted at the pool's mount point
// beside it (<pool>/vm/<uuid>/root) meanwhile; an empty folder is replaced.
void fill_root(const fs::path& volume, const std::function<void(const fs::path&)>& build) {
    std::error_code ec;
    auto st = fs::symlink_status(volume, ec);
    if (fs::is_directory(st)) {
        if (!fs::is_empty(volume))
            throw admin::AdminError("QubesException", "the root volume is not empty: " + volume.string());
        if (::rmdir(volume.c_str()) < 0)
            throw admin::AdminError("QubesException", "replacing " + volume.string() + ": " + std::strerror(errno));
        try {
            build(volume);
        } catch (...) {
            ::mkdir(volume.c_str(), 0755);  // the empty volume back, for the removal
            throw;
        }
        return;
    }
    if (!fs::is_regular_file(st))
        throw admin::AdminError("QubesException", "not a volume image or folder: " + volume.string());
    fs::path top = volume;
    top.replace_extension();
    storage::mount_image(volume, top, true);
    try {
        storage::build_into_empty_root(top, build);
    } catch (...) {
        storage::unmount_volume(top);
        throw;
    }
    storage::unmount_volume(top);
}

int run(ToolCli& cli, int argc, char** argv) {
    Args args = read_args(cli, cli.parse_prefix(argc, argv));
    const admin::AdminClient& client = cli.client;
    for (const auto& q : client.list_qubes())
        if (q.name == args.name) cli.runtime_error("Template " + tools::qvm::py_repr(args.name) + " already installed");

    bool debootstrap = args.command == "create-from-debootstrap";
    try {
        client.create_qube("TemplateVM", "", args.name, "black");
    } catch (const admin::AdminError& e) {
        cli.runtime_error("Error creating VM: " + std::string(e.what()));
    }
    std::string summary;
    try {
        const fs::path image = root_volume(client, args.name);
        try {
            if (debootstrap) {
                storage::DebootstrapOptions options;
                options.suite = args.suite;
                options.mirror = args.mirror;
                // debootstrap's progress goes to stderr, as qvm-template's own does.
                std::fflush(stdout);
                int saved_stdout = ::dup(STDOUT_FILENO);
                ::dup2(STDERR_FILENO, STDOUT_FILENO);
                try {
                    fill_root(image, [&](const fs::path& root) { storage::build_debootstrap_root(root, options); });
                } catch (...) {
                    ::dup2(saved_stdout, STDOUT_FILENO);
                    ::close(saved_stdout);
                    throw;
                }
                ::dup2(saved_stdout, STDOUT_FILENO);
                ::close(saved_stdout);
                summary = "Debian " + args.suite + " made by debootstrap";
            } else {
                fill_root(image, [](const fs::path& root) { storage::create_host_template(root); });
                // The pool's mark of a host template (beside the image, not in the qube's root).
                if (fs::is_regular_file(image)) std::ofstream(image.parent_path() / "root.host-usr") << "1\n";
                summary = "The host's system";
            }
        } catch (const std::exception& e) {
            throw admin::AdminError("QubesException", e.what());
        }
        std::string when = now_utc();
        client.set_feature(args.name, "template-name", args.name);
        client.set_feature(args.name, "template-reponame", debootstrap ? "@debootstrap" : "@host");
        client.set_feature(args.name, "template-buildtime", when);
        client.set_feature(args.name, "template-installtime", when);
        client.set_feature(args.name, "template-summary", summary);
        // What a Qubes template's agent announces of itself: Aerie's services
        // are in every qube.
        for (auto [feature, value] : services::kTemplateFeatures)
            client.set_feature(args.name, std::string(feature), std::string(value));
        for (auto service : services::kAnnouncedServices)
            client.set_feature(args.name, "supported-rpc." + std::string(service), "1");
    } catch (const admin::AdminError& e) {
        try {
            client.remove_qube(args.name);
        } catch (const admin::AdminError&) {
        }
        cli.runtime_error(e.what());
    }
    return 0;
}

}  // namespace

int main(int argc, char** argv) {
    ToolCli cli("Create TemplateVMs from Aerie's template sources", "qvm-template");
    cli.usage_positionals = {"{create-from-host,create-from-debootstrap}", "..."};
    return tools::qvm::run_tool(cli, [&] { return run(cli, argc, argv); });
}
