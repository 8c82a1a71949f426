"""The Qubes Air uplink (docs/air.md), host side, with real qubes: aeried's
/run/aerie-air/uplink.sock in a relay qube, and its --air-listen acceptor.

  map          the relay finds /run/qubes-db/air-zone/<local> = the
               RemoteVM's air-zone next to /remote/, following the feature.
  connect      `connect b` from the relay of a RemoteVM with air-zone=b gets
               ok and a TCP socket to its air-address (numeric or a name)
               that carries bytes both ways; a zone it does not relay for,
               and any zone from a qube that relays nothing, get
               `error no relay route to zone Z`; an unreachable address
               `error connecting to ADDRESS: REASON`.
  hostile      garbage, extra spaces, NUL bytes, oversized lines, no
               newline, silence: each answered `error ...`, aeried unharmed,
               the next request served.
  listen       a `listen`er gets `accept b tls` with a socket carrying what
               a peer host sent after its preamble `aerie-air/1 b tls`; bad
               preambles and zones without a relay are closed; a newer
               listener replaces the older, which sees its uplink closed.
  on demand    a peer's connection for a halted relay starts it and its
               serve daemon (aerie-air-relay serve --daemon through qrexec),
               whose listener gets the connection.
Needs root (exit code 77 otherwise).
Run: python3 air_uplink_test.py BUILD_DIR"""

import json
import os
import re
import shlex
import socket
import socketserver
import stat
import subprocess
import sys
import threading
import time

from aerie_world import PREFIX, WorldTest, bin_path, run_tests, wait_for

UPLINK = "/run/aerie-air/uplink.sock"

# Run inside a qube: one uplink connection per request (argv[1]: a JSON list
# of latin-1 strings, null for "send nothing"); what came back, as JSON.
CLIENT = r"""
import fcntl, json, os, socket, sys
out = []
for raw in json.loads(sys.argv[1]):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect("/run/aerie-air/uplink.sock")
    if raw is not None:
        s.sendall(raw.encode("latin-1"))
    msg, fds, _, _ = socket.recv_fds(s, 1024, 4)
    res = {"reply": msg.decode("latin-1"), "fds": len(fds)}
    if fds:
        res["blocking"] = not fcntl.fcntl(fds[0], fcntl.F_GETFL) & os.O_NONBLOCK
        t = socket.socket(fileno=fds[0])
        t.settimeout(10)
        t.sendall(b"ping\n")
        res["through"] = t.recv(100).decode()
        t.close()
    out.append(res)
    s.close()
print(json.dumps(out))
"""

# Run inside a qube: registers a listener, takes `count` accepts; each
# socket's first line is read and answered. Prints what it saw, as JSON,
# and whether the host closed the uplink afterwards (argv[2] == "eof").
LISTENER = r"""
import fcntl, json, os, socket, sys
count, wait_eof = int(sys.argv[1]), sys.argv[2] == "eof"
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect("/run/aerie-air/uplink.sock")
s.sendall(b"listen\n")
msg, fds, _, _ = socket.recv_fds(s, 1024, 4)
print(json.dumps({"listen": msg.decode()}), flush=True)
for _ in range(count):
    msg, fds, _, _ = socket.recv_fds(s, 1024, 4)
    seen = {"accept": msg.decode(), "fds": len(fds)}
    if fds:
        seen["blocking"] = not fcntl.fcntl(fds[0], fcntl.F_GETFL) & os.O_NONBLOCK
        t = socket.socket(fileno=fds[0])
        t.settimeout(10)
        data = b""
        while not data.endswith(b"\n"):
            chunk = t.recv(100)
            if not chunk:
                break
            data += chunk
        seen["data"] = data.decode()
        t.sendall(b"reply from the relay\n")
        t.close()
    print(json.dumps(seen), flush=True)
if wait_eof:
    s.settimeout(30)
    print(json.dumps({"eof": s.recv(10) == b""}), flush=True)
"""


