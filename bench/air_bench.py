#!/usr/bin/env python3
"""Qubes Air figures: the same qrexec call from a qube on host A to a qube on
host A (local), and to a qube on host B through the relays over TLS and over
SSH (warm connections), timed inside the calling qube; then throughput
across. Two hosts are two network namespaces on this machine (see
tests/integration/air_hosts.py). Writes build/bench/air.json and prints it.
Needs root."""

import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = "@AERIE_SOURCE_DIR@"
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "integration"))

import aerie_world  # noqa: E402
from air_hosts import Host, Network, pair_hosts  # noqa: E402

CALLS = int(os.environ.get("AERIE_AIR_BENCH_CALLS", "200"))
TLS_MIB = int(os.environ.get("AERIE_AIR_BENCH_TLS_MIB", "1024"))
SSH_MIB = int(os.environ.get("AERIE_AIR_BENCH_SSH_MIB", "512"))

# Runs inside the calling qube: N calls, each timed, as JSON milliseconds.
TIMER = r"""
import json, subprocess, sys, time
target, n = sys.argv[1], int(sys.argv[2])
times = []
for i in range(n + 10):
    t = time.perf_counter()
    r = subprocess.run(["qrexec-client-vm", target, "test.Echo"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL)
    if r.returncode != 0:
        sys.exit("call %d to %s failed: %d" % (i, target, r.returncode))
    if i >= 10:  # the first ones warm the connections
        times.append((time.perf_counter() - t) * 1000)
print(json.dumps(times))
"""

# Runs inside the calling qube: MIB MiB to test.Null, the seconds it took.
STREAMER = r"""
import subprocess, sys, time
target, mib = sys.argv[1], int(sys.argv[2])
block = b"\xa5" * (1 << 20)
t = time.perf_counter()
p = subprocess.Popen(["qrexec-client-vm", target, "test.Null"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
for _ in range(mib):
    p.stdin.write(block)
p.stdin.close()
if p.wait() != 0:
    sys.exit("stream to %s failed" % target)
print(time.perf_counter() - t)
"""


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1))))]


def main():
    build = os.path.dirname(HERE)
    aerie_world.setup(build)
    if os.geteuid() != 0:
        print("bench_air: needs root (namespaces); skipped")
        return 0
    aerie_world.become_subreaper()
    net = Network("ab")
    a, b = Host("a", net), Host("b", net)
    figures = {}
    try:
        a.build(("work", "vault"))
        b.build(("vault",))
        pair_hosts(a, b, ("work",), ("vault",))
        rvault = a.remote(b, "vault")
        # The same qube over SSH: a RemoteVM of its own.
        a.w.tool("qvm-create", "--class", "RemoteVM", "--label", "red", "b-vault-ssh")
        for prop, value in (("relayvm", a.relay), ("transport_rpc", "qubesair.SSHProxy"),
                            ("remote_name", b.q("vault"))):
            a.w.tool("qvm-prefs", "b-vault-ssh", prop, value)
        for feature in ("air-zone", "air-address"):
            a.w.tool("qvm-features", "b-vault-ssh", feature,
                     a.w.tool("qvm-features", rvault, feature).stdout.strip())
        work, local = a.q("work"), a.q("vault")
        a.w.start_policy_daemon("".join("%s * %s %s allow\n" % (svc, work, t) for svc in ("test.Echo", "test.Null")
                                        for t in (local, rvault, "b-vault-ssh")))
        b.w.start_policy_daemon("test.Echo * {w} {v} allow\ntest.Null * {w} {v} allow\n".format(
            w=b.remote(a, "work"), v=b.q("vault")))
        for q in (work, local):
            a.w.tool("qvm-start", q)
        b.w.tool("qvm-start", b.q("vault"))
        a.w.run(work, "cat > /tmp/timer.py", input=TIMER)
        a.w.run(work, "cat > /tmp/streamer.py", input=STREAMER)
        for name, target in (("local", local), ("tls", rvault), ("ssh", "b-vault-ssh")):
            rc, out, err = a.w.run(work, "python3 /tmp/timer.py %s %d" % (target, CALLS), check=False, timeout=900)
            if rc != 0:
                raise RuntimeError("%s calls: %s\nA: %s\nB: %s" % (name, err, a.w.log(), b.w.log()))
            times = json.loads(out)
            figures["%s_call_p50_ms" % name] = round(percentile(times, 50), 3)
            figures["%s_call_p99_ms" % name] = round(percentile(times, 99), 3)
        figures["tls_added_p50_ms"] = round(figures["tls_call_p50_ms"] - figures["local_call_p50_ms"], 3)
        figures["ssh_added_p50_ms"] = round(figures["ssh_call_p50_ms"] - figures["local_call_p50_ms"], 3)
        for name, target, mib in (("local", local, TLS_MIB), ("tls", rvault, TLS_MIB),
                                  ("ssh", "b-vault-ssh", SSH_MIB)):
            rc, out, err = a.w.run(work, "python3 /tmp/streamer.py %s %d" % (target, mib), check=False,
                                   timeout=900)
            if rc != 0:
                raise RuntimeError("%s stream: %s" % (name, err))
            figures["%s_throughput_mb_s" % name] = round(mib * 1.048576 / float(out), 1)
        figures["calls_per_target"] = CALLS
        figures["tls_stream_mib"] = TLS_MIB
        figures["ssh_stream_mib"] = SSH_MIB
    finally:
        problems = a.w.stop_everything() + b.w.stop_everything() + a.w.verify_clean() + b.w.verify_clean()
        net.close()
        if problems:
            print("bench_air: cleanup: %s" % problems, file=sys.stderr)
    os.makedirs(os.path.join(build, "bench"), exist_ok=True)
    with open(os.path.join(build, "bench", "air.json"), "w") as f:
        json.dump(figures, f, indent=2)
    print(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
