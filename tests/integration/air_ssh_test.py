"""The SSH transport of Qubes Air between two relay homes, without qubes:
aerie-air-relay from this build with AERIE_AIR_HOME, AERIE_AIR_QUBESDB,
AERIE_AIR_UPLINK and AERIE_AIR_QREXEC_CLIENT_VM pointing at folders of the
test (docs/air.md).

  relays      A and B: `keys init`, `keys show` -> zone files, `keys trust`
              crosswise.
  uplinks     a fake host per side: answers `connect <zone>` with a TCP
              socket to the other side's acceptor (counted); the acceptor
              reads the preamble and runs `sshd -i -e -f sshd_config` on the
              socket, as the relay's serve daemon does.
  calls       `ssh-proxy LOCAL+SVC` on A (QREXEC_REMOTE_DOMAIN set) reaches
              B's stand-in qrexec-client-vm with --source-qube=<B's RemoteVM
              for the caller>, the target and the service, with stdin and
              the exit code back; a second call rides the ControlMaster (no
              new connection); a source A does not export, a wrong host key,
              a forgotten client key and a peer that is down are refused.
sshd runs as root here (a forced command needs a login shell; root's is
one), so the test's copy of sshd_config says PermitRootLogin
forced-commands-only. Needs root (exit code 77 otherwise).
Run: python3 air_ssh_test.py BUILD_DIR"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

BUILD = None

CLIENT_VM = """#!/bin/sh
# Stand-in for qrexec-client-vm: says how it was called, echoes stdin;
# the service test.Exit+N exits with N.
echo "$*" >> "%(log)s"
echo "client-vm: $*"
cat
case "$3" in test.Exit+*) exit "${3#test.Exit+}" ;; esac
"""

WRAPPER = """#!/bin/sh
# aerie-air-relay of relay %(zone)s: its folders, also for the commands sshd
# and ssh start (the forced command, ProxyCommand).
export AERIE_AIR_HOME="%(home)s" AERIE_AIR_QUBESDB="%(qubesdb)s" AERIE_AIR_UPLINK="%(uplink)s"
export AERIE_AIR_QREXEC_CLIENT_VM="%(client_vm)s" AERIE_AIR_RELAY_PROGRAM="%(wrapper)s" AERIE_AIR_SSH_USER=root
exec "%(relay)s" "$@"
"""


class Side:
    """One relay: its home, QubesDB, fake uplink and acceptor."""

    def __init__(self, root, zone):
        self.zone = zone
        self.dir = os.path.join(root, zone)
        self.home = os.path.join(self.dir, "home")
        self.qubesdb = os.path.join(self.dir, "qubesdb")
        self.uplink = os.path.join(self.dir, "uplink.sock")
        self.client_vm = os.path.join(self.dir, "qrexec-client-vm")
        self.calls_log = os.path.join(self.dir, "calls.log")
        self.wrapper = os.path.join(self.dir, "relay")
        os.makedirs(self.qubesdb)
        self.sshd_log = open(os.path.join(self.dir, "sshd.log"), "ab")
        write(self.client_vm, CLIENT_VM % {"log": self.calls_log}, 0o755)
        write(self.wrapper, WRAPPER % {"zone": zone, "home": self.home, "qubesdb": self.qubesdb,
                                       "uplink": self.uplink, "client_vm": self.client_vm, "wrapper": self.wrapper,
                                       "relay": os.path.join(BUILD, "bin", "aerie-air-relay")}, 0o755)
        self.peer = None
        self.connects = 0   # connections the uplink made
        self.sshds = []
        self.acceptor = socket.socket()
        self.acceptor.bind(("127.0.0.1", 0))
        self.acceptor.listen(8)
        self.port = self.acceptor.getsockname()[1]
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.uplink)
        self.listener.listen(8)
        for loop in (self.serve_uplink, self.serve_acceptor):
            threading.Thread(target=loop, daemon=True).start()

    def relay(self, *args, input=None, env=None, check=True):
        r = subprocess.run([self.wrapper] + list(args), input=input, capture_output=True, timeout=60,
                           env=dict(os.environ, **(env or {})))
        if check and r.returncode != 0:
            raise AssertionError("%s relay %s: exit %d: %s" % (self.zone, args, r.returncode, r.stderr.decode()))
        return r

    def remote(self, local, remote_name, zone):
        write(os.path.join(self.qubesdb, "remote", local), remote_name)
        write(os.path.join(self.qubesdb, "air-zone", local), zone)

    def zone_file(self, names):
        zone = {"zone": self.zone, "address": "127.0.0.1:%d" % self.port, "transport": "qubesair.SSHProxy",
                "qubes": [{"name": n, "label": "red"} for n in names]}
        zone.update(json.loads(self.relay("keys", "show").stdout))
        return json.dumps(zone).encode()

    def calls(self):
        try:
            with open(self.calls_log) as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    # --- the fake host ---------------------------------------------------------------------------

    def serve_uplink(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                line = conn.recv(512).decode()
                words = line.split()
                if len(words) == 2 and words[0] == "connect" and self.peer and words[1] == self.peer.zone:
                    try:
                        out = socket.create_connection(("127.0.0.1", self.peer.port), timeout=5)
                    except OSError as e:
                        conn.sendall(("error %s\n" % e.strerror.lower()).encode())
                        continue
                    self.connects += 1
                    with out:
                        socket.send_fds(conn, [b"ok\n"], [out.fileno()])
                else:
                    conn.sendall(b"error no relay route to zone %s\n" % (words[1:] or ["?"])[0].encode())

    def serve_acceptor(self):
        while True:
            try:
                conn, _ = self.acceptor.accept()
            except OSError:
                return
            with conn:
                preamble = b""
                while not preamble.endswith(b"\n") and len(preamble) < 128:
                    byte = conn.recv(1)
                    if not byte:
                        break
                    preamble += byte
                if preamble != b"aerie-air/1 %s ssh\n" % self.peer.zone.encode():
                    continue
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as the serve daemon does
                self.sshds.append(subprocess.Popen(
                    ["/usr/sbin/sshd", "-i", "-e", "-f", os.path.join(self.home, "ssh", "sshd_config.test")],
                    stdin=conn, stdout=conn, stderr=self.sshd_log, start_new_session=True))

    def down(self):
        """The peer's host gone: no more connections, none left."""
        close_listener(self.acceptor)
        for p in self.sshds:  # with its privilege-separated session process
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            p.wait(10)

    def close(self):
        self.down()
        close_listener(self.listener)
        run_dir = os.path.join(self.home, "run")
        for name in os.listdir(run_dir) if os.path.isdir(run_dir) else []:
            if name.startswith("ssh-"):  # a ControlMaster
                subprocess.run(["ssh", "-F", "none", "-o", "ControlPath=" + os.path.join(run_dir, name),
                                "-O", "exit", "x"], capture_output=True, timeout=10)
        self.sshd_log.close()


