"""Pairing zones with qvm-air: two admin daemons from this build (two
"hosts", each with its own state and a relay qube that runs), one exporting
qubes with its relay's keys, the other registering them as RemoteVMs behind
its relay: names (prefix or explicit), relayvm, transport_rpc, remote_name,
the relayvm- tag, the air-zone and air-address features; the relay trusting
the zone's keys (`aerie-air-relay keys trust`) and forgetting them at
unpairing; listing; refusals that change nothing, also when the relay
refuses the keys. Needs root (exit code 77 otherwise).
Run: python3 air_pairing_test.py BUILD_DIR"""

import json
import os
import sys

from aerie_world import PREFIX, World, WorldTest, run_tests




def shape(world):
    """The qubes listed, without their power states (a paired RemoteVM's is
    the remote qube's as last read, which changes on its own)."""
    return {name: {k: v for k, v in row.items() if k != "state"} for name, row in world.listed().items()}

class AirPairingTest(WorldTest):

    def setUp(self):
        super().setUp()
        self.b = World()  # the other host

    def tearDown(self):
        b = self.b
        try:
            if b.daemon is not None and b.daemon.poll() is None:
                b.tool("qvm-shutdown", "--all", "--wait", check=False, timeout=120)
            b.stop_daemon()
        finally:
            b.force_clean()
        super().tearDown()

    def air(self, world, *args, check=True, input=None):
        return world.tool("qvm-air", *args, check=check, input=input)

    def relay_file(self, world, relay, path):
        """A file in the relay's ~/.aerie-air ("" when missing)."""
        _, out, _ = world.run(relay, "cat /home/user/.aerie-air/%s 2>/dev/null; true" % path)
        return out

    def test_pair_list_unpair(self):
        a, b = self.w, self.b
        self.make_world(appvms=("relay",))
        b.start_daemon()
        b.tool("qvm-template", "create-from-host", PREFIX + "btpl")
        relay, brelay = PREFIX + "relay", PREFIX + "brelay"
        b.tool("qvm-create", "--template", PREFIX + "btpl", "--label", "purple", brelay)
        for name, label in (("work", "blue"), ("vault", "black")):
            b.tool("qvm-create", "--class", "StandaloneVM", "--label", label, PREFIX + name)
        exported = self.air(b, "export", "--zone", "office", "--relay", brelay, "--address", "10.0.0.2:7022",
                            PREFIX + "work", PREFIX + "vault").stdout
        zone = json.loads(exported)
        keys = {k: zone.pop(k) for k in ("tls_cert", "ssh_key", "ssh_host_key")}
        self.assertEqual(zone, {"zone": "office", "address": "10.0.0.2:7022", "transport": "qubesair.TLSProxy",
                                "qubes": [{"name": PREFIX + "work", "label": "blue"},
                                          {"name": PREFIX + "vault", "label": "black"}]})
        # The relay (started for it) made its keys and keeps them.
        self.assertTrue(keys["tls_cert"].startswith("-----BEGIN CERTIFICATE-----\n"))
        self.assertEqual(keys["ssh_key"] + "\n", self.relay_file(b, brelay, "ssh/id_ed25519.pub"))
        self.assertEqual(keys["ssh_host_key"] + "\n", self.relay_file(b, brelay, "ssh/host_ed25519.pub"))
        self.assertEqual(self.relay_file(b, brelay, "names"), "%swork\n%svault\n" % (PREFIX, PREFIX))
        again = json.loads(self.air(b, "export", "--zone", "office", "--relay", brelay, "--address", "x",
                                    "--transport", "qubesair.SSHProxy", PREFIX + "work", PREFIX + "vault").stdout)
        self.assertEqual((again["transport"], again["ssh_key"], again["tls_cert"]),
                         ("qubesair.SSHProxy", keys["ssh_key"], keys["tls_cert"]))
        path = os.path.join(a.root, "office.json")
        with open(path, "w") as f:
            f.write(exported)
        # Exporting a qube that does not exist, or without a relay: refused, named.
        r = self.air(b, "export", "--zone", "office", "--relay", brelay, "--address", "x", "nope", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("nope", r.stderr)
        r = self.air(b, "export", "--zone", "office", "--address", "x", PREFIX + "work", check=False)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--relay", r.stderr)
        r = self.air(b, "export", "--zone", "office", "--relay", "nope", "--address", "x", PREFIX + "work",
                     check=False)
        self.assertEqual((r.returncode, r.stderr), (1, "qvm-air: error: no such relay qube: nope\n"))

        self.air(a, "pair", "--relay", relay, path)
        work, vault = "office-" + PREFIX + "work", "office-" + PREFIX + "vault"
        listed = a.listed()
        for local, remote, label in ((work, PREFIX + "work", "blue"), (vault, PREFIX + "vault", "black")):
            self.assertEqual(listed[local]["class"], "RemoteVM")
            prop = lambda p: a.ok("admin.vm.property.Get", local, p).split(" ", 2)[2]  # noqa: E731
            self.assertEqual(prop("relayvm"), relay)
            self.assertEqual(prop("transport_rpc"), "qubesair.TLSProxy")
            self.assertEqual(prop("remote_name"), remote)
            self.assertEqual(prop("label"), label)
            self.assertEqual(a.ok("admin.vm.feature.Get", local, "air-zone"), "office")
            self.assertEqual(a.ok("admin.vm.feature.Get", local, "air-address"), "10.0.0.2:7022")
            self.assertIn("relayvm-" + relay, a.ok("admin.vm.tag.List", local).split())
        self.assertEqual(self.air(a, "list").stdout,
                         "office\n  %s -> %s (relay %s)\n  %s -> %s (relay %s)\n" % (
                             vault, PREFIX + "vault", relay, work, PREFIX + "work", relay))
        # A's relay trusts the zone's keys and knows its names.
        self.assertEqual(self.relay_file(a, relay, "peers/office/cert.pem"), keys["tls_cert"])
        self.assertEqual(self.relay_file(a, relay, "peers/office/names"), "%swork\n%svault\n" % (PREFIX, PREFIX))
        self.assertEqual(self.relay_file(a, relay, "ssh/authorized_keys"),
                         'command="/run/aerie/bin/aerie-air-relay ssh-incoming office",restrict %s\n' % keys["ssh_key"])
        self.assertEqual(self.relay_file(a, relay, "ssh/known_hosts"), "office %s\n" % keys["ssh_host_key"])
        # Again: the names are taken; nothing changes.
        before = shape(a)
        r = self.air(a, "pair", "--relay", relay, path, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("exists already", r.stderr)
        self.assertEqual(shape(a), before)
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
        before = shape(a)
        r = self.air(a, "pair", "--relay", relay, bad, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("qubes[0]: name", r.stderr)
        self.assertEqual(shape(a), before)
        r = self.air(a, "pair", "--relay", "no-such-relay", path, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no such relay qube", r.stderr)
        # A zone file without keys (from before them): refused, nothing made.
        bare = os.path.join(a.root, "bare.json")
        with open(bare, "w") as f:
            json.dump(zone, f)
        r = self.air(a, "pair", "--relay", relay, "--prefix", "bare-", bare, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("has no keys", r.stderr)
        self.assertEqual(shape(a), before)
        # The relay refuses the keys (here: a zone of its own name): the
        # RemoteVMs just made are removed again.
        self.air(a, "export", "--zone", "home", "--relay", relay, "--address", "x", relay)
        own = dict(zone, zone="home", **keys)
        own_path = os.path.join(a.root, "home.json")
        with open(own_path, "w") as f:
            json.dump(own, f)
        r = self.air(a, "pair", "--relay", relay, own_path, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("home is this relay's own zone", r.stderr)
        self.assertEqual(shape(a), before)
        # Unpair: every RemoteVM of the zone goes, others stay.
        self.air(a, "unpair", "office")
        listed = a.listed()
        for local in (work, vault, PREFIX + "bvault"):
            self.assertNotIn(local, listed)
        self.assertIn(relay, listed)
        self.assertEqual(self.air(a, "list").stdout, "")
        self.assertEqual(self.relay_file(a, relay, "ssh/authorized_keys"), "")
        self.assertEqual(self.relay_file(a, relay, "ssh/known_hosts"), "")
        self.assertEqual(self.relay_file(a, relay, "peers/office/names"), "")
        r = self.air(a, "unpair", "office", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no zone office", r.stderr)


def main():
    return run_tests(sys.argv, ("qvm-air", "aerie-air-relay"))


if __name__ == "__main__":
    sys.exit(main())