class EchoServer(socketserver.ThreadingTCPServer):
    """The peer zone's host as a relay's connection reaches it: echoes one line."""
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        class Handler(socketserver.StreamRequestHandler):
            def handle(self):
                line = self.rfile.readline()
                self.wfile.write(b"echo: " + line)
        super().__init__(("127.0.0.1", 0), Handler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def peer_connect(port, data, timeout=20):
    """A peer host: connects, sends `data`; returns everything it receives
    until the connection closes (b"" when closed at once)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.settimeout(timeout)
    got = b""
    try:
        if data:
            s.sendall(data)
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return got
            got += chunk
    except (ConnectionResetError, BrokenPipeError):
        return got  # closed with our bytes unread
    finally:
        s.close()


class AirUplinkTest(WorldTest):

    def setUp(self):
        super().setUp()
        self.relay = PREFIX + "relay"
        self.server = EchoServer()

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()
        super().tearDown()

    def remote(self, short, zone, address, relay=None):
        name = PREFIX + short
        self.w.tool("qvm-create", "--class", "RemoteVM", "--label", "red", name)
        self.w.tool("qvm-prefs", name, "relayvm", relay or self.relay)
        if zone:
            self.w.tool("qvm-features", name, "air-zone", zone)
        if address:
            self.w.tool("qvm-features", name, "air-address", address)
        return name

    def requests(self, qube, lines):
        rc, out, err = self.w.run(qube, "python3 - " + shlex.quote(json.dumps(lines)), input=CLIENT, timeout=120)
        return json.loads(out)

    def full_log(self):
        with open(self.w.log_path, errors="replace") as f:
            return f.read()

    def socket_path(self, qube):
        return os.path.join(self.w.runtime, "qubes", qube, "air", "uplink.sock")

    def test_01_zone_map_follows_the_feature(self):
        self.make_world(appvms=("relay",))
        rb = self.remote("rb", "b", None)
        self.w.tool("qvm-start", self.relay)

        def zones():
            _, out, _ = self.w.run(self.relay, "cd /run/qubes-db/air-zone 2>/dev/null && "
                                               "for f in *; do [ -e \"$f\" ] && echo \"$f=$(cat $f)\"; done; true")
            return dict(line.split("=", 1) for line in out.split())
        self.assertEqual(zones(), {rb: "b"})
        self.w.tool("qvm-features", rb, "air-zone", "b2")
        wait_for(lambda: zones() == {rb: "b2"}, 10, "the changed zone")
        self.w.tool("qvm-features", "--unset", rb, "air-zone")
        wait_for(lambda: zones() == {}, 10, "the zone to go")
        rc = self.remote("rc", "c", None)
        wait_for(lambda: zones() == {rc: "c"}, 10, "a new remote's zone")

    def test_02_connect(self):
        self.make_world(appvms=("relay", "work"))
        self.remote("rb", "b", "127.0.0.1:%d" % self.server.port)
        self.remote("rb2", "b", "127.0.0.1:%d" % self.server.port)  # a second qube of that zone
        self.remote("re", "e", "localhost:%d" % self.server.port)
        closed = free_port()
        self.remote("rd", "d", "127.0.0.1:%d" % closed)
        self.remote("rf", "f", "no-such-host.invalid:22")
        self.w.tool("qvm-start", self.relay)
        self.w.tool("qvm-start", PREFIX + "work")
        st = os.stat(self.socket_path(self.relay))
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        # Only the qube itself: its root (owner) and its user's group (1000).
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o660)
        base = os.stat(os.path.join(self.w.runtime, "qubes", self.relay, "vchan")).st_uid  # the qube's root
        self.assertEqual((st.st_uid, st.st_gid), (base, base + 1000))
        # A host user that is not root cannot connect (it could with 0666).
        probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "python3", "-c",
                                "import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])",
                                self.socket_path(self.relay)], capture_output=True, text=True)
        self.assertIn("PermissionError", probe.stderr)

        got = self.requests(self.relay, ["connect b\n", "connect e\n", "connect c\n", "connect d\n",
                                         "connect f\n"])
        self.assertEqual(got[0], {"reply": "ok\n", "fds": 1, "blocking": True, "through": "echo: ping\n"})
        self.assertEqual(got[1], {"reply": "ok\n", "fds": 1, "blocking": True, "through": "echo: ping\n"})
        self.assertEqual(got[2], {"reply": "error no relay route to zone c\n", "fds": 0})
        self.assertEqual(got[3], {"reply": "error connecting to 127.0.0.1:%d: Connection refused\n" % closed,
                                  "fds": 0})
        self.assertEqual(got[4]["fds"], 0)
        self.assertTrue(got[4]["reply"].startswith("error connecting to no-such-host.invalid:22: "), got[4])
        # A qube that relays nothing: no route, whatever the zone.
        got = self.requests(PREFIX + "work", ["connect b\n"])
        self.assertEqual(got, [{"reply": "error no relay route to zone b\n", "fds": 0}])
        line = "uplink of %s: refused: no relay route to zone b" % (PREFIX + "work")
        wait_for(lambda: line in self.full_log(), 10, "%r in aeried's log" % line)  # written through its drainer
        # Stopped: the socket goes with the qube.
        self.w.tool("qvm-shutdown", "--wait", PREFIX + "work")
        self.assertFalse(os.path.exists(self.socket_path(PREFIX + "work")))
        # A restarted aeried adopts the relay and opens its socket again.
        self.w.stop_daemon()
        self.w.start_daemon()
        got = self.requests(self.relay, ["connect b\n"])
        self.assertEqual(got[0]["reply"], "ok\n")

    def test_03_hostile_requests(self):
        self.make_world(appvms=("relay",))
        self.remote("rb", "b", "127.0.0.1:%d" % self.server.port)
        self.w.tool("qvm-start", self.relay)
        hostile = {
            "hello\n": "error request: unknown (connect ZONE or listen)\n",
            "connect  b\n": "error request: words are separated by single spaces\n",
            "connect b \n": "error request: words are separated by single spaces\n",
            "connect b\0\n": "error request: control byte in the line\n",
            "connect\n": "error request: connect needs a zone\n",
            "connect b": "error a message came without its newline\n",
            "x" * 600 + "\n": "error a message longer than 512 bytes came\n",
            "\0" * 40: "error a message came without its newline\n",
        }
        lines = list(hostile) + ["connect b\n"]
        got = self.requests(self.relay, ["connect B\n"])
        self.assertTrue(got[0]["reply"].startswith("error request: a zone name "), got)
        got = self.requests(self.relay, lines)
        for line, reply in zip(lines, got):
            if line in hostile:
                self.assertEqual(reply, {"reply": hostile[line], "fds": 0}, repr(line))
        self.assertEqual(got[-1], {"reply": "ok\n", "fds": 1, "blocking": True, "through": "echo: ping\n"})
        # Silence: answered after 5 s, then the next request is served.
        start = time.monotonic()
        got = self.requests(self.relay, [None, "connect b\n"])
        self.assertGreaterEqual(time.monotonic() - start, 4.5)
        self.assertEqual(got[0], {"reply": "error no request within 5 seconds\n", "fds": 0})
        self.assertEqual(got[1]["reply"], "ok\n")
        # A flood of connections that never speak, then a request: served once
        # the timeouts have closed them; aeried still answers the Admin API.
        script = ("import socket, time\nss = []\nfor _ in range(64):\n"
                  "    s = socket.socket(socket.AF_UNIX); s.connect('%s'); ss.append(s)\ntime.sleep(1)\n" % UPLINK)
        self.w.run(self.relay, "python3 -", input=script)
        got = self.requests(self.relay, ["connect b\n"])
        self.assertEqual(got[0]["reply"], "ok\n")
        self.assertIsNone(self.w.daemon.poll())
        self.w.ok("admin.vm.List")

    def start_listener(self, count, wait_eof=False):
        """LISTENER in the relay, on a thread; (thread, result list)."""
        result = {}

        def run():
            result["out"] = self.w.run(self.relay, "python3 - %d %s" % (count, "eof" if wait_eof else "-"),
                                       input=LISTENER, timeout=120)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t, result

    def listening_count(self):
        return len(re.findall(r"uplink of %s: listening" % re.escape(self.relay), self.full_log()))

    def test_04_listen_and_accept(self):
        port = free_port()
        self.w.daemon_args = ["--air-listen", "127.0.0.1:%d" % port]
        self.make_world(appvms=("relay",))
        self.remote("rb", "b", None)
        self.remote("rs", "s", None)
        self.w.tool("qvm-start", self.relay)
        first, first_out = self.start_listener(0, wait_eof=True)
        wait_for(lambda: self.listening_count() == 1, 30, "the first listener")
        listener, out = self.start_listener(2)
        wait_for(lambda: self.listening_count() == 2, 30, "the second listener")
        first.join(60)
        lines = [json.loads(line) for line in first_out["out"][1].splitlines()]
        self.assertEqual(lines, [{"listen": "ok\n"}, {"eof": True}])

        # Bad preambles and zones nobody relays: closed, nothing reaches the relay.
        for bad in (b"GET / HTTP/1.0\r\n\r\n", b"aerie-air/2 b tls\n", b"aerie-air/1 b ftp\n",
                    b"aerie-air/1 zz tls\n", b"aerie-air/1  b tls\n", b"x" * 300, b"aerie-air/1 b\0 tls\n"):
            self.assertEqual(peer_connect(port, bad), b"", bad)
        # The preamble, then the transport's bytes: they go with the socket.
        got = peer_connect(port, b"aerie-air/1 b tls\nhello from b\n")
        self.assertEqual(got, b"reply from the relay\n")
        got = peer_connect(port, b"aerie-air/1 s ssh\nsecond\n")
        self.assertEqual(got, b"reply from the relay\n")
        listener.join(60)
        lines = [json.loads(line) for line in out["out"][1].splitlines()]
        self.assertEqual(lines, [{"listen": "ok\n"},
                                 {"accept": "accept b tls\n", "fds": 1, "blocking": True, "data": "hello from b\n"},
                                 {"accept": "accept s ssh\n", "fds": 1, "blocking": True, "data": "second\n"}])
        # No preamble at all: closed after 5 s.
        start = time.monotonic()
        self.assertEqual(peer_connect(port, b""), b"")
        self.assertGreaterEqual(time.monotonic() - start, 4.5)
        self.assertIn("closed a connection from 127.0.0.1:", self.full_log())
        self.assertIsNone(self.w.daemon.poll())

    def test_05_on_demand_serve(self):
        usage = subprocess.run([bin_path("aerie-air-relay")], capture_output=True, text=True).stderr
        port = free_port()
        self.w.daemon_args = ["--air-listen", "127.0.0.1:%d" % port]
        self.make_world(appvms=("relay",))
        self.remote("rb", "b", None)
        self.assertEqual(self.w.listed()[self.relay]["state"], "Halted")
        # The relay is started for the connection, then its serve daemon.
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"aerie-air/1 b tls\n")
        wait_for(lambda: self.w.listed()[self.relay]["state"] == "Running", 60, "the relay to start")
        log = wait_for(lambda: re.search(r"starting the serve daemon in %s" % re.escape(self.relay), self.full_log()),
                       30, "the serve daemon's start")
        self.assertTrue(log)
        if re.search(r"^\s+serve\b", usage, re.M):
            wait_for(lambda: self.listening_count() >= 1, 20, "the serve daemon's listen")
            wait_for(lambda: "handed a connection from zone b" in self.full_log(), 20, "the hand-over")
        else:
            # No serve daemon in this build: the connection is given up after 10 s.
            wait_for(lambda: "did not listen within 10 seconds" in self.full_log(), 20, "giving up")
        s.close()


def main():
    return run_tests(sys.argv, more=("qvm-features", "aerie-air-relay"))


if __name__ == "__main__":
    sys.exit(main())
