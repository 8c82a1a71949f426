"""The TLS transport of Qubes Air without qubes: two or three "relays" on this
host, each an `aerie-air-relay serve` with its own AERIE_AIR_HOME, a fake
QubesDB folder (AERIE_AIR_QUBESDB), a stand-in for qrexec-client-vm
(AERIE_AIR_QREXEC_CLIENT_VM) and a fake host uplink (AERIE_AIR_UPLINK): a
Python server per relay speaking docs/air.md's uplink protocol, whose
`connect` dials the other relay's Python acceptor over TCP, which reads the
preamble and hands the socket to that relay's listener (`accept ZONE tls`).

Checked: a call goes through (source, target, service, stdin, stdout, exit
code); the next calls reuse the connection, in either direction; refusals
(a source not exported, not in the certificate, a wrong pinned certificate
either way); 100 MiB each way with matching sha256 (MB/s printed); the peer
killed mid-stream fails the call plainly and, once it is back, the next call
works; the same for the caller's own daemon, which the next call starts
again; an SSH connection gets sshd -i; nothing is left running.
Run: python3 air_tls_test.py BUILD_DIR [TEST...]   (AIR_TLS_MIB=N: N MiB instead of 100)"""

import hashlib
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

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
RELAY = os.path.join(BUILD, "bin", "aerie-air-relay")
BLOB_SIZE = int(os.environ.get("AIR_TLS_MIB", "100")) * 1024 * 1024  # more for a longer benchmark

# Stand-in for qrexec-client-vm: "--source-qube=LOCAL TARGET SERVICE".
STAND_IN = """#!/bin/sh
case "$3" in
  test.Echo*) printf 'args: %s %s %s\\n' "$1" "$2" "$3"; cat; exit 7 ;;
  test.Sha256) openssl dgst -sha256 -r | cut -c1-64 ;;
  test.Blob) exec cat "$AIR_TEST_BLOB" ;;
  test.Null) exec cat > /dev/null ;;
  test.Env) echo "${QREXEC_REMOTE_DOMAIN:-unset}" ;;
  test.Slow) sleep 0.5; printf 'slow done\\n' ;;
  *) echo "no such service $3" >&2; exit 126 ;;
esac
"""


def recv_line(sock):
    line = b""
    while not line.endswith(b"\n"):
        b = sock.recv(1)
        if not b:
            raise EOFError("closed")
        line += b
    return line[:-1].decode()


class FakeHost:
    """One host's side: the uplink socket of its relay and the TCP acceptor
    the other hosts' relays reach it on."""

    def __init__(self, root, zone):
        self.zone = zone
        self.uplink_path = os.path.join(root, "uplink.sock")
        self.peers = {}  # zone -> FakeHost it can dial
        self.connects = 0
        self.listener = None
        self.lock = threading.Lock()
        self.uplink = socket.socket(socket.AF_UNIX)
        self.uplink.bind(self.uplink_path)
        self.uplink.listen(16)
        self.acceptor = socket.socket()
        self.acceptor.bind(("127.0.0.1", 0))
        self.acceptor.listen(16)
        self.port = self.acceptor.getsockname()[1]
        self.closing = False
        for target in (self.serve_uplink, self.serve_acceptor):
            threading.Thread(target=target, daemon=True).start()

    def close(self):
        self.closing = True
        for s in (self.uplink, self.acceptor, self.listener):
            if s:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def set_listener(self, conn):
        with self.lock:
            old, self.listener = self.listener, conn
        if old:
            old.close()

    def serve_uplink(self):
        while not self.closing:
            try:
                conn, _ = self.uplink.accept()
            except OSError:
                return
            threading.Thread(target=self.uplink_request, args=(conn,), daemon=True).start()

    def uplink_request(self, conn):
        try:
            words = recv_line(conn).split(" ")
        except (EOFError, OSError):
            conn.close()
            return
        if words == ["listen"]:
            conn.sendall(b"ok\n")
            self.set_listener(conn)  # a newer listener replaces the older
            return
        if len(words) == 2 and words[0] == "connect" and words[1] in self.peers:
            with self.lock:
                self.connects += 1
            tcp = socket.create_connection(("127.0.0.1", self.peers[words[1]].port))
            socket.send_fds(conn, [b"ok\n"], [tcp.fileno()])
            tcp.close()
        else:
            conn.sendall(b"error no relay route to zone\n")
        conn.close()

    def serve_acceptor(self):
        while not self.closing:
            try:
                tcp, _ = self.acceptor.accept()
            except OSError:
                return
            try:
                words = recv_line(tcp).split(" ")  # the preamble, byte by byte: TLS follows
                assert words[0] == "aerie-air/1" and len(words) == 3
                with self.lock:
                    listener = self.listener
                socket.send_fds(listener, [f"accept {words[1]} {words[2]}\n".encode()], [tcp.fileno()])
            except Exception:  # no listener, a bad preamble: dropped, as aeried does
                pass
            tcp.close()


