"""The qube side of the qrexec wire as Qubes R4.3 speaks it: Aerie's
qrexec-agent driven by a scripted daemon and a scripted local caller (as a
Qubes qrexec-client-vm), and Aerie's qrexec-client-vm driven by a scripted
agent (as a Qubes qrexec-agent). Run: python3 qrexec_wire_agent_test.py BUILD_DIR"""

import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qrexec_harness import World, fixed, hello, msg, recv_msg, trigger4, unix_connect  # noqa: E402
import qrexec_wire_test  # noqa: E402
from qrexec_wire_test import CALLER_DOMAIN, DOMID, NAMES, FakeDaemon  # noqa: E402

BUILD = None
TARGET_DOMAIN = 43
PORT = 1024


def read_messages(conn, timeout=20):
    """Every message up to the peer's end of its direction."""
    got = []
    while True:
        try:
            t, payload = recv_msg(conn, timeout)
        except EOFError:
            return got
        got.append((NAMES.get(t, hex(t)), payload))


class AgentSide(unittest.TestCase):
    """The agent as a Qubes daemon and a Qubes qrexec-client-vm see it."""

    @classmethod
    def setUpClass(cls):
        qrexec_wire_test.BUILD = BUILD
        cls.world = World(BUILD, "", [("wire", DOMID)])
        cls.qube = cls.world.qubes["wire"]
        cls.user = __import__("pwd").getpwuid(os.geteuid()).pw_name
        cls.qube.start_agent()
        cls.daemon = FakeDaemon(cls.qube)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.close()
        cls.world.stop()
        cls.world.cleanup()

    def serve_channel(self, port):
        """The caller's end of a data channel, served as a Qubes daemon does."""
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = os.path.join(self.qube.vchan_dir, "vchan.%d.%d.%d.sock" % (CALLER_DOMAIN, DOMID, port))
        server.bind(path)
        server.listen(1)
        server.settimeout(20)
        return server, path

    def exec_(self, cmdline, type_="EXEC_CMDLINE"):
        port = self.daemon.next_port
        server, path = self.serve_channel(port)
        self.daemon.exec_cmdline(cmdline, type_)
        conn, _ = server.accept()
        server.close()
        os.unlink(path)
        conn.sendall(hello(4))
        t, payload = recv_msg(conn, 20)
        self.assertEqual((t, payload), (0x300, struct.pack("<I", 4)))
        return conn

    def terminated(self):
        t, payload = self.daemon.recv()
        self.assertEqual(NAMES.get(t), "CONNECTION_TERMINATED")
        return struct.unpack("<II", payload)

    # --- the local caller's exchange ----------------------------------------

    def trigger(self, marker=False):
        """A local caller's request; returns its connection and the ident the
        daemon got (after checking the rest came on unchanged)."""
        client = unix_connect(self.qube.agent_socket)
        request = trigger4("", "target", "SOCKET", "test.Svc+arg")
        if marker:
            r, w = os.pipe()
            socket.send_fds(client, [request], [r])
            os.close(r)
            os.close(w)
        else:
            client.sendall(request)
        t, payload = self.daemon.recv()
        self.assertEqual(NAMES.get(t), "TRIGGER_SERVICE4")
        ident = payload[128:160].rstrip(b"\0")
        self.assertTrue(ident.startswith(b"SOCKET"), ident)
        self.assertEqual(payload, request[8:136] + fixed(ident, 32) + request[168:])
        return client, ident

    def test_allowed_call_gets_bare_connect_params(self):
        client, ident = self.trigger()
        with client:
            self.daemon.sock.sendall(msg("SERVICE_CONNECT", struct.pack("<II", TARGET_DOMAIN, PORT) + fixed(ident, 32)))
            data, _, _, _ = socket.recv_fds(client, 64, 4)
            # struct exec_params alone: no header, no descriptor for a Qubes caller.
            self.assertEqual(data, struct.pack("<II", TARGET_DOMAIN, PORT))
        # The caller's end is the call's end.
        self.assertEqual(self.terminated(), (TARGET_DOMAIN, PORT))

    def test_refused_call_is_closed_without_answer(self):
        client, ident = self.trigger()
        with client:
            self.daemon.sock.sendall(msg("SERVICE_REFUSED", fixed(ident, 32)))
            client.settimeout(20)
            self.assertEqual(client.recv(64), b"")

    def test_marked_caller_gets_no_descriptor_from_a_qubes_daemon(self):
        # A Qubes daemon hands no channel over: the marked caller serves it.
        client, ident = self.trigger(marker=True)
        with client:
            self.daemon.sock.sendall(msg("SERVICE_CONNECT", struct.pack("<II", TARGET_DOMAIN, PORT) + fixed(ident, 32)))
            data, fds, _, _ = socket.recv_fds(client, 64, 4)
            self.assertEqual((data, fds), (struct.pack("<II", TARGET_DOMAIN, PORT), []))
        self.terminated()

    # --- MSG_JUST_EXEC ----------------------------------------------------------

    def test_just_exec_sends_only_the_exit_code(self):
        flag = os.path.join(self.qube.dir, "just-exec-ran")
        conn = self.exec_("%s:touch %s" % (self.user, flag), "JUST_EXEC")
        with conn:
            self.assertEqual(read_messages(conn), [("DATA_EXIT_CODE", struct.pack("<I", 0))])
        self.terminated()
        deadline = time.time() + 20
        while not os.path.exists(flag) and time.time() < deadline:
            time.sleep(0.05)
        self.assertTrue(os.path.exists(flag))

    def test_just_exec_of_a_missing_service_is_127(self):
        conn = self.exec_("%s:QUBESRPC test.NoSuchService+ src" % self.user, "JUST_EXEC")
        with conn:
            self.assertEqual(read_messages(conn), [("DATA_EXIT_CODE", struct.pack("<I", 127))])
        self.terminated()

    # --- services ----------------------------------------------------------------

    def run_service(self, cmdline, stdin=b"", eof=True):
        conn = self.exec_(cmdline)
        with conn:
            out = msg("DATA_STDIN", stdin) if stdin else b""
            conn.sendall(out + (msg("DATA_STDIN") if eof else b""))
            got = read_messages(conn)
        self.terminated()
        return got

    def test_wait_for_session_runs_first(self):
        log = os.path.join(self.qube.dir, "session.log")
        self.qube.add_service("qubes.WaitForSession", "#!/bin/sh\nread user\n"
                              "echo \"waited: [$1] $QREXEC_REMOTE_DOMAIN $user\" > %s\n" % log)
        self.qube.add_service("test.Session", "#!/bin/sh\ncat %s\n" % log)
        with open(os.path.join(self.qube.rpc_config_dir, "test.Session"), "w") as f:
            f.write("wait-for-session = true\n")
        got = self.run_service("%s:QUBESRPC test.Session+x src" % self.user)
        stdout = b"".join(p for n, p in got if n == "DATA_STDOUT")
        self.assertEqual(stdout, ("waited: [] src %s\n" % self.user).encode())
        self.assertEqual(got[-1], ("DATA_EXIT_CODE", struct.pack("<I", 0)))

    def test_service_may_use_its_stdin_socket_both_ways(self):
        script = 'kill -USR1 "$QREXEC_AGENT_PID"; echo hello >&0; read x; echo "got $x" >&0'
        got = self.run_service("%s:%s" % (self.user, script), b"data\n")
        stdout = b"".join(p for n, p in got if n == "DATA_STDOUT")
        self.assertEqual(stdout, b"hello\ngot data\n")
        self.assertEqual(got[-1], ("DATA_EXIT_CODE", struct.pack("<I", 0)))

    def test_stdin_ends_when_the_main_process_exits(self):
        # A child left behind reads the service's stdin: it must see EOF once
        # the main process is gone, although the caller never ends stdin.
        script = "exec 3<&0; (cat <&3 >/dev/null; echo child saw eof) & exit 7"
        got = self.run_service("%s:%s" % (self.user, script), eof=False)
        stdout = b"".join(p for n, p in got if n == "DATA_STDOUT")
        self.assertEqual(stdout, b"child saw eof\n")
        self.assertEqual(got[-1], ("DATA_EXIT_CODE", struct.pack("<I", 7)))

    def test_socket_service_stderr_ends_first(self):
        path = os.path.join(self.qube.rpc_dir, "test.Sock")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        server.listen(1)
        try:
            conn = self.exec_("%s:QUBESRPC test.Sock src" % self.user)
            with conn:
                peer, _ = server.accept()
                peer.close()
                conn.sendall(msg("DATA_STDIN"))
                got = read_messages(conn)
            self.terminated()
        finally:
            server.close()
            os.unlink(path)
        self.assertEqual(got, [("DATA_STDERR", b""), ("DATA_STDOUT", b""), ("DATA_EXIT_CODE", b"\0\0\0\0")])

    def test_failed_tcp_service_ends_stdout_then_stderr(self):
        # A /dev/tcp link without a host fails with 125; both streams end
        # first, stdout before stderr, as Qubes' agent sends them.
        path = os.path.join(self.qube.rpc_dir, "test.Tcp")
        os.symlink("/dev/tcp", path)
        try:
            got = self.run_service("%s:QUBESRPC test.Tcp src" % self.user)
        finally:
            os.unlink(path)
        self.assertEqual(got, [("DATA_STDOUT", b""), ("DATA_STDERR", b""), ("DATA_EXIT_CODE", struct.pack("<I", 125))])

    def test_caller_may_still_send_after_a_failed_call(self):
        conn = self.exec_("%s:QUBESRPC test.NoSuchService src" % self.user)
        with conn:
            t, _ = recv_msg(conn, 20)
            while NAMES.get(t) != "DATA_EXIT_CODE":
                t, _ = recv_msg(conn, 20)
            self.terminated()
            # The service side lingers until we close: stdin sent late is taken.
            conn.sendall(msg("DATA_STDIN", b"late") + msg("DATA_STDIN"))
            self.assertEqual(conn.recv(1), b"")


