"""Qubes Air across hosts: two hosts, each its own network namespace with
its own aeried, policy, qubes and relay, paired with qvm-air; calls cross
through the relays over TLS 1.3 or SSH, and each host's policy decides its
own leg.

  allowed     A's work calls B's vault (as A's RemoteVM b-...vault): both
              policies allow; B's service sees the caller as a-...work; the
              service's exit code comes back.
  denied      by A's policy (B never hears of it), by B's policy (exit 126
              from B's qrexec, passed back), for each transport.
  impersonate A's relay claiming a source A did not export is refused by B's
              relay; B's relay claiming a local qube is refused by B.
  dispvm      a RemoteVM whose remote name is @dispvm:TPL: a disposable on B.
  stream      1 GiB across over TLS (256 MiB over SSH), SHA-256 compared.
  failures    the link cut mid-call (the call fails with a clear error, the
              next call after the link is back works), B's aeried killed and
              restarted, B's relay killed mid-stream; nothing left running.
  lifecycle   beyond Qubes: A's qvm-ls shows B's vault's power state; A's
              policy (autostart) starts it through B's Admin API, which B's
              policy allows A's dom0 (a-dom0); qvm-shutdown on A halts it;
              what B's policy does not allow is refused; A's autostart=no
              denies a call to the halted remote qube.
  ask         an ask rule on B for a remote source is denied with the reason.
Needs root (exit code 77 otherwise).
Run: python3 air_hosts_test.py BUILD_DIR"""

import hashlib
import os
import subprocess
import sys
import time

from aerie_world import bin_path, run_tests, wait_for
from air_hosts import TwoHostsTest, pair_hosts

# A deterministic pseudo-random stream of N MiB, made inside a qube.
STREAM = ("python3 -c \"import hashlib,sys\nb=hashlib.sha256(b'aerie').digest()*2048\n"
          "w=sys.stdout.buffer\nfor i in range(%d*16): w.write(b)\"")


def expected_digest(mib):
    block = hashlib.sha256(b"aerie").digest() * 2048  # 64 KiB
    h = hashlib.sha256()
    for _ in range(mib * 16):
        h.update(block)
    return h.hexdigest()