class Relay:
    """A relay's state: ~/.aerie-air, its QubesDB folder, its environment."""

    def __init__(self, root, zone, exported, certified=None):
        self.zone = zone
        self.root = os.path.join(root, zone)
        self.home = os.path.join(self.root, "air")
        self.qubesdb = os.path.join(self.root, "qubesdb")
        for d in (os.path.join(self.home, "run"), os.path.join(self.qubesdb, "remote"),
                  os.path.join(self.qubesdb, "air-zone")):
            os.makedirs(d, exist_ok=True)
        os.chmod(self.home, 0o700)
        self.write("zone", zone + "\n")
        self.write("names", "".join(n + "\n" for n in exported))
        make_cert(os.path.join(self.home, "tls"), zone, certified if certified is not None else exported)
        self.host = FakeHost(self.root, zone)
        self.serve_proc = None

    def write(self, rel, text):
        path = os.path.join(self.home, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    @property
    def cert(self):
        with open(os.path.join(self.home, "tls", "cert.pem")) as f:
            return f.read()

    def pair(self, other, names=None, cert=None):
        """Trusts `other` (its cert pinned, its names) and makes RemoteVMs
        for its exported names: OTHERZONE-NAME."""
        self.write(f"peers/{other.zone}/cert.pem", cert or other.cert)
        if names is None:
            with open(os.path.join(other.home, "names")) as f:
                names = f.read().split()
        exported = names
        self.write(f"peers/{other.zone}/names", "".join(n + "\n" for n in exported))
        for name in exported:
            local = f"{other.zone}-{name}"
            for key, value in (("remote", name), ("air-zone", other.zone)):
                with open(os.path.join(self.qubesdb, key, local), "w") as f:
                    f.write(value)
        self.host.peers[other.zone] = other.host

    def env(self, **extra):
        env = dict(os.environ)
        env.update(AERIE_AIR_HOME=self.home, AERIE_AIR_QUBESDB=self.qubesdb,
                   AERIE_AIR_UPLINK=self.host.uplink_path, AERIE_AIR_QREXEC_CLIENT_VM=self.stand_in,
                   AIR_TEST_BLOB=self.blob, AIR_TLS_TEST=self.mark)
        env.update(extra)
        return env

    def start_serve(self):
        with open(os.path.join(self.root, "serve.log"), "a") as log:
            self.serve_proc = subprocess.Popen([RELAY, "serve"], env=self.env(), stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.time() + 5
        while time.time() < deadline:  # up once it listens on the uplink
            if self.host.listener is not None and os.path.exists(os.path.join(self.home, "run", "relay.sock")):
                return
            time.sleep(0.02)
        raise AssertionError(f"serve of {self.zone} did not come up")

    def call(self, source, argument, stdin=b"", stdout=subprocess.PIPE, timeout=60):
        return subprocess.run([RELAY, "tls-proxy", argument], input=stdin if isinstance(stdin, bytes) else None,
                              stdin=None if isinstance(stdin, bytes) else stdin, stdout=stdout,
                              stderr=subprocess.PIPE, env=self.env(QREXEC_REMOTE_DOMAIN=source), timeout=timeout)

    def serve_pids(self):
        return [p for p, env in marked_processes(self.mark) if env.get("AERIE_AIR_HOME") == self.home and
                is_serve(p)]


def make_cert(folder, zone, names):
    """An Ed25519 key and self-signed certificate, SAN URIs qube:NAME; returns the PEM."""
    os.makedirs(folder, exist_ok=True)
    san = ",".join("URI:qube:" + n for n in names)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ed25519", "-nodes", "-days", "30",
                    "-keyout", os.path.join(folder, "key.pem"), "-out", os.path.join(folder, "cert.pem"),
                    "-subj", "/CN=aerie-air " + zone, "-addext", "subjectAltName=" + san],
                   check=True, capture_output=True)
    with open(os.path.join(folder, "cert.pem")) as f:
        return f.read()