class ClientVmSide(unittest.TestCase):
    """qrexec-client-vm as a Qubes agent sees it."""

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="aerie-cvm-")
        self.sock_path = os.path.join(self.dir, "agent.sock")
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(self.sock_path)
        self.server.listen(1)
        self.server.settimeout(20)

    def tearDown(self):
        self.server.close()
        subprocess.run(["rm", "-rf", self.dir])

    def start(self, *args, stdin=subprocess.PIPE):
        env = dict(os.environ, VCHAN_DOMAIN=str(DOMID), VCHAN_SOCKET_DIR=self.dir)
        self.proc = subprocess.Popen([os.path.join(BUILD, "bin", "qrexec-client-vm"),
                                      "--agent-socket=" + self.sock_path, *args],
                                     stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        conn, _ = self.server.accept()
        t, payload = recv_msg(conn, 20)
        self.assertEqual(NAMES.get(t), "TRIGGER_SERVICE4")
        return conn, payload

    def connect_channel(self):
        path = os.path.join(self.dir, "vchan.%d.%d.%d.sock" % (DOMID, TARGET_DOMAIN, PORT))
        deadline = time.time() + 20
        while True:
            chan = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                chan.connect(path)
                break
            except OSError:
                chan.close()
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        chan.sendall(hello(4))
        self.assertEqual(recv_msg(chan, 20), (0x300, struct.pack("<I", 4)))
        return chan

    def test_request_then_serves_the_channel(self):
        conn, payload = self.start("target", "test.Svc+arg")
        self.assertEqual(payload, fixed("", 64) + fixed("target", 64) + fixed("SOCKET", 32) + b"test.Svc+arg\0")
        conn.sendall(struct.pack("<II", TARGET_DOMAIN, PORT))
        chan = self.connect_channel()
        chan.sendall(msg("DATA_STDOUT", b"out\n") + msg("DATA_STDOUT") + msg("DATA_EXIT_CODE", struct.pack("<I", 42)))
        out, _ = self.proc.communicate(timeout=20)
        self.assertEqual((out, self.proc.returncode), (b"out\n", 42))
        # Its stdin (a pipe we never closed) ended with the exit code; nothing
        # else comes after it.
        self.assertEqual(read_messages(chan), [("DATA_STDIN", b"")])
        chan.close()
        conn.close()

    def test_closed_request_is_refused(self):
        conn, _ = self.start("target", "test.Svc")
        conn.close()
        out, err = self.proc.communicate(timeout=20)
        self.assertEqual((out, err, self.proc.returncode), (b"", b"Request refused\n", 126))

    def test_broken_channel_exits_255(self):
        conn, _ = self.start("target", "test.Svc")
        conn.sendall(struct.pack("<II", TARGET_DOMAIN, PORT))
        chan = self.connect_channel()
        chan.close()
        self.proc.communicate(timeout=20)
        self.assertEqual(self.proc.returncode, 255)
        conn.close()

    def test_local_program_failure_is_the_exit_code(self):
        conn, _ = self.start("target", "test.Svc", "/bin/false")
        conn.sendall(struct.pack("<II", TARGET_DOMAIN, PORT))
        chan = self.connect_channel()
        chan.sendall(msg("DATA_STDOUT") + msg("DATA_EXIT_CODE", struct.pack("<I", 0)))
        self.proc.communicate(timeout=20)
        self.assertEqual(self.proc.returncode, 1)
        chan.close()
        conn.close()


def main():
    global BUILD
    BUILD = sys.argv.pop(1) if len(sys.argv) > 1 else "build"
    unittest.main(verbosity=2)


if __name__ == "__main__":
    main()
