"""The admin side of the qrexec wire as Qubes R4.3 speaks it, checked byte for
byte against Aerie's qrexec-daemon and qrexec-client (run by
qrexec_wire_test.py): the daemon driven by a scripted agent and scripted
local clients, with a scripted policy program; qrexec-client driven by
scripted daemons that never take the channel end it offers (as a Qubes
daemon), so the data channel is the vchan socket of the port."""

import array
import os
import shutil
import socket
import stat
import struct
import subprocess
import tempfile
import time
import unittest

from qrexec_harness import MSG, fixed, hello, msg, recv_msg, trigger4, wait_for

BUILD = None  # set by qrexec_wire_test.main()
NAMES = {v: k for k, v in MSG.items()}

# A stand-in for qrexec-policy-exec: records its arguments (one a line) and
# the requested source it was given in the environment, sleeps as told, then
# denies, or allows with the target it was asked for.
POLICY_PROGRAM = """#!/bin/sh
dir=$(dirname "$0")
printf '%s\\n' "$@" > "$dir/args.tmp"
printf '%s\\n' "${QREXEC_REQUESTED_SOURCE-unset}" >> "$dir/args.tmp"
mv "$dir/args.tmp" "$dir/args.$$"
sleep "$(cat "$dir/sleep" 2>/dev/null || echo 0)"
if [ -e "$dir/allow" ]; then
    printf 'result=allow\\nautostart=False\\nuser=someone\\ntarget=%s\\nrequested_target=%s\\n' "$3" "$3"
    exit 0
fi
echo result=deny
exit 1
"""


def bin_path(name):
    return os.path.join(BUILD, "bin", name)


