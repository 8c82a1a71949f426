"""Pairing zones with qvm-air: two admin daemons from this build (two
"hosts", each with its own state), one exporting qubes, the other
registering them as RemoteVMs behind a relay: names (prefix or explicit),
relayvm, transport_rpc, remote_name, the relayvm- tag, the air-zone and
air-address features; listing; unpairing; refusals that change nothing.
Needs root (exit code 77 otherwise).
Run: python3 air_pairing_test.py BUILD_DIR"""

import json
import os
import sys

from aerie_world import PREFIX, World, WorldTest, run_tests


class AirPairingTest(WorldTest):

    def setUp(self):
        super().setUp()
        self.b = World()  # the other host

    def tearDown(self):
        try:
            self.b.stop_daemon()
        finally:
            self.b.force_clean()
        super().tearDown()

    def air(self, world, *args, check=True, input=None):
        return world.tool("qvm-air", *args, check=check, input=input)

    def test_pair_list_unpair(self):
        a, b = self.w, self.b
        a.start_daemon()
        b.start_daemon()
        relay = PREFIX + "relay"
        a.tool("qvm-create", "--class", "StandaloneVM", "--label", "purple", relay)
        for name, label in (("work", "blue"), ("vault", "black")):
            b.tool("qvm-create", "--class", "StandaloneVM", "--label", label, PREFIX + name)
        exported = self.air(b, "export", "--zone", "office", "--address", "10.0.0.2:7022",
                            PREFIX + "work", PREFIX + "vault").stdout
        zone = json.loads(exported)
        self.assertEqual(zone, {"zone": "office", "address": "10.0.0.2:7022", "transport": "qubesair.SSHProxy",
                                "qubes": [{"name": PREFIX + "work", "label": "blue"},
                                          {"name": PREFIX + "vault", "label": "black"}]})
        path = os.path.join(a.root, "office.json")
        with open(path, "w") as f:
            f.write(exported)
        # Exporting a qube that does not exist: refused, named.
        r = self.air(b, "export", "--zone", "office", "--address", "x", "nope", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("nope", r.stderr)

        self.air(a, "pair", "--relay", relay, path)
        work, vault = "office-" + PREFIX + "work", "office-" + PREFIX + "vault"
        listed = a.listed()
        for local, remote, label in ((work, PREFIX + "work", "blue"), (vault, PREFIX + "vault", "black")):
            self.assertEqual(listed[local]["class"], "RemoteVM")
            prop = lambda p: a.ok("admin.vm.property.Get", local, p).split(" ", 2)[2]  # noqa: E731
            self.assertEqual(prop("relayvm"), relay)
            self.assertEqual(prop("transport_rpc"), "qubesair.SSHProxy")
            self.assertEqual(prop("remote_name"), remote)
            self.assertEqual(prop("label"), label)
            self.assertEqual(a.ok("admin.vm.feature.Get", local, "air-zone"), "office")
            self.assertEqual(a.ok("admin.vm.feature.Get", local, "air-address"), "10.0.0.2:7022")
            self.assertIn("relayvm-" + relay, a.ok("admin.vm.tag.List", local).split())
        self.assertEqual(self.air(a, "list").stdout,
                         "office\n  %s -> %s (relay %s)\n  %s -> %s (relay %s)\n" % (
                             vault, PREFIX + "vault", relay, work, PREFIX + "work", relay))
        # Again: the names are taken; nothing changes.
        before = a.listed()
        r = self.air(a, "pair", "--relay", relay, path, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("exists already", r.stderr)
        self.assertEqual(a.listed(), before)
        # Explicit names: only those.
        self.air(a, "pair", "--relay", relay, "--name", PREFIX + "vault=" + PREFIX + "bvault", path)
        self.assertIn(PREFIX + "bvault", a.listed())
        r = self.air(a, "pair", "--relay", relay, "--name", "other=x", path, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("does not export other", r.stderr)
        # A broken zone file: refused with the reason, nothing made.
        bad = os.path.join(a.root, "bad.json")
        with open(bad, "w") as f:
            json.dump({"zone": "evil", "address": "x", "transport": "t",
                       "qubes": [{"name": "../etc", "label": "red"}]}, f)
        before = a.listed()
        r = self.air(a, "pair", "--relay", relay, bad, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("qubes[0]: name", r.stderr)
        self.assertEqual(a.listed(), before)
        r = self.air(a, "pair", "--relay", "no-such-relay", path, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no such relay qube", r.stderr)
        # Unpair: every RemoteVM of the zone goes, others stay.
        self.air(a, "unpair", "office")
        listed = a.listed()
        for local in (work, vault, PREFIX + "bvault"):
            self.assertNotIn(local, listed)
        self.assertIn(relay, listed)
        self.assertEqual(self.air(a, "list").stdout, "")
        r = self.air(a, "unpair", "office", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no zone office", r.stderr)


def main():
    return run_tests(sys.argv, ("qvm-air",))


if __name__ == "__main__":
    sys.exit(main())
