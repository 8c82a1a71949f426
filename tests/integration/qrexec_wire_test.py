"""The qrexec wire as Qubes R4.3 speaks it, checked byte for byte against
Aerie's binaries: the agent driven by a scripted daemon over the socket vchan
transport (the caller serves the data channel, as a Qubes qrexec-client does),
and qrexec-client's calls to dom0. Run: python3 qrexec_wire_test.py BUILD_DIR"""

import os
import pwd
import socket
import struct
import subprocess
import sys
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qrexec_harness import World, hello, msg, recv_msg, unix_connect, wait_for, MSG  # noqa: E402
import qrexec_wire_daemon  # noqa: E402
from qrexec_wire_daemon import ClientWireTest, DaemonWireTest  # noqa: E402,F401  (run with these)

BUILD = None
NAMES = {v: k for k, v in MSG.items()}
DOMID = 7
CALLER_DOMAIN = 0


class FakeDaemon:
    """The daemon's side of the agent's control channel (vchan port 512)."""

    def __init__(self, qube):
        self.qube = qube
        path = os.path.join(qube.vchan_dir, "vchan.%d.0.512.sock" % qube.domid)
        wait_for(lambda: os.path.exists(path))
        self.sock = unix_connect(path)
        self.sock.sendall(hello(4))
        t, payload = recv_msg(self.sock)
        assert t == MSG["HELLO"], hex(t)
        self.next_port = 513

    def exec_cmdline(self, cmdline, type_="EXEC_CMDLINE"):
        """Sends EXEC_CMDLINE; returns the data port the agent connects to."""
        port = self.next_port
        self.next_port += 1
        self.sock.sendall(msg(type_, struct.pack("<II", CALLER_DOMAIN, port) + cmdline.encode() + b"\0"))
        return port

    def recv(self):
        return recv_msg(self.sock)

    def close(self):
        self.sock.close()


class SocketService:
    """A Unix socket service: records the descriptor each connection sends
    (up to its NUL), answers "ok" and closes."""

    def __init__(self, path):
        self.path = path
        self.descriptors = []
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(4)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            conn, _ = self.server.accept()
        except OSError:
            return
        with conn:
            data = b""
            while b"\0" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.descriptors.append(data.split(b"\0", 1)[0])
            conn.sendall(b"ok")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.server.close()
        os.unlink(self.path)


class WireTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.world = World(BUILD, "", [("wire", DOMID)])
        cls.qube = cls.world.qubes["wire"]
        cls.user = pwd.getpwuid(os.geteuid()).pw_name
        cls.qube.start_agent()
        cls.daemon = FakeDaemon(cls.qube)

    @classmethod
    def tearDownClass(cls):
        cls.daemon.close()
        cls.world.stop()
        if os.environ.get("AERIE_KEEP_TEST_DIR"):
            print("logs in", cls.world.root)
        else:
            cls.world.cleanup()

    def exec_and_accept(self, cmdline):
        """Sends cmdline to the agent as a Qubes daemon does and accepts the
        data channel the agent connects to (the caller's end)."""
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        port = self.daemon.next_port
        path = os.path.join(self.qube.vchan_dir, "vchan.%d.%d.%d.sock" % (CALLER_DOMAIN, DOMID, port))
        server.bind(path)
        server.listen(1)
        server.settimeout(20)
        self.daemon.exec_cmdline(cmdline)
        conn, _ = server.accept()
        server.close()
        os.unlink(path)
        return conn

    def run_call_hello_last(self, cmdline):
        """As run_call, but the caller's HELLO goes out only after the call
        ended (its exit code and CONNECTION_TERMINATED came): the agent must
        still take it, then close. Returns the messages."""
        conn = self.exec_and_accept(cmdline)
        with conn:
            got = []
            while not got or got[-1][0] != "DATA_EXIT_CODE":
                t, payload = recv_msg(conn, 20)
                got.append((NAMES.get(t, hex(t)), payload))
            self.assertEqual(NAMES.get(self.daemon.recv()[0]), "CONNECTION_TERMINATED")
            conn.sendall(hello(3) + msg("DATA_STDIN"))
            conn.settimeout(20)
            self.assertEqual(conn.recv(1), b"")
        return got

    def run_call(self, cmdline, stdin=b""):
        """Runs cmdline in the agent as a Qubes daemon and qrexec-client would:
        returns the data channel's messages (name, payload) up to the exit
        code, and the CONNECTION_TERMINATED that follows on the control channel."""
        conn = self.exec_and_accept(cmdline)
        with conn:
            try:
                conn.sendall(hello(3) + (msg("DATA_STDIN", stdin) if stdin else b"") + msg("DATA_STDIN"))
            except (BrokenPipeError, ConnectionResetError):
                pass  # a failed call may be closed already; its messages are still to read
            t, payload = recv_msg(conn, 20)
            self.assertEqual(t, MSG["HELLO"])
            got = []
            while True:
                t, payload = recv_msg(conn, 20)
                got.append((NAMES.get(t, hex(t)), payload))
                if t == MSG["DATA_EXIT_CODE"]:
                    break
        terminated = self.daemon.recv()
        return got, terminated

    def service_result(self, got):
        stdout = b"".join(p for n, p in got if n == "DATA_STDOUT")
        code = struct.unpack("<I", got[-1][1])[0]
        return stdout, code

    # --- MSG_CONNECTION_TERMINATED ------------------------------------------

    def test_connection_terminated_is_exactly_exec_params(self):
        got, (t, payload) = self.run_call(self.user + ":echo hi")
        self.assertEqual(self.service_result(got), (b"hi\n", 0))
        self.assertEqual(NAMES.get(t), "CONNECTION_TERMINATED")
        # struct exec_params: connect_domain, connect_port; no command line.
        self.assertEqual(len(payload), 8)
        self.assertEqual(struct.unpack("<II", payload)[0], CALLER_DOMAIN)

    # --- a call without '+' ---------------------------------------------------

    def test_call_without_plus_keeps_its_name(self):
        self.qube.add_service("test.Env", '#!/bin/sh\nprintf "%s|%s" "$QREXEC_SERVICE_FULL_NAME" '
                                          '"${QREXEC_SERVICE_ARGUMENT-unset}"\n')
        got, _ = self.run_call(self.user + ":QUBESRPC test.Env src")
        self.assertEqual(self.service_result(got), (b"test.Env|unset", 0))
        got, _ = self.run_call(self.user + ":QUBESRPC test.Env+ src")
        self.assertEqual(self.service_result(got), (b"test.Env+|", 0))

    def test_socket_descriptor_without_plus(self):
        with self.socket_service("test.Desc") as server:
            got, _ = self.run_call(self.user + ":QUBESRPC test.Desc src")
        self.assertEqual(server.descriptors, [b"test.Desc src"])
        self.assertEqual(self.service_result(got)[0], b"ok")

    def socket_service(self, name):
        return SocketService(os.path.join(self.qube.rpc_dir, name))

    # --- exit codes and the streams' ends ------------------------------------

    def assertStreamsEnd(self, got, code, stdout=b""):
        """Both streams end (an empty message each, in either order, nothing
        after on that stream) before the exit code, whatever happened to the
        service."""
        self.assertEqual(got[-1], ("DATA_EXIT_CODE", struct.pack("<I", code)), got)
        for stream in ("DATA_STDOUT", "DATA_STDERR"):
            mine = [p for n, p in got if n == stream]
            self.assertTrue(mine and mine[-1] == b"", "%s has no EOF: %r" % (stream, got))
            self.assertNotIn(b"", mine[:-1], got)
        self.assertEqual(self.service_result(got)[0], stdout)

    def test_missing_service_ends_both_streams(self):
        got, _ = self.run_call(self.user + ":QUBESRPC test.Missing+arg src")
        self.assertStreamsEnd(got, 127)

    def test_failed_call_takes_the_callers_late_hello(self):
        got = self.run_call_hello_last(self.user + ":QUBESRPC test.Missing src")
        self.assertEqual(got[0], ("HELLO", struct.pack("<I", 4)))
        self.assertStreamsEnd(got[1:], 127)

    def test_executable_service_ends_both_streams(self):
        self.qube.add_service("test.Hello", "#!/bin/sh\necho hello\n")
        got, _ = self.run_call(self.user + ":QUBESRPC test.Hello src")
        self.assertStreamsEnd(got, 0, b"hello\n")

    def test_socket_service_ends_both_streams(self):
        with self.socket_service("test.Sock+x"):
            got, _ = self.run_call(self.user + ":QUBESRPC test.Sock+x src")
        self.assertStreamsEnd(got, 0, b"ok")

    def test_tcp_link_without_host_or_port_is_a_problem(self):
        os.symlink("/dev/tcp", os.path.join(self.qube.rpc_dir, "test.TcpAny"))
        os.symlink("/dev/tcp/127.0.0.1", os.path.join(self.qube.rpc_dir, "test.TcpHost"))
        for cmd in ("test.TcpAny+", "test.TcpAny+127.0.0.1", "test.TcpHost"):
            got, _ = self.run_call(self.user + ":QUBESRPC %s src" % cmd)
            self.assertStreamsEnd(got, 125)

    def test_broken_specific_service_link_is_a_problem(self):
        self.qube.add_service("test.Broken", "#!/bin/sh\necho general\n")
        os.symlink("/dev/null/invalid", os.path.join(self.qube.rpc_dir, "test.Broken+arg"))
        got, _ = self.run_call(self.user + ":QUBESRPC test.Broken+arg src")
        self.assertStreamsEnd(got, 125)

    def test_unreachable_rpc_config_is_a_problem(self):
        self.qube.add_service("test.Conf", "#!/bin/sh\necho ran\n")
        os.symlink("/dev/null/doesnotexist", os.path.join(self.qube.rpc_config_dir, "test.Conf+arg"))
        got, _ = self.run_call(self.user + ":QUBESRPC test.Conf+arg src")
        self.assertStreamsEnd(got, 125)

    def test_socket_options_are_ignored_for_executables(self):
        self.qube.add_service("test.Opts", "#!/bin/sh\necho ran\n")
        with open(os.path.join(self.qube.rpc_config_dir, "test.Opts+arg"), "w") as f:
            f.write("skip-service-descriptor = true\nexit-on-service-eof = true\nexit-on-client-eof = true\n")
        got, _ = self.run_call(self.user + ":QUBESRPC test.Opts+arg src")
        self.assertStreamsEnd(got, 0, b"ran\n")

    def test_tcp_service_gets_the_descriptor_unless_skipped(self):
        server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        server.bind(("127.0.0.1", 0))
        server.listen(2)
        server.settimeout(20)
        port = server.getsockname()[1]
        os.symlink("/dev/tcp/127.0.0.1/%d" % port, os.path.join(self.qube.rpc_dir, "test.Tcp"))
        received = []

        def serve():
            conn, _ = server.accept()
            with conn:
                conn.settimeout(20)
                data = b""
                while b"\0" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                received.append(data)
                conn.sendall(b"tcp")
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        got, _ = self.run_call(self.user + ":QUBESRPC test.Tcp src")
        t.join(20)
        server.close()
        self.assertEqual(received, [b"test.Tcp src\0"])
        self.assertStreamsEnd(got, 0, b"tcp")

    # --- qrexec-client -d dom0 ----------------------------------------------

    def test_client_to_dom0_exits_when_the_command_ends(self):
        # stdin stays open: the command's end alone must end the client.
        r, w = os.pipe()
        p = subprocess.Popen([self.world.bin("qrexec-client"), "-d", "dom0", self.user + ":echo hi; exit 3"],
                             stdin=r, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        os.close(r)
        try:
            out, _ = p.communicate(timeout=30)
        finally:
            os.close(w)
            if p.poll() is None:
                p.kill()
                p.wait()
        code = p.returncode
        self.assertEqual(out, b"hi\n")
        self.assertEqual(code, 3)


def main():
    global BUILD
    BUILD = sys.argv.pop(1) if len(sys.argv) > 1 else "build"
    qrexec_wire_daemon.BUILD = os.path.abspath(BUILD)
    unittest.main(verbosity=2)


if __name__ == "__main__":
    main()