class AirHostsTest(TwoHostsTest):

    def make(self, transport="qubesair.TLSProxy", b_policy=None):
        a, b = self.a, self.b
        a.build(("work",))
        b.build(("vault", "dvm"))
        b.w.tool("qvm-prefs", b.q("dvm"), "template_for_dispvms", "True")
        pair_hosts(a, b, ("work",), ("vault",), transport)
        self.rvault = a.remote(b, "vault")
        self.rwork = b.remote(a, "work")
        a.w.start_policy_daemon("test.Echo * {w} {v} allow\ntest.Exit * {w} {v} allow\n"
                                "test.Sink * {w} {v} allow\ntest.Echo * {w} b-disp allow\n".format(
                                    w=a.q("work"), v=self.rvault))
        b.w.start_policy_daemon(b_policy or (
            "test.Echo * {w} {v} allow\ntest.Exit * {w} {v} allow\ntest.Sink * {w} {v} allow\n"
            "test.Echo * {w} @dispvm:{d} allow\n").format(w=self.rwork, v=b.q("vault"), d=b.q("dvm")))
        for host, qube in ((a, a.q("work")), (b, b.q("vault"))):
            host.w.tool("qvm-start", qube)

    def call(self, target, service, input="", check_rc=None, timeout=120):
        rc, out, err = self.a.w.run(self.a.q("work"), "qrexec-client-vm %s %s" % (target, service),
                                    input=input, check=False, timeout=timeout)
        if check_rc is not None:
            self.assertEqual(rc, check_rc, "rc %d, stderr %r\nA: %s\nB: %s" % (
                rc, err, self.a.w.log()[-1500:], self.b.w.log()[-1500:]))
        return rc, out, err

    def vault_calls(self):
        rc, out, _ = self.b.w.run(self.b.q("vault"), "cat /tmp/test.Echo.calls 2>/dev/null; true")
        return out.split()

    def both_sides_decide(self):
        a, b = self.a, self.b
        # Allowed on both sides.
        _, out, _ = self.call(self.rvault, "test.Echo+hello", input="over the air\n", check_rc=0)
        self.assertEqual(out.splitlines(), ["test.Echo in %s for %s arg=hello" % (b.q("vault"), self.rwork),
                                            "over the air"])
        # The remote service's exit code comes back.
        self.call(self.rvault, "test.Exit+3", check_rc=3)
        # Denied by A: the relay never carries it.
        self.call(self.rvault, "test.Other", check_rc=126)
        # Denied by B.
        b.w.write_policy("test.Echo * %s %s deny\n" % (self.rwork, b.q("vault")))
        rc, out, _ = self.call(self.rvault, "test.Echo+denied", check_rc=126)
        self.assertNotIn("test.Echo in", out)
        self.assertEqual(self.vault_calls(), [self.rwork])

    def impersonation_refused(self, service):
        a, b = self.a, self.b
        b.w.write_policy("test.Echo * @anyvm %s allow\n" % b.q("vault"))
        # A's relay claims a source A never exported.
        rc, out, err = a.w.run(a.relay, "QREXEC_REMOTE_DOMAIN=ghost QREXEC_SERVICE_ARGUMENT=%s+test.Echo "
                                        "/run/aerie/bin/qubes-rpc/%s </dev/null" % (self.rvault, service),
                               check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn("aerie-air:", err)
        self.assertNotIn("test.Echo in", out)
        # B's relay claims a qube of its own host.
        rc, out, _ = b.w.run(b.relay, "qrexec-client-vm --source-qube=%s %s test.Echo </dev/null" % (
            b.q("dvm"), b.q("vault")), check=False)
        self.assertEqual(rc, 126)
        self.assertEqual(self.vault_calls(), [self.rwork])

    def test_01_tls_both_policies_decide(self):
        self.make()
        self.both_sides_decide()
        self.impersonation_refused("qubesair.TLSProxy")

    def test_02_ssh_both_policies_decide(self):
        self.make(transport="qubesair.SSHProxy")
        self.both_sides_decide()
        self.impersonation_refused("qubesair.SSHProxy")

    def test_03_remote_dispvm(self):
        self.make()
        a, b = self.a, self.b
        a.w.tool("qvm-create", "--class", "RemoteVM", "--label", "red", "b-disp")
        for prop, value in (("relayvm", a.relay), ("transport_rpc", "qubesair.TLSProxy"),
                            ("remote_name", "@dispvm:" + b.q("dvm"))):
            a.w.tool("qvm-prefs", "b-disp", prop, value)
        address = a.w.tool("qvm-features", self.rvault, "air-address").stdout.strip()
        a.w.tool("qvm-features", "b-disp", "air-zone", "b")
        a.w.tool("qvm-features", "b-disp", "air-address", address)
        _, out, _ = self.call("b-disp", "test.Echo+d", input="x\n", check_rc=0)
        self.assertRegex(out.splitlines()[0], r"^test\.Echo in disp[0-9]+ for %s arg=d$" % self.rwork)
        # The disposable is gone afterwards.
        wait_for(lambda: not [q for q in b.w.listed() if q.startswith("disp")], 20, "the disposable to go")

    def stream_through(self, mib, target=None):
        cmd = STREAM % mib + " | qrexec-client-vm %s test.Sink" % (target or self.rvault)
        start = time.monotonic()
        rc, out, err = self.a.w.run(self.a.q("work"), cmd, check=False, timeout=600)
        took = time.monotonic() - start
        self.assertEqual(rc, 0, err)
        self.assertEqual(out.strip(), expected_digest(mib))
        print("  %d MiB in %.1f s: %.0f MB/s" % (mib, took, mib * 1.048576 / took), file=sys.stderr)

    def test_04_one_gib_across(self):
        self.make()
        self.stream_through(1024)
        # And over SSH, through a RemoteVM of its own for the same qube.
        a = self.a
        a.w.tool("qvm-create", "--class", "RemoteVM", "--label", "red", "b-vault-ssh")
        for prop, value in (("relayvm", a.relay), ("transport_rpc", "qubesair.SSHProxy"),
                            ("remote_name", self.b.q("vault"))):
            a.w.tool("qvm-prefs", "b-vault-ssh", prop, value)
        for feature in ("air-zone", "air-address"):
            a.w.tool("qvm-features", "b-vault-ssh", feature,
                     a.w.tool("qvm-features", self.rvault, feature).stdout.strip())
        a.w.write_policy("test.Sink * %s b-vault-ssh allow\n" % a.q("work"))
        self.stream_through(256, "b-vault-ssh")

    def relay_processes(self, host):
        _, out, _ = host.w.run(host.relay, "ps -eo args | grep -E 'qrexec-client-vm|tls-proxy|ssh-proxy' "
                                           "| grep -v grep; true")
        return out.split("\n")[:-1]

    def endless_call(self):
        """A call streaming zeros to B until it fails."""
        return subprocess.Popen(
            [bin_path("qvm-run"), "-p", "--no-filter-escape-chars", self.a.q("work"),
             "cat /dev/zero | qrexec-client-vm %s test.Sink" % self.rvault],
            env=self.a.w.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def test_05_failures_then_recovery(self):
        self.make()
        a, b = self.a, self.b
        self.call(self.rvault, "test.Echo+warm", check_rc=0)
        # The link cut mid-call.
        call = self.endless_call()
        time.sleep(1.0)
        self.net.cut()
        try:
            out, err = call.communicate(timeout=60)
        finally:
            self.net.cut(up=True)
        self.assertNotEqual(call.returncode, 0)
        self.assertIn("aerie-air:", err)
        # The next call works.
        self.call(self.rvault, "test.Echo+after-cut", check_rc=0)
        # B's aeried killed and started again.
        b.w.stop_daemon(sig=9)
        b.w.start_daemon()
        self.call(self.rvault, "test.Echo+after-restart", check_rc=0)
        # B's relay killed mid-stream: the call fails, the next one starts it again.
        call = self.endless_call()
        time.sleep(1.0)
        b.w.tool("qvm-kill", b.relay)
        out, err = call.communicate(timeout=60)
        self.assertNotEqual(call.returncode, 0)
        self.assertIn("aerie-air:", err)
        self.call(self.rvault, "test.Echo+after-relay-kill", check_rc=0)
        # Nothing of the failed calls is left in either relay.
        wait_for(lambda: self.relay_processes(a) == [] and self.relay_processes(b) == [], 20,
                 "the relays' call processes to end")


    def test_06_remote_lifecycle_and_ask(self):
        a, b = self.a, self.b
        admin_rules = "".join("admin.vm.%s * {ad} {v} allow target=dom0\n" % m
                              for m in ("CurrentState", "Start", "Shutdown"))
        self.make(b_policy=(admin_rules + "test.Echo * {w} {v} allow autostart=no\n").format(
            ad=b.remote_admin(a), w=b.remote(a, "work"), v=b.q("vault")))
        rvault, vault = self.rvault, b.q("vault")
        b.w.tool("qvm-shutdown", "--wait", vault)  # A's relay runs since qvm-air export
        # The remote qube's power state, as qvm-ls on A shows it.
        state = lambda: a.w.qvm_ls_states().get(rvault)
        wait_for(lambda: state() == "Halted", 30, "A to see B's vault halted")
        # B's own rule does not autostart; A's (autostart by default) starts
        # it through B's Admin API, which B's policy allows A's dom0.
        _, out, _ = self.call(rvault, "test.Echo+started", check_rc=0)
        self.assertIn("test.Echo in %s" % vault, out)
        self.assertEqual(b.w.current_state(vault)["power_state"], "Running")
        wait_for(lambda: state() == "Running", 20, "A to see it running")
        # Lifecycle from A: qvm-shutdown of the RemoteVM halts the qube on B.
        a.w.tool("qvm-shutdown", "--wait", rvault)
        wait_for(lambda: b.w.current_state(vault)["power_state"] == "Halted", 30, "B's vault to halt")
        # A's policy without autostart: A's own policy engine sees the remote
        # qube halted and denies; B's vault stays halted.
        wait_for(lambda: state() == "Halted", 30, "A to see it halted")
        a.w.write_policy("test.Echo * %s %s allow autostart=no\n" % (a.q("work"), rvault))
        self.call(rvault, "test.Echo+not-started", check_rc=126)
        self.assertEqual(b.w.current_state(vault)["power_state"], "Halted")
        with open(os.path.join(a.w.root, "policy-daemon.log")) as f:
            self.assertIn("denied because it would require autostart", f.read())
        # What B's policy does not allow A's dom0 is refused, with B's error.
        b.w.write_policy("test.Echo * %s %s allow\n" % (self.rwork, vault))
        r = a.w.tool("qvm-start", rvault, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(rvault, r.stderr)
        # An ask for a remote source: no prompt on B answers for zone A.
        b.w.write_policy("test.Echo * %s %s ask\n" % (self.rwork, vault))
        b.w.tool("qvm-start", vault)
        a.w.write_policy("test.Echo * %s %s allow\n" % (a.q("work"), rvault))
        self.call(rvault, "test.Echo+asked", check_rc=126)
        def b_policy_log():
            with open(os.path.join(b.w.root, "policy-daemon.log")) as f:
                return f.read()
        wait_for(lambda: "no prompt answers for another zone's qubes" in b_policy_log(), 10,
                 "B's policy daemon to give the reason")


def main():
    return run_tests(sys.argv, more=("qvm-air", "qvm-features", "aerie-air-relay"))


if __name__ == "__main__":
    sys.exit(main())
