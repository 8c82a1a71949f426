"""Qubes Air on one host: RemoteVMs, their relays and both legs of a call,
with real qubes (aeried from this build, the ns backend, qrexec).

  relay map    a RemoteVM gets the tag relayvm-<relay> (only that one), and
               the relay finds /remote/<local name> = <remote name> in its
               QubesDB (/run/qubes-db inside): written before it starts,
               rewritten when relayvm, remote_name or the name change, when a
               relay is renamed, when a RemoteVM is removed.
  remote vm    power state Running; start, shutdown and kill refused with
               Qubes' errors.
  outgoing     a call to a RemoteVM allowed by the local policy goes to its
               relay's transport service with the argument REMOTE+SVC+ARG and
               the caller as QREXEC_REMOTE_DOMAIN; denied, the relay sees
               nothing.
  incoming     the relay's qrexec-client-vm --source-qube=R: accepted only for
               a RemoteVM R that it relays for, then decided with R as the
               source (the service sees QREXEC_REMOTE_DOMAIN=R); a qube
               claiming a source it does not relay for is refused.
  chaining     a remote source calling @dispvm:TPL gets a disposable; one
               calling a RemoteVM behind another relay goes on to that
               relay's transport; back through its own relay is refused
               (loopback).
Needs root (exit code 77 otherwise).
Run: python3 air_test.py BUILD_DIR"""

import sys

from aerie_world import ECHO_SERVICE, PREFIX, WorldTest, run_tests, wait_for

TRANSPORT = """#!/bin/sh
# A stand-in transport: says what it was asked to carry.
echo "transport in $(hostname): arg=$QREXEC_SERVICE_ARGUMENT from=$QREXEC_REMOTE_DOMAIN"
echo "mapped: $(cat /run/qubes-db/remote/${QREXEC_SERVICE_ARGUMENT%%+*} 2>/dev/null)"
cat
"""


