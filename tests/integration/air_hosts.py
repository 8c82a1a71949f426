"""Hosts for Qubes Air tests, the bench and the demo: each host a network
namespace (`ip netns`) of its own, joined to the others by a veth pair,
running its own aeried (listening for peer zones with --air-listen), policy
daemon, template, qubes and a relay. Pairing goes through `qvm-air export` /
`qvm-air pair` as an admin would do it."""

import os
import subprocess
import tempfile
import unittest

from aerie_world import ECHO_SERVICE, PREFIX, World

AIR_PORT = 7443
NET = "10.%d.%d" % (77 + os.getpid() % 100, os.getpid() // 100 % 200)  # a /24 per run

# Services the tests install in every host's template.
SINK_SERVICE = """#!/bin/sh
# Reads everything, answers its size and SHA-256.
sha256sum | cut -d' ' -f1
"""
EXIT_SERVICE = """#!/bin/sh
# Exits with the code given as argument.
cat >/dev/null
exit "${QREXEC_SERVICE_ARGUMENT:-0}"
"""
NULL_SERVICE = """#!/bin/sh
# Reads everything and keeps nothing (throughput without a checksum's cost).
exec cat >/dev/null
"""
SERVICES = {"test.Echo": ECHO_SERVICE, "test.Sink": SINK_SERVICE, "test.Exit": EXIT_SERVICE,
            "test.Null": NULL_SERVICE}


def ip(*args, check=True):
    return subprocess.run(["ip"] + list(args), capture_output=True, text=True, check=check)


class Network:
    """Two or three namespaces; every pair joined by a veth pair of its own
    (a full mesh), host i reachable at NET.(i+1) through it."""

    def __init__(self, letters):
        self.tag = "%d" % (os.getpid() % 100000)
        self.names = {x: "aerie-%s-%s" % (self.tag, x) for x in letters}
        self.links = []  # (namespace, device) of each end
        for name in self.names.values():
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        letters = list(letters)
        for i, x in enumerate(letters):
            for y in letters[i + 1:]:
                a, b = "ae%s%s%s" % (self.tag, x, y), "ae%s%s%s" % (self.tag, y, x)
                ip("link", "add", a, "type", "veth", "peer", "name", b)
                ip("link", "set", a, "netns", self.names[x])
                ip("link", "set", b, "netns", self.names[y])
                self.links += [(self.names[x], a), (self.names[y], b)]
        # One address per host on every one of its links (point-to-point routes).
        self.address = {x: "%s.%d" % (NET, i + 1) for i, x in enumerate(letters)}
        for i, x in enumerate(letters):
            for y in letters:
                if x == y:
                    continue
                dev = "ae%s%s%s" % (self.tag, x, y)
                ip("-n", self.names[x], "addr", "add", self.address[x] + "/32", "dev", dev)
                ip("-n", self.names[x], "link", "set", dev, "up")
                ip("-n", self.names[x], "route", "add", self.address[y] + "/32", "dev", dev)

    def cut(self, up=False):
        """Every link down (or up again)."""
        for ns, dev in self.links:
            ip("-n", ns, "link", "set", dev, "up" if up else "down")
        if up:
            for x, name in self.names.items():
                for y, addr in self.address.items():
                    if x != y:
                        ip("-n", name, "route", "replace", addr + "/32", "dev", "ae%s%s%s" % (self.tag, x, y),
                           check=False)

    def close(self):
        for name in self.names.values():
            ip("netns", "del", name, check=False)


class Host:
    """One host: a World in its namespace. Its qubes are named PREFIX+x+short
    (cgroup folders are shared by every host on the machine)."""

    def __init__(self, letter, network):
        self.letter = letter
        self.zone = letter
        self.network = network
        self.address = network.address[letter]
        self.w = World()
        self.w.netns = network.names[letter]
        # --rpc-dir: the Admin API as dom0 qrexec services, for the other
        # zone's dom0 (remote lifecycle) where this host's policy lets it.
        self.w.daemon_args = ["--air-listen", "%s:%d" % (self.address, AIR_PORT),
                              "--rpc-dir", os.path.join(self.w.root, "dom0-rpc")]
        self.tpl = self.q("tpl")
        self.relay = self.q("relay")

    def q(self, short):
        return "%s%s%s" % (PREFIX, self.letter, short)

    def build(self, appvms, services=SERVICES):
        """aeried, a template with the test services, the relay and `appvms`."""
        self.w.start_daemon()
        self.w.tool("qvm-template", "create-from-host", self.tpl)
        self.w.tool("qvm-start", self.tpl)
        for name, text in services.items():
            self.w.run(self.tpl, "mkdir -p /etc/qubes-rpc && cat > /etc/qubes-rpc/%s && chmod 755 /etc/qubes-rpc/%s"
                       % (name, name), user="root", input=text)
        self.w.tool("qvm-shutdown", "--wait", self.tpl)
        for short in ("relay",) + tuple(appvms):
            self.w.tool("qvm-create", "--template", self.tpl, "--label", "red", self.q(short))

    def export(self, qubes, transport="qubesair.TLSProxy"):
        """This zone's description, exporting `qubes` (short names)."""
        r = self.w.tool("qvm-air", "export", "--zone", self.zone, "--relay", self.relay,
                        "--address", "%s:%d" % (self.address, AIR_PORT), "--transport", transport, "--admin",
                        *[self.q(s) for s in qubes])
        return r.stdout

    def pair(self, zone_text):
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            f.write(zone_text)
        try:
            self.w.tool("qvm-air", "pair", "--relay", self.relay, f.name)
        finally:
            os.unlink(f.name)

    def remote(self, other, short):
        """The local name of `other`'s qube (pairing's default prefix)."""
        return "%s-%s" % (other.zone, other.q(short))

    def remote_admin(self, other):
        """How `other`'s dom0 is known here (it makes the remote lifecycle calls)."""
        return "%s-dom0" % other.zone


def pair_hosts(a, b, a_exports, b_exports, transport="qubesair.TLSProxy"):
    za = a.export(a_exports, transport)
    zb = b.export(b_exports, transport)
    a.pair(zb)
    b.pair(za)


class TwoHostsTest(unittest.TestCase):
    """Each test: hosts a and b on a network of their own; at the end every
    qube of both is shut down and nothing may be left on either."""

    def setUp(self):
        self.net = Network("ab")
        self.a = Host("a", self.net)
        self.b = Host("b", self.net)

    def tearDown(self):
        problems = []
        try:
            for host in (self.a, self.b):
                try:
                    problems += ["%s: %s" % (host.letter, p) for p in host.w.stop_everything()]
                except Exception as e:  # the other host is still stopped
                    problems.append("%s: stopping: %r" % (host.letter, e))
            for host in (self.a, self.b):
                problems += ["%s: %s" % (host.letter, p) for p in host.w.verify_clean()]
        finally:
            self.net.close()
        self.assertEqual(problems, [])