def marked_processes(mark):
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = dict(kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv)
        except OSError:
            continue
        env = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in env.items()}
        if env.get("AIR_TLS_TEST") == mark:
            out.append((int(pid), env))
    return out


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read().replace("\0", " ")
    except OSError:
        return "?"


def is_serve(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().split(b"\0")[1:2] == [b"serve"]
    except OSError:
        return False


class AirTlsTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="air-tls-")
        cls.mark = cls.tmp
        Relay.mark = cls.mark
        Relay.stand_in = os.path.join(cls.tmp, "qrexec-client-vm")
        with open(Relay.stand_in, "w") as f:
            f.write(STAND_IN)
        os.chmod(Relay.stand_in, 0o755)
        Relay.blob = os.path.join(cls.tmp, "blob")
        with open(Relay.blob, "wb") as f:
            for _ in range(BLOB_SIZE // (1 << 20)):
                f.write(os.urandom(1 << 20))
        with open(Relay.blob, "rb") as f:
            cls.blob_sha = hashlib.file_digest(f, "sha256").hexdigest()
        # east exports work; its certificate names work and rogue, it exports
        # rogue to nobody. west exports vault and sys-store.
        cls.east = Relay(cls.tmp, "east", ["work", "personal-ok"], certified=["work", "rogue"])
        cls.west = Relay(cls.tmp, "west", ["vault", "store"])
        cls.east.pair(cls.west)
        # west trusts east's names work, rogue (not certified... rogue is; personal-ok is not).
        cls.west.pair(cls.east, names=["work", "rogue", "personal-ok"])
        cls.west.start_serve()

    @classmethod
    def tearDownClass(cls):
        for relay in (cls.east, cls.west):
            for pid in relay.serve_pids():
                os.kill(pid, signal.SIGTERM)
        deadline = time.time() + 5
        while time.time() < deadline and marked_processes(cls.mark):
            time.sleep(0.05)
        left = [(p, cmdline(p)) for p, _ in marked_processes(cls.mark)]
        for pid, _ in left:
            os.kill(pid, signal.SIGKILL)
        for relay in (cls.east, cls.west):
            relay.host.close()
            if relay.serve_proc:
                relay.serve_proc.wait()
        if os.environ.get("AIR_TLS_KEEP"):
            print("kept", cls.tmp)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)
        assert not left, f"processes left running: {left}"

    def log_tail(self, relay):
        path = os.path.join(relay.home, "run", "serve.log")
        other = os.path.join(relay.root, "serve.log")
        text = ""
        for p in (path, other):
            if os.path.exists(p):
                with open(p) as f:
                    text += f.read()[-3000:]
        return text

    def echo(self, relay=None, source="work", argument="west-vault+test.Echo+x", data=b"hello\n"):
        relay = relay or self.east
        r = relay.call(source, argument, stdin=data)
        return r

    def test_1_call_goes_through_and_starts_serve(self):
        r = self.echo()
        self.assertEqual(r.returncode, 7, r.stderr.decode() + self.log_tail(self.east))
        self.assertEqual(r.stdout, b"args: --source-qube=east-work vault test.Echo+x\nhello\n")
        self.assertEqual(r.stderr, b"")
        self.assertEqual(len(self.east.serve_pids()), 1, "tls-proxy started east's serve daemon")
        self.assertEqual(self.east.host.connects, 1)

    def test_2_warm_calls_reuse_the_connection_both_ways(self):
        self.echo()
        before = self.east.host.connects
        n = 40
        start = time.perf_counter()
        for _ in range(n):
            r = self.echo(data=b"")
            self.assertEqual(r.returncode, 7, r.stderr)
        per_call = (time.perf_counter() - start) / n
        self.assertEqual(self.east.host.connects, before, "no new connection")
        # The same work without the transport: the stand-in run here.
        start = time.perf_counter()
        for _ in range(n):
            subprocess.run([Relay.stand_in, "--source-qube=east-work", "vault", "test.Echo+x"], input=b"",
                           capture_output=True)
        local = (time.perf_counter() - start) / n
        print(f"\nwarm call {per_call * 1000:.1f} ms; the stand-in run locally {local * 1000:.1f} ms: "
              f"the transport adds {(per_call - local) * 1000:.1f} ms (tls-proxy's start included)", flush=True)
        # west calls east on the same link: west never dials.
        r = self.west.call("vault", "east-work+test.Echo+back", stdin=b"hi")
        self.assertEqual(r.returncode, 7, r.stderr)
        self.assertEqual(r.stdout, b"args: --source-qube=west-vault work test.Echo+back\nhi")
        # east's daemon, started by a call from work, does not pass that call's
        # environment on
        r = self.west.call("vault", "east-work+test.Env")
        self.assertEqual((r.returncode, r.stdout), (0, b"unset\n"))
        self.assertEqual(self.west.host.connects, 0)
        self.assertEqual(self.east.host.connects, before)
        # Concurrent calls, one slow, share it.
        procs = [subprocess.Popen([RELAY, "tls-proxy", "west-store+test.Slow"], stdout=subprocess.PIPE,
                                  env=self.east.env(QREXEC_REMOTE_DOMAIN="work")) for _ in range(5)]
        quick = self.echo()
        self.assertEqual(quick.returncode, 7)
        for p in procs:
            out, _ = p.communicate(timeout=30)
            self.assertEqual((p.returncode, out), (0, b"slow done\n"))
        self.assertEqual(self.east.host.connects, before)

    def test_2b_a_stalled_reader_holds_back_only_its_stream(self):
        self.echo()
        before = self.east.host.connects
        stalled = subprocess.Popen([RELAY, "tls-proxy", "west-vault+test.Blob"], stdout=subprocess.PIPE,
                                   env=self.east.env(QREXEC_REMOTE_DOMAIN="work"))
        time.sleep(0.5)  # its window and pipe fill up; nobody reads
        for _ in range(3):
            start = time.perf_counter()
            r = self.echo(data=b"through")
            self.assertEqual((r.returncode, r.stdout), (7, b"args: --source-qube=east-work vault test.Echo+x\nthrough"))
            self.assertLess(time.perf_counter() - start, 2)
        digest = subprocess.run(["openssl", "dgst", "-sha256", "-r"], stdin=stalled.stdout, capture_output=True)
        stalled.stdout.close()
        self.assertEqual(stalled.wait(timeout=60), 0)
        self.assertEqual(digest.stdout.decode()[:64], self.blob_sha)
        self.assertEqual(self.east.host.connects, before)

    def test_3_sources_not_allowed_are_refused(self):
        # not exported by east to west (not in west's peers/east/names)
        r = self.echo(source="personal")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, b"")
        self.assertEqual(r.stderr.decode(), "aerie-air: zone east does not export personal\n")
        # in west's names, not in east's certificate
        r = self.echo(source="personal-ok")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.decode(), "aerie-air: zone east does not export personal-ok\n")
        # a remote qube this relay does not relay for
        r = self.echo(argument="west-nope+test.Echo")
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"west-nope is not relayed here", r.stderr)
        # the link survives refusals
        self.assertEqual(self.echo().returncode, 7)

    def test_4_wrong_pinned_certificate(self):
        south = Relay(self.tmp, "south", ["work"])
        try:
            other = make_cert(os.path.join(self.tmp, "other-cert"), "west", ["vault"])  # not west's
            south.pair(self.west, cert=other)
            self.west.pair(south)
            r = south.call("work", "west-vault+test.Echo")
            self.assertEqual(r.returncode, 1)
            self.assertEqual(r.stderr.decode(),
                             "aerie-air: zone west presented a certificate other than the one pinned for it\n")
            # the other way: west pins a certificate south does not have
            south.pair(self.west)
            self.west.pair(south, cert=other)
            r = south.call("work", "west-vault+test.Echo")
            self.assertEqual(r.returncode, 1)
            self.assertRegex(r.stderr.decode(), r"^aerie-air: zone west refused the connection: .*alert.*\n$")
            # and right both ways
            self.west.pair(south)
            r = south.call("work", "west-vault+test.Echo", stdin=b"ok")
            self.assertEqual(r.returncode, 7, r.stderr)
            self.assertEqual(r.stdout, b"args: --source-qube=south-work vault test.Echo\nok")
        finally:
            for pid in south.serve_pids():
                os.kill(pid, signal.SIGTERM)
            south.host.close()

    def test_5_hundred_mib_each_way(self):
        self.echo()  # warm
        mb = BLOB_SIZE / 1e6
        # caller -> service: the stand-in hashes what came
        with open(Relay.blob, "rb") as blob:
            start = time.perf_counter()
            r = self.east.call("work", "west-vault+test.Sha256", stdin=blob, timeout=300)
            up = mb / (time.perf_counter() - start)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.decode().strip(), self.blob_sha)
        # service -> caller: the stand-in sends the blob, the caller's stdout is hashed
        start = time.perf_counter()
        proxy = subprocess.Popen([RELAY, "tls-proxy", "west-vault+test.Blob"], stdout=subprocess.PIPE,
                                 env=self.east.env(QREXEC_REMOTE_DOMAIN="work"))
        digest = subprocess.run(["openssl", "dgst", "-sha256", "-r"], stdin=proxy.stdout, capture_output=True)
        proxy.stdout.close()
        proxy.wait(timeout=60)
        down = mb / (time.perf_counter() - start)
        self.assertEqual(proxy.returncode, 0)
        self.assertEqual(digest.stdout.decode()[:64], self.blob_sha)
        # the link alone: from a file to /dev/null
        with open(Relay.blob, "rb") as blob:
            start = time.perf_counter()
            r = self.east.call("work", "west-vault+test.Null", stdin=blob, stdout=subprocess.DEVNULL)
            bare = mb / (time.perf_counter() - start)
        self.assertEqual(r.returncode, 0)
        print(f"\n{BLOB_SIZE >> 20} MiB caller->service {up:.0f} MB/s, service->caller {down:.0f} MB/s (sha256 matched); "
              f"file->/dev/null {bare:.0f} MB/s", flush=True)

    def test_6_peer_killed_mid_stream_then_back(self):
        self.echo()
        before = self.east.host.connects
        p = subprocess.Popen([RELAY, "tls-proxy", "west-vault+test.Blob"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.east.env(QREXEC_REMOTE_DOMAIN="work"))
        first = p.stdout.read(1 << 20)  # it flows
        self.assertEqual(len(first), 1 << 20)
        self.west.serve_proc.kill()
        self.west.serve_proc.wait()
        start = time.time()
        while p.stdout.read(1 << 20):
            pass
        p.wait(timeout=10)
        self.assertLess(time.time() - start, 10)
        self.assertEqual(p.returncode, 1)
        p.stdout.close()
        with p.stderr:
            stderr = p.stderr.read().decode()
        self.assertRegex(stderr, r"^aerie-air: (the connection to zone west was lost|zone west closed the connection).*\n$")
        # While west is down: a plain failure.
        self.west.host.set_listener(None)
        r = self.echo()
        self.assertEqual(r.returncode, 1)
        self.assertTrue(r.stderr.startswith(b"aerie-air: "), r.stderr)
        # Back: the next call works over a new connection.
        self.west.start_serve()
        r = self.echo()
        self.assertEqual(r.returncode, 7, r.stderr.decode() + self.log_tail(self.east))
        self.assertGreater(self.east.host.connects, before)

    def test_7_own_daemon_killed_then_started_again(self):
        self.echo()
        [daemon] = self.east.serve_pids()
        p = subprocess.Popen([RELAY, "tls-proxy", "west-vault+test.Blob"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.east.env(QREXEC_REMOTE_DOMAIN="work"))
        self.assertEqual(len(p.stdout.read(1 << 20)), 1 << 20)
        os.kill(daemon, signal.SIGKILL)
        p.stdout.read()
        self.assertEqual(p.wait(timeout=10), 1)
        p.stdout.close()
        with p.stderr:
            self.assertEqual(p.stderr.read(), b"aerie-air: the relay's serve daemon went away\n")
        # The next call starts a new daemon (the old socket is stale).
        r = self.echo()
        self.assertEqual(r.returncode, 7, r.stderr)
        self.assertNotIn(daemon, self.east.serve_pids())
        self.assertEqual(len(self.east.serve_pids()), 1)

    def test_8_an_ssh_connection_gets_sshd(self):
        ssh = os.path.join(self.west.home, "ssh")
        os.makedirs(ssh, exist_ok=True)
        key = os.path.join(ssh, "host_ed25519")
        if not os.path.exists(key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        self.west.write("ssh/sshd_config", f"HostKey {key}\nUsePAM no\nStrictModes no\nPidFile none\n")
        with socket.create_connection(("127.0.0.1", self.west.host.port), timeout=10) as tcp:
            tcp.sendall(b"aerie-air/1 east ssh\n")
            banner = tcp.makefile("rb").readline()
        self.assertTrue(banner.startswith(b"SSH-2.0-"), banner)


if __name__ == "__main__":
    if not os.path.exists(RELAY):
        print("no", RELAY)
        sys.exit(1)
    unittest.main(argv=sys.argv[:1] + sys.argv[2:], verbosity=2)  # after BUILD_DIR: tests to run