class AirTest(WorldTest):

    def setUp(self):
        super().setUp()
        self.relay = PREFIX + "relay"
        self.remote = PREFIX + "rvault"

    def make_air(self):
        self.make_world(appvms=("work", "relay"))
        self.w.tool("qvm-create", "--class", "RemoteVM", "--label", "red", self.remote)
        self.w.tool("qvm-prefs", self.remote, "relayvm", self.relay)
        self.w.tool("qvm-prefs", self.remote, "transport_rpc", "qubesair.Test")

    def tags(self, qube):
        return set(self.w.ok("admin.vm.tag.List", qube).split())

    def mapping(self, relay=None):
        rc, out, _ = self.w.run(relay or self.relay, "cd /run/qubes-db/remote 2>/dev/null && "
                                                     "for f in *; do [ -e \"$f\" ] && echo \"$f=$(cat $f)\"; done; true")
        return dict(line.split("=", 1) for line in out.split())

    def relay_tags(self, qube):
        return {t for t in self.tags(qube) if t.startswith("relayvm-")}

    def test_01_tags_and_mapping_follow_every_change(self):
        self.make_air()
        self.assertEqual(self.relay_tags(self.remote), {"relayvm-" + self.relay})
        self.w.tool("qvm-start", self.relay)
        self.assertEqual(self.mapping(), {self.remote: self.remote})
        # Read-only inside.
        rc, _, _ = self.w.run(self.relay, "echo x > /run/qubes-db/remote/evil", user="root", check=False)
        self.assertNotEqual(rc, 0)
        self.w.tool("qvm-prefs", self.remote, "remote_name", "vault")
        wait_for(lambda: self.mapping() == {self.remote: "vault"}, 10, "remote_name in the mapping")
        # A second RemoteVM, then a rename of the first.
        other = PREFIX + "rmail"
        self.w.tool("qvm-create", "--class", "RemoteVM", "--label", "red", other)
        self.w.tool("qvm-prefs", other, "relayvm", self.relay)
        wait_for(lambda: self.mapping() == {self.remote: "vault", other: other}, 10, "a second remote")
        renamed = PREFIX + "rvault2"
        self.w.tool("qvm-prefs", self.remote, "name", renamed)
        wait_for(lambda: self.mapping() == {renamed: "vault", other: other}, 10, "the renamed remote")
        # Another relay: the tag moves, the old relay forgets it.
        relay2 = PREFIX + "relay2"
        self.w.tool("qvm-create", "--template", self.tpl, "--label", "red", relay2)
        self.w.tool("qvm-start", relay2)
        self.w.tool("qvm-prefs", renamed, "relayvm", relay2)
        self.assertEqual(self.relay_tags(renamed), {"relayvm-" + relay2})
        wait_for(lambda: self.mapping() == {other: other}, 10, "the old relay forgetting it")
        self.assertEqual(self.mapping(relay2), {renamed: "vault"})
        # No relay: no tag.
        self.w.ok("admin.vm.property.Reset", other, "relayvm")
        wait_for(lambda: self.relay_tags(other) == set(), 10, "the tag to go")
        wait_for(lambda: self.mapping() == {}, 10, "an empty mapping")
        # A relay renamed: the tags of its remotes follow.
        self.w.tool("qvm-shutdown", "--wait", relay2)
        relay3 = PREFIX + "relay3"
        self.w.tool("qvm-prefs", relay2, "name", relay3)
        wait_for(lambda: self.relay_tags(renamed) == {"relayvm-" + relay3}, 10, "the tag of the renamed relay")
        # Removed: gone from the map of a relay that starts later.
        self.w.tool("qvm-remove", "-f", renamed)
        self.w.tool("qvm-start", relay3)
        self.assertEqual(self.mapping(relay3), {})

    def test_02_remote_vm_power(self):
        self.make_air()
        self.assertEqual(self.w.listed()[self.remote]["state"], "Running")
        self.assertEqual(self.w.current_state(self.remote)["power_state"], "Running")
        for method in ("admin.vm.Start", "admin.vm.Shutdown", "admin.vm.Kill"):
            reply = self.w.call(method, self.remote)
            self.assertTrue(reply.startswith(b"2\0"), (method, reply))

    def test_03_outgoing_call_goes_to_the_relay_transport(self):
        self.make_air()
        self.w.tool("qvm-start", self.tpl)
        self.w.run(self.tpl, "mkdir -p /etc/qubes-rpc && cat > /etc/qubes-rpc/qubesair.Test && "
                             "chmod 755 /etc/qubes-rpc/qubesair.Test", user="root", input=TRANSPORT)
        self.w.tool("qvm-shutdown", "--wait", self.tpl)
        self.w.tool("qvm-prefs", self.remote, "remote_name", "vault")
        self.w.start_policy_daemon("test.Echo * %s %s allow\n"
                                   "qubesair.Test * %s %s allow\n" % (self.work, self.remote, self.work, self.relay))
        self.w.tool("qvm-start", self.work)
        self.w.tool("qvm-start", self.relay)
        rc, out, err = self.w.run(self.work, "qrexec-client-vm %s test.Echo+hello" % self.remote, input="data\n",
                                  check=False)
        self.assertEqual(rc, 0, err + self.w.log())
        self.assertEqual(out.splitlines(), [
            "transport in %s: arg=%s+test.Echo+hello from=%s" % (self.relay, self.remote, self.work),
            "mapped: vault", "data"])
        # Denied locally: the relay is never asked.
        rc, out, _ = self.w.run(self.work, "qrexec-client-vm %s test.Other" % self.remote, check=False)
        self.assertEqual(rc, 126)
        self.assertNotIn("transport", out)

    def test_04_incoming_source_checks(self):
        self.make_air()
        self.w.tool("qvm-start", self.tpl)
        self.w.run(self.tpl, "mkdir -p /etc/qubes-rpc && cat > /etc/qubes-rpc/test.Echo && "
                             "chmod 755 /etc/qubes-rpc/test.Echo", user="root", input=ECHO_SERVICE)
        self.w.tool("qvm-shutdown", "--wait", self.tpl)
        other = PREFIX + "rother"
        self.w.tool("qvm-create", "--class", "RemoteVM", "--label", "red", other)  # relayed by no one
        self.w.start_policy_daemon("test.Echo * %s %s allow\n"
                                   "test.Echo * %s %s allow\n"
                                   "test.Echo * @anyvm @anyvm deny\n" % (self.remote, self.work, other, self.work))
        for q in (self.work, self.relay):
            self.w.tool("qvm-start", q)
        # The relay speaks for its remote qube: allowed, seen as that qube.
        rc, out, err = self.w.run(self.relay, "qrexec-client-vm --source-qube=%s %s test.Echo+in" % (
            self.remote, self.work), input="x\n", check=False)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.splitlines()[0], "test.Echo in %s for %s arg=in" % (self.work, self.remote))
        # Without --source-qube the relay is itself, which the policy denies.
        rc, _, _ = self.w.run(self.relay, "qrexec-client-vm %s test.Echo+in" % self.work, check=False)
        self.assertEqual(rc, 126)
        # A source it does not relay for, a local qube, and a claim from a
        # qube that relays nothing: refused.
        for caller, claimed in ((self.relay, other), (self.relay, self.work), (self.work, self.remote)):
            rc, out, _ = self.w.run(caller, "qrexec-client-vm --source-qube=%s %s test.Echo+in </dev/null" % (
                claimed, self.work), check=False)
            self.assertEqual(rc, 126, "%s claiming %s" % (caller, claimed))
            self.assertNotIn("test.Echo in", out)
        calls = self.w.run(self.work, "cat /tmp/test.Echo.calls")[1].split()
        self.assertEqual(calls, [self.remote])

    def test_05_remote_to_dispvm_and_remote_to_remote(self):
        self.make_air()
        self.w.tool("qvm-start", self.tpl)
        for name, text in (("test.Echo", ECHO_SERVICE), ("qubesair.Test", TRANSPORT)):
            self.w.run(self.tpl, "mkdir -p /etc/qubes-rpc && cat > /etc/qubes-rpc/%s && chmod 755 /etc/qubes-rpc/%s"
                       % (name, name), user="root", input=text)
        self.w.tool("qvm-shutdown", "--wait", self.tpl)
        dvm, relay2, far, near = PREFIX + "dvm", PREFIX + "relay2", PREFIX + "rfar", PREFIX + "rnear"
        self.w.tool("qvm-create", "--template", self.tpl, "--label", "red", dvm)
        self.w.tool("qvm-prefs", dvm, "template_for_dispvms", "True")
        self.w.tool("qvm-create", "--template", self.tpl, "--label", "red", relay2)
        for remote, relay in ((far, relay2), (near, self.relay)):
            self.w.tool("qvm-create", "--class", "RemoteVM", "--label", "red", remote)
            self.w.tool("qvm-prefs", remote, "relayvm", relay)
            self.w.tool("qvm-prefs", remote, "transport_rpc", "qubesair.Test")
        self.w.start_policy_daemon("test.Echo * {r} @dispvm:{dvm} allow\n"
                                   "test.Echo * {r} {far} allow\n"
                                   "test.Echo * {r} {near} allow\n"
                                   "qubesair.Test * {r} {relay2} allow\n"
                                   "qubesair.Test * {r} {relay} allow\n".format(
                                       r=self.remote, dvm=dvm, far=far, near=near, relay2=relay2,
                                       relay=self.relay))
        self.w.tool("qvm-start", self.relay)
        self.w.tool("qvm-start", relay2)
        claim = "qrexec-client-vm --source-qube=%s " % self.remote
        # To a disposable on this host.
        rc, out, err = self.w.run(self.relay, claim + "@dispvm:%s test.Echo+d" % dvm, input="x\n", check=False)
        self.assertEqual(rc, 0, err + self.w.log())
        self.assertRegex(out.splitlines()[0], r"^test\.Echo in disp[0-9]+ for %s arg=d$" % self.remote)
        # On to a remote qube behind the other relay.
        rc, out, err = self.w.run(self.relay, claim + "%s test.Echo+chain" % far, input="y\n", check=False)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.splitlines()[0], "transport in %s: arg=%s+test.Echo+chain from=%s" % (
            relay2, far, self.remote))
        # Back out through the relay it came in by: refused.
        rc, out, _ = self.w.run(self.relay, claim + "%s test.Echo+loop </dev/null" % near, check=False)
        self.assertEqual(rc, 126)
        self.assertNotIn("transport", out)


def main():
    return run_tests(sys.argv)


if __name__ == "__main__":
    sys.exit(main())