def listen(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(4)
    s.settimeout(20)
    return s


def connect(path, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(path)
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def recv_msg_fds(sock, timeout=10):
    """One message and the descriptors that came with it (closed here)."""
    sock.settimeout(timeout)
    data, fds = b"", []
    while len(data) < 8 or len(data) < 8 + struct.unpack("<II", data[:8])[1]:
        want = 8 - len(data) if len(data) < 8 else 8 + struct.unpack("<II", data[:8])[1] - len(data)
        chunk, got, _, _ = socket.recv_fds(sock, want, 4)
        if not chunk:
            raise EOFError("closed")
        data += chunk
        fds += got
    for fd in fds:
        os.close(fd)
    t, n = struct.unpack("<II", data[:8])
    return t, data[8:], len(fds)


def closed(sock, timeout=10):
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


class Dir:
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="aerie-wire-")
        os.chmod(self.dir, 0o755)
        self.addCleanup(shutil.rmtree, self.dir, True)

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def log_file(self, name):
        f = open(self.path(name), "ab")
        self.addCleanup(f.close)
        return f

    def read_log(self, name):
        with open(self.path(name), "rb") as f:
            return f.read().decode(errors="replace")


class DaemonWireTest(Dir, unittest.TestCase):
    """qrexec-daemon for qube "work" (domain 7), its agent played here."""

    DOMID = 7

    def setUp(self):
        super().setUp()
        self.policy = self.path("policy")
        os.mkdir(self.policy)
        program = os.path.join(self.policy, "qrexec-policy-exec")
        with open(program, "w") as f:
            f.write(POLICY_PROGRAM)
        os.chmod(program, 0o755)
        self.program = program
        self.daemon = None

    def tearDown(self):
        if self.daemon and self.daemon.poll() is None:
            self.daemon.terminate()
            self.daemon.wait(10)

    def start(self, version=4, aerie=False):
        """Starts the daemon; plays its agent up to HELLO (a Qubes agent, or
        an Aerie one: a marker descriptor on its HELLO). Returns the control
        channel and the version the daemon answered."""
        server = listen(self.path("vchan.%d.0.512.sock" % self.DOMID))
        env = dict(os.environ, VCHAN_SOCKET_DIR=self.dir, VCHAN_DOMAIN="0")
        self.daemon = subprocess.Popen(
            [bin_path("qrexec-daemon"), "--direct", "--socket-dir=" + self.dir,
             "--policy-socket=" + self.path("no-policy.sock"), "--policy-program=" + self.program,
             "--uuid=00000000-0000-0000-0000-000000000007", str(self.DOMID), "work", "user"],
            env=env, stderr=self.log_file("daemon.log"))
        agent, _ = server.accept()
        server.close()
        self.addCleanup(agent.close)
        if aerie:
            r, w = os.pipe()
            socket.send_fds(agent, [hello(version)], [r])
            os.close(r)
            os.close(w)
        else:
            agent.sendall(hello(version))
        t, payload = recv_msg(agent)
        self.assertEqual(t, MSG["HELLO"])
        wait_for(lambda: os.path.exists(self.path("qrexec.%d" % self.DOMID)))
        return agent, struct.unpack("<I", payload)[0]

    def client(self):
        c = connect(self.path("qrexec.%d" % self.DOMID))
        self.addCleanup(c.close)
        self.assertEqual(recv_msg(c), (MSG["HELLO"], struct.pack("<I", 3)))
        c.sendall(hello(3))
        return c

    def policy_calls(self):
        calls = []
        for name in sorted(os.listdir(self.policy)):
            if name.startswith("args."):
                with open(os.path.join(self.policy, name)) as f:
                    calls.append(f.read().splitlines())
        return calls

    def set_policy(self, allow, sleep=0):
        if allow:
            open(os.path.join(self.policy, "allow"), "w").close()
        with open(os.path.join(self.policy, "sleep"), "w") as f:
            f.write(str(sleep))

    # --- requests from the agent ---------------------------------------------

    def test_bad_requests_are_refused_with_the_ident_as_it_came(self):
        agent, _ = self.start()
        self.set_policy(allow=True)
        head = fixed("", 64) + fixed("vault", 64)
        cases = [
            (head + b"a\0b" + b"\0" * 29 + b"svc\0", b"a\0b" + b"\0" * 29),      # a byte after the NUL
            (head + b"\1\2\3" + b"\0" * 29 + b"svc\0", b"\1\2\3" + b"\0" * 29),  # bytes outside the set
            (head + b"x" * 32 + b"svc\0", b"x" * 32),                             # no NUL at all
            (head + fixed("id1", 32) + b"\0", fixed("id1", 32)),                   # empty service name
            (head + fixed("id2", 32) + b"+arg\0", fixed("id2", 32)),               # a name starting with '+'
            (head + fixed("id3", 32) + b"a\0b\0", fixed("id3", 32)),               # a NUL inside the name
            (head + fixed("id4", 32) + b"svc", fixed("id4", 32)),                  # no terminating NUL
        ]
        for payload, ident in cases:
            agent.sendall(msg("TRIGGER_SERVICE4", payload))
            self.assertEqual(recv_msg(agent), (MSG["SERVICE_REFUSED"], ident), payload)
        self.assertEqual(self.policy_calls(), [])

    def test_an_agent_of_protocol_2_gets_hello_2_and_is_heard(self):
        agent, version = self.start(version=2)
        self.assertEqual(version, 2)
        for service in (b"", b"+a", b"\0a"):
            agent.sendall(msg("TRIGGER_SERVICE", fixed(service, 64) + fixed("vault", 32) + fixed("ab", 32)))
            self.assertEqual(recv_msg(agent), (MSG["SERVICE_REFUSED"], fixed("ab", 32)))
        self.assertEqual(self.policy_calls(), [])
        agent.sendall(msg("TRIGGER_SERVICE", fixed("test.Svc+x", 64) + fixed("vault", 32) + fixed("cd", 32)))
        self.assertEqual(recv_msg(agent), (MSG["SERVICE_REFUSED"], fixed("cd", 32)))  # the policy denied it
        self.assertEqual(self.policy_calls(), [["--", "work", "vault", "test.Svc+x", "unset"]])
        # A message its protocol does not have stops the daemon.
        agent.sendall(trigger4("", "vault", "ef", "test.Svc"))
        self.assertTrue(closed(agent))
        self.assertNotEqual(self.daemon.wait(10), 0)

    def test_a_request_too_short_for_its_fields_stops_the_daemon(self):
        agent, _ = self.start()
        self.set_policy(allow=True)
        agent.sendall(msg("TRIGGER_SERVICE4", fixed("vault", 64) + fixed("ab", 32)))
        self.assertTrue(closed(agent))
        self.assertNotEqual(self.daemon.wait(10), 0)
        self.assertFalse(os.path.exists(self.path("qrexec.7")))
        self.assertEqual(self.policy_calls(), [])

    def test_the_policy_program_gets_qubes_arguments(self):
        agent, _ = self.start()
        agent.sendall(trigger4("", "vault", "id1", "test.Svc+arg"))
        self.assertEqual(recv_msg(agent), (MSG["SERVICE_REFUSED"], fixed("id1", 32)))
        # A relay's requested source: not an argument (Qubes' program takes
        # none), but in the environment for Aerie's.
        agent.sendall(trigger4("remote", "vault", "id2", "test.Svc"))
        self.assertEqual(recv_msg(agent), (MSG["SERVICE_REFUSED"], fixed("id2", 32)))
        calls = self.policy_calls()
        self.assertIn(["--", "work", "vault", "test.Svc+arg", "unset"], calls)
        self.assertIn(["--", "work", "vault", "test.Svc", "remote"], calls)

    # --- local clients -----------------------------------------------------------

    def exec_port(self, domain, fd=None):
        c = self.client()
        request = msg("EXEC_CMDLINE", struct.pack("<II", domain, 0) + b"DEFAULT:true\0")
        if fd is None:
            c.sendall(request)
        else:
            socket.send_fds(c, [request], [fd])
        t, payload, fds = recv_msg_fds(c)
        self.assertEqual(t, MSG["EXEC_CMDLINE"])
        got_domain, port = struct.unpack("<II", payload)
        self.assertEqual(got_domain, self.DOMID)
        return c, port, fds

    def test_ports_for_calls_with_other_qubes_come_from_their_half(self):
        agent, _ = self.start()
        ports = [self.exec_port(d)[1] for d in (8, 9, 6, 0)]
        self.assertEqual(ports, [514, 516, 513, 515])
        for _ in ports:
            t, payload = recv_msg(agent)
            self.assertEqual(t, MSG["EXEC_CMDLINE"])
        agent.sendall(msg("CONNECTION_TERMINATED", struct.pack("<II", 8, 514)))
        wait_for(lambda: self.exec_port(9)[1] == 514)

    def test_a_client_that_offers_a_channel_learns_that_it_was_taken(self):
        agent, _ = self.start(aerie=True)
        _, _, fds = self.exec_port(8)
        self.assertEqual(fds, 0)  # offered nothing: told nothing (a Qubes client)
        self.assertEqual(recv_msg_fds(agent)[2], 0)
        mine, theirs = socket.socketpair()
        with mine, theirs:
            _, _, fds = self.exec_port(8, theirs.fileno())
            self.assertEqual(fds, 1)
        # The offered end goes to the agent with the command.
        t, payload, fds = recv_msg_fds(agent)
        self.assertEqual((t, payload[8:], fds), (MSG["EXEC_CMDLINE"], b"user:true\0", 1))

    def test_an_offered_channel_is_not_taken_for_a_qubes_agent(self):
        agent, _ = self.start(aerie=False)
        mine, theirs = socket.socketpair()
        with mine, theirs:
            _, _, fds = self.exec_port(8, theirs.fileno())
            self.assertEqual(fds, 0)
        t, payload, fds = recv_msg_fds(agent)
        self.assertEqual((t, payload[8:], fds), (MSG["EXEC_CMDLINE"], b"user:true\0", 0))

    def test_a_call_to_dom0_joins_a_qubes_agent_on_its_vchan(self):
        agent, _ = self.start(aerie=False)
        self.set_policy(allow=True)
        # The policy program answers target=dom0 for this call.
        agent.sendall(trigger4("", "dom0", "SOCKET3", "test.Missing"))
        t, payload, fds = recv_msg_fds(agent, 20)
        self.assertEqual((NAMES.get(t), fds), ("SERVICE_CONNECT", 0))
        domain, port = struct.unpack("<II", payload[:8])
        self.assertEqual((domain, payload[8:]), (0, fixed("SOCKET3", 32)))
        server = listen(self.path("vchan.%d.0.%d.sock" % (self.DOMID, port)))
        chan, _ = server.accept()
        server.close()
        with chan:
            chan.sendall(hello(4) + msg("DATA_STDIN"))
            self.assertEqual(recv_msg(chan)[0], MSG["HELLO"])
            got = []
            while not got or got[-1][0] != MSG["DATA_EXIT_CODE"]:
                got.append(recv_msg(chan, 20))
        self.assertEqual(got[-1], (MSG["DATA_EXIT_CODE"], struct.pack("<I", 127)))

    def test_service_connect_is_taken_once_for_a_request_before_the_policy(self):
        agent, _ = self.start()
        data = struct.pack("<II", 9, 513) + b"SOCKET5\0"  # an ident field of any length, as Qubes
        # Not a request of this qube: closed, the agent hears nothing.
        c = self.client()
        c.sendall(msg("SERVICE_CONNECT", data))
        self.assertTrue(closed(c))
        self.set_policy(allow=False, sleep=2)
        agent.sendall(trigger4("", "vault", "SOCKET5", "test.Svc"))
        wait_for(lambda: self.policy_calls())
        c = self.client()
        c.sendall(msg("SERVICE_CONNECT", data))
        self.assertEqual(recv_msg(agent), (MSG["SERVICE_CONNECT"], data))  # passed on as it came
        c2 = self.client()
        c2.sendall(msg("SERVICE_CONNECT", data))
        self.assertTrue(closed(c2))
        # The policy's later deny sends nothing: the next message the agent
        # gets is the refusal of a request made after it answered.
        wait_for(lambda: "SOCKET5 was connected by a local client" in self.read_log("daemon.log"), timeout=20)
        agent.sendall(trigger4("", "vault", "later", "+bad"))
        self.assertEqual(recv_msg(agent), (MSG["SERVICE_REFUSED"], fixed("later", 32)))

    def test_service_connect_without_a_port_gets_one(self):
        agent, _ = self.start()
        self.set_policy(allow=False, sleep=2)
        agent.sendall(trigger4("", "vault", "SOCKET6", "test.Svc"))
        wait_for(lambda: self.policy_calls())
        c = self.client()
        c.sendall(msg("SERVICE_CONNECT", struct.pack("<II", 0, 0) + fixed("SOCKET6", 32)))
        t, payload = recv_msg(c)
        self.assertEqual((t, struct.unpack("<II", payload)), (MSG["SERVICE_CONNECT"], (self.DOMID, 513)))
        self.assertEqual(recv_msg(agent), (MSG["SERVICE_CONNECT"], struct.pack("<II", 0, 513) + fixed("SOCKET6", 32)))


class ClientWireTest(Dir, unittest.TestCase):
    """qrexec-client against daemons played here, as Qubes' daemons behave:
    they never take the channel end it offers."""

    def setUp(self):
        super().setUp()
        for d in ("rpc", "rpc-config"):
            os.mkdir(self.path(d))
        self.proc = None

    def tearDown(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def daemon_socket(self, domid, name):
        server = listen(self.path("qrexec.%d" % domid))
        os.symlink("qrexec.%d" % domid, self.path("qrexec." + name))
        self.addCleanup(server.close)
        return server

    def run_client(self, *args, stdin=subprocess.PIPE):
        env = dict(os.environ, VCHAN_SOCKET_DIR=self.dir, VCHAN_DOMAIN="0",
                   QREXEC_SERVICE_PATH=self.path("rpc"), QUBES_RPC_CONFIG_PATH=self.path("rpc-config"))
        self.proc = subprocess.Popen([bin_path("qrexec-client"), "--socket-dir=" + self.dir, *args], env=env,
                                     stdin=stdin, stdout=subprocess.PIPE, stderr=self.log_file("client.log"))
        self.addCleanup(self.proc.stdout.close)
        if self.proc.stdin:
            self.addCleanup(self.proc.stdin.close)
        return self.proc

    def serve_daemon(self, server, expect_type, expect_payload, domain, port):
        """Plays a Qubes daemon for one request: HELLO, the request, the port."""
        conn, _ = server.accept()
        self.addCleanup(conn.close)
        conn.sendall(hello(3))
        self.assertEqual(recv_msg(conn), (MSG["HELLO"], struct.pack("<I", 3)))
        t, payload, offered = recv_msg_fds(conn)  # an offered channel end is dropped, as Qubes does
        self.assertEqual((NAMES.get(t), payload), (expect_type, expect_payload))
        conn.sendall(msg(expect_type, struct.pack("<II", domain, port)))
        return conn

    def messages_until_exit(self, chan):
        got = []
        while not got or got[-1][0] != "DATA_EXIT_CODE":
            t, payload = recv_msg(chan, 20)
            got.append((NAMES.get(t, hex(t)), payload))
        return got

    def serve_call_to_dom0(self, cmdline):
        """qrexec-client -d dom0 -c as Qubes' policy runs it for a qube's call
        (domain 43); returns the data channel, after HELLO both ways."""
        daemon = self.daemon_socket(43, "caller")
        vchan = listen(self.path("vchan.43.0.42.sock"))
        self.run_client("-d", "dom0", "-c", "SOCKET9,caller,43", cmdline)
        self.serve_daemon(daemon, "SERVICE_CONNECT", struct.pack("<II", 0, 0) + fixed("SOCKET9", 32), 43, 42)
        chan, _ = vchan.accept()
        vchan.close()
        self.addCleanup(chan.close)
        chan.sendall(hello(4))
        self.assertEqual(recv_msg(chan)[0], MSG["HELLO"])
        return chan

    def test_a_qubes_call_to_dom0_is_served_over_its_vchan(self):
        chan = self.serve_call_to_dom0("echo hi; echo err >&2; read x; echo got $x; exit 5")
        self.assertEqual(recv_msg(chan), (MSG["DATA_STDERR"], b""))  # stderr stays in dom0: ended at once
        chan.sendall(msg("DATA_STDIN", b"input\n") + msg("DATA_STDIN"))
        got = self.messages_until_exit(chan)
        self.assertEqual(b"".join(p for n, p in got if n == "DATA_STDOUT"), b"hi\ngot input\n")
        self.assertEqual(got[-2:], [("DATA_STDOUT", b""), ("DATA_EXIT_CODE", struct.pack("<I", 5))])
        self.assertEqual(self.proc.wait(20), 5)

    @unittest.skipUnless(os.access("/bin/bash", os.X_OK), "no bash here")
    def test_a_plain_command_in_dom0_runs_under_bash(self):
        chan = self.serve_call_to_dom0('read <&0; test -n "$BASH_VERSION" && echo bash')
        chan.sendall(msg("DATA_STDIN", b"x\n") + msg("DATA_STDIN"))
        got = self.messages_until_exit(chan)
        self.assertEqual(b"".join(p for n, p in got if n == "DATA_STDOUT"), b"bash\n")
        self.assertEqual(self.proc.wait(20), 0)

    def test_dom0_side_waits_for_the_session_first(self):
        marker = self.path("session")
        for name, script in (("qubes.WaitForSession", "#!/bin/sh\necho \"$QREXEC_REMOTE_DOMAIN\" > %s\n" % marker),
                             ("test.Svc", "#!/bin/sh\ncat %s\n" % marker)):
            with open(self.path("rpc", name), "w") as f:
                f.write(script)
            os.chmod(self.path("rpc", name), 0o755)
        with open(self.path("rpc-config", "test.Svc+x"), "w") as f:
            f.write("wait-for-session = 1\n")
        chan = self.serve_call_to_dom0("QUBESRPC test.Svc+x caller name dom0")
        chan.sendall(msg("DATA_STDIN"))
        got = self.messages_until_exit(chan)
        self.assertEqual(b"".join(p for n, p in got if n == "DATA_STDOUT"), b"caller\n")
        self.assertEqual(self.proc.wait(20), 0)

    def test_a_missing_dom0_service_ends_stderr_first_and_the_client(self):
        # Its stderr is the client's own: that stream ends first, also when
        # the service is not found; then stdout, the exit code, and the
        # client itself, without waiting for the caller to close.
        chan = self.serve_call_to_dom0("QUBESRPC test.NoSuchService caller name dom0")
        got = self.messages_until_exit(chan)
        self.assertEqual(got, [("DATA_STDERR", b""), ("DATA_STDOUT", b""),
                               ("DATA_EXIT_CODE", struct.pack("<I", 127))])
        self.proc.wait(20)

    def test_a_socket_service_that_hangs_up_ends_the_call(self):
        server = listen(self.path("rpc", "test.Sock"))
        self.addCleanup(server.close)
        chan = self.serve_call_to_dom0("QUBESRPC test.Sock caller name dom0")
        conn, _ = server.accept()
        with conn:
            conn.settimeout(20)
            self.assertEqual(conn.recv(100), b"test.Sock caller name dom0\0")
            conn.sendall(b"bye")
        # The caller never ends its stdin: the hang-up alone ends the call.
        got = self.messages_until_exit(chan)
        self.assertEqual(got, [("DATA_STDERR", b""), ("DATA_STDOUT", b"bye"), ("DATA_STDOUT", b""),
                               ("DATA_EXIT_CODE", struct.pack("<I", 0))])
        self.assertEqual(self.proc.wait(20), 0)

    def test_a_command_in_a_qube_over_the_vchan_it_serves(self):
        daemon = self.daemon_socket(42, "target")
        r, w = os.pipe()
        self.run_client("-d", "target", "-p", "prefix\n", "user:command", stdin=r)
        os.close(r)
        self.addCleanup(os.close, w)
        self.serve_daemon(daemon, "EXEC_CMDLINE", struct.pack("<II", 0, 0) + b"user:command\0", 42, 513)
        chan = connect(self.path("vchan.0.42.513.sock"))
        self.addCleanup(chan.close)
        chan.sendall(hello(4))
        self.assertEqual(recv_msg(chan)[0], MSG["HELLO"])
        self.assertEqual(recv_msg(chan), (MSG["DATA_STDIN"], b"prefix\n"))
        chan.sendall(msg("DATA_STDOUT", b"out\n") + msg("DATA_STDOUT"))
        # Its stdout ends with the call's, though its own stdin stays open.
        self.assertEqual(self.proc.stdout.read(), b"out\n")
        chan.sendall(msg("DATA_EXIT_CODE", struct.pack("<I", 9)))
        self.assertEqual(self.proc.wait(20), 9)
