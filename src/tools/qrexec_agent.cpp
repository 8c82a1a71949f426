// qrexec-agent: runs inside a qube; see src/qrexec/agent.hpp.
#include <getopt.h>
#include <signal.h>

#include <cstdio>

#include "qrexec/agent.hpp"
#include "qrexec/vchan.hpp"

int main(int argc, char** argv) {
    aerie::qrexec::AgentConfig config;
    static const option longopts[] = {
        {"help", no_argument, nullptr, 'h'},
        {"agent-socket", required_argument, nullptr, 'a'},
        {"no-fork-server", no_argument, nullptr, 'n'},
        {nullptr, 0, nullptr, 0},
    };
    int opt;
    while ((opt = getopt_long(argc, argv, "+h", longopts, nullptr)) != -1) {
        switch (opt) {
            case 'a': config.agent_socket = optarg; break;
            case 'n': break;  // services always run from the agent's event loop
            default:
                std::fprintf(stderr, "usage: %s [--agent-socket=PATH] [--no-fork-server]\n", argv[0]);
                return opt == 'h' ? 0 : 1;
        }
    }
    if (optind != argc) {
        std::fprintf(stderr, "%s: unexpected argument: %s\n", argv[0], argv[optind]);
        return 1;
    }
    ::signal(SIGPIPE, SIG_IGN);
    config.domid = aerie::qrexec::vchan_local_domain();
    asio::io_context io;
    aerie::qrexec::Agent agent(io, config);
    try {
        agent.start();
    } catch (const std::exception& e) {
        std::fprintf(stderr, "qrexec-agent: %s\n", e.what());
        return 1;
    }
    asio::signal_set stop(io, SIGTERM, SIGINT);
    stop.async_wait([&io](const asio::error_code&, int) { io.stop(); });
    io.run();
    return 0;
}