def close_listener(sock):
    """Closed for real: shutdown() wakes the thread blocked in accept(),
    which would otherwise keep the socket listening."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


class AirSshTest(unittest.TestCase):

    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="air-ssh-")
        self.addCleanup(shutil.rmtree, self.root, True)
        self.a = Side(self.root, "a")
        self.addCleanup(self.a.close)
        self.b = Side(self.root, "b")
        self.addCleanup(self.b.close)
        a, b = self.a, self.b
        a.peer, b.peer = b, a
        a.relay("keys", "init", "a", "work")
        b.relay("keys", "init", "b", "vault", "mail")
        for side in (a, b):
            config = os.path.join(side.home, "ssh", "sshd_config")
            with open(config) as f:
                text = f.read()
            self.assertIn("\nPermitRootLogin no\n", text)
            write(config + ".test", text.replace("\nPermitRootLogin no\n", "\nPermitRootLogin forced-commands-only\n"))
        b.relay("keys", "trust", input=a.zone_file(["work"]))
        a.relay("keys", "trust", input=b.zone_file(["vault", "mail"]))
        # RemoteVMs: A's b-vault is B's vault; B's a-work is A's work.
        a.remote("b-vault", "vault", "b")
        b.remote("a-work", "work", "a")
        b.remote("a-mail", "mail", "a")  # A does not export it
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation (as root)

    def call(self, argument, source="work", data=b"", side=None):
        side = side or self.a
        return side.relay("ssh-proxy", argument, input=data, env={"QREXEC_REMOTE_DOMAIN": source}, check=False)

    def test_call_and_reuse(self):
        t0 = time.monotonic()
        r = self.call("b-vault+test.Exit+5", data=b"hello\nworld\n")
        cold = time.monotonic() - t0
        self.assertEqual(r.stdout, b"client-vm: --source-qube=a-work vault test.Exit+5\nhello\nworld\n",
                         r.stderr)
        self.assertEqual(r.returncode, 5)
        self.assertEqual(r.stderr, b"")
        self.assertEqual(self.a.connects, 1)
        # Again: the ControlMaster carries it, no new connection.
        warm = []
        for i in range(5):
            t0 = time.monotonic()
            r = self.call("b-vault+test.Echo+%d" % i, data=b"x" * 100000)
            warm.append(time.monotonic() - t0)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, b"client-vm: --source-qube=a-work vault test.Echo+%d\n" % i + b"x" * 100000)
        self.assertEqual(self.a.connects, 1)
        self.assertEqual(len(self.b.calls()), 6)
        print("\n  cold call %.0f ms, warm calls %s ms" % (cold * 1000, " ".join("%.0f" % (w * 1000) for w in warm)),
              file=sys.stderr)
        # The other way: B's vault calls A's work.
        r = self.call("a-work+test.Echo", source="vault", side=self.b)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"client-vm: --source-qube=b-vault work test.Echo\n")

    def test_refusals(self):
        # A qube A does not export: B refuses, says why, runs nothing.
        r = self.call("b-vault+test.Echo", source="mail")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, b"aerie-air: zone a does not export mail\n")
        self.assertEqual(self.b.calls(), [])
        # Refused by A itself: not relayed, not a service, no caller.
        for argument, source, why in (("b-mail+test.Echo", "work", "b-mail is not relayed here"),
                                      ("b-vault+a/b", "work", "service name with a character qrexec refuses"),
                                      ("b-vault+test.Echo", "", "QREXEC_REMOTE_DOMAIN is not set")):
            r = self.call(argument, source=source)
            self.assertEqual((r.returncode, r.stderr.decode()), (1, "aerie-air: %s\n" % why))
        # A forced command with anything but three words.
        r = self.b.relay("ssh-incoming", "a", env={"SSH_ORIGINAL_COMMAND": "work vault"}, check=False)
        self.assertEqual((r.returncode, r.stderr), (1, b"aerie-air: the command is not SOURCE TARGET SERVICE\n"))
        r = self.b.relay("ssh-incoming", "a", env={"SSH_ORIGINAL_COMMAND": "work  vault svc"}, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(self.b.calls(), [])

    def test_unknown_host_key(self):
        # A pins another key for b: the connection is refused before any call.
        other = os.path.join(self.root, "other")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
        with open(other + ".pub") as f:
            write(os.path.join(self.a.home, "ssh", "known_hosts"), "b " + f.read())
        r = self.call("b-vault+test.Echo")
        self.assertEqual((r.returncode, r.stderr), (1, b"aerie-air: cannot reach zone b over ssh\n"))
        self.assertEqual(self.b.calls(), [])

    def test_forgotten_client_key(self):
        self.b.relay("keys", "forget", "a")
        with open(os.path.join(self.b.home, "ssh", "authorized_keys")) as f:
            self.assertEqual(f.read(), "")
        self.assertFalse(os.path.exists(os.path.join(self.b.home, "peers", "a")))
        r = self.call("b-vault+test.Echo")
        self.assertEqual((r.returncode, r.stderr), (1, b"aerie-air: cannot reach zone b over ssh\n"))
        self.assertEqual(self.b.calls(), [])

    def test_peer_down(self):
        self.assertEqual(self.call("b-vault+test.Echo").returncode, 0)
        self.b.down()
        # The ControlMaster sees its connection go; then nothing is there.
        deadline = time.monotonic() + 20
        while True:
            r = self.call("b-vault+test.Echo")
            if r.returncode != 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(r.returncode, 1)
        # With the host's reason (A's uplink could not connect).
        self.assertEqual(r.stderr, b"aerie-air: cannot reach zone b over ssh: connection refused\n")
        self.assertEqual(self.a.connects, 1)
        self.assertEqual(len(self.b.calls()), 1)

    def test_keys_are_idempotent_and_trust_replaces(self):
        a = self.a
        files = ["tls/key.pem", "tls/cert.pem", "ssh/id_ed25519", "ssh/host_ed25519", "ssh/authorized_keys"]

        def snapshot():
            out = {}
            for name in files:
                with open(os.path.join(a.home, name)) as f:
                    out[name] = f.read()
            return out
        before = snapshot()
        a.relay("keys", "init", "a", "work")
        self.assertEqual(snapshot(), before)
        # New names: a new certificate for the same key.
        a.relay("keys", "init", "a", "work", "mail")
        after = snapshot()
        self.assertNotEqual(after["tls/cert.pem"], before["tls/cert.pem"])
        self.assertEqual(after["tls/key.pem"], before["tls/key.pem"])
        self.assertEqual(os.stat(a.home).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(os.path.join(a.home, "tls", "key.pem")).st_mode & 0o777, 0o600)
        # Trusting b again replaces its line; one per zone.
        a.relay("keys", "trust", input=self.b.zone_file(["vault"]))
        with open(os.path.join(a.home, "ssh", "authorized_keys")) as f:
            lines = f.read().splitlines()
        self.assertEqual(len(lines), 1)
        self.assertTrue(lines[0].startswith('command="%s ssh-incoming b",restrict ssh-ed25519 ' % a.wrapper))
        with open(os.path.join(a.home, "peers", "b", "names")) as f:
            self.assertEqual(f.read(), "vault\n")
        with open(os.path.join(a.home, "ssh", "known_hosts")) as f:
            self.assertEqual(len(f.read().splitlines()), 1)
        # Refused: a zone file without keys, its own zone, someone else's ssh key.
        bare = json.dumps({"zone": "c", "address": "x", "transport": "t", "qubes": []}).encode()
        r = a.relay("keys", "trust", input=bare, check=False)
        self.assertEqual((r.returncode, r.stderr), (1, b"aerie-air: zone file of c has no keys (export it with --relay)\n"))
        own = json.loads(a.zone_file(["work"]))
        r = a.relay("keys", "trust", input=json.dumps(own).encode(), check=False)
        self.assertEqual((r.returncode, r.stderr), (1, b"aerie-air: a is this relay's own zone\n"))
        thief = json.loads(self.b.zone_file(["vault"]))
        thief["zone"] = "c"
        r = a.relay("keys", "trust", input=json.dumps(thief).encode(), check=False)
        self.assertEqual((r.returncode, r.stderr), (1, b"aerie-air: another zone here has the ssh key of c\n"))
        self.assertFalse(os.path.exists(os.path.join(a.home, "peers", "c")))


def main():
    global BUILD
    BUILD = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else os.environ.get("AERIE_BUILD_DIR", "build"))
    if os.geteuid() != 0:
        print("this test runs sshd -i as root (privilege separation); skipped")
        return 77
    for path in (os.path.join(BUILD, "bin", "aerie-air-relay"), "/usr/sbin/sshd", "/usr/bin/ssh"):
        if not os.access(path, os.X_OK):
            print("missing %s" % path)
            return 1
    result = unittest.main(exit=False, verbosity=2).result
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
