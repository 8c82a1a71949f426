"""End-to-end tests of Aerie's qrexec: several qubes on one host, each with
its own socket directory, domain number, agent and daemon, and one policy
daemon deciding every call. Run: python3 qrexec_e2e_test.py BUILD_DIR"""

import hashlib
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qrexec_harness import (World, fixed, hello, msg, recv_msg, trigger4, unix_connect,  # noqa: E402
                            wait_for, MSG)

BUILD = None
GIB = 1 << 30

POLICY = """
test.Echo        *       work   vault  allow
test.Echo        *       vault  work   allow
test.Self        *       vault  vault  allow
test.Denied      *       @anyvm @anyvm deny
test.Ask         *       @anyvm @anyvm ask
test.Missing     *       @anyvm @anyvm allow
test.Socket      *       work   vault  allow
test.Stream      *       work   vault  allow
test.HalfClose   *       work   vault  allow
test.CloseOut    *       work   vault  allow
test.Sleep       *       work   vault  allow
test.Forced      *       work   vault  allow
qubes.ConnectTCP *       work   vault  allow
test.Dom0        *       work   dom0   allow
test.Whoami      *       work   solo   allow
test.Echo        *       alt    vault  allow
test.Echo        *       remote vault  allow
test.Denied      *       alt    vault  deny
test.AsRoot      *       work   solo   allow  user=root
test.Env         *       work   solo   allow
*                *       @anyvm @anyvm deny
"""


class QrexecEndToEnd(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.world = World(BUILD, POLICY, [("work", 1), ("vault", 2), ("solo", 4), ("alt", 5), ("relay", 6),
                                          ("evil", 9)])
        # A qube on another host, reached through "relay".
        cls.world.write_system_info({"remote": {
            "type": "RemoteVM", "tags": ["relayvm-relay"], "uuid": "00000000-0000-0000-0000-0000000000aa",
            "power_state": "Running", "relayvm": "relay", "transport_rpc": "qubesair.SSHProxy"}})
        w = cls.world
        vault = w.qubes["vault"]
        vault.add_service("test.Echo", '#!/bin/sh\necho "svc=$QREXEC_SERVICE_FULL_NAME src=$QREXEC_REMOTE_DOMAIN '
                                       'arg=$1 argenv=$QREXEC_SERVICE_ARGUMENT"\ncat\nexit 3\n')
        vault.add_service("test.Self", '#!/bin/sh\necho "self from $QREXEC_REMOTE_DOMAIN"\n')
        vault.add_service("test.Stream+up", "#!/bin/sh\nexec sha256sum\n")
        vault.add_service("test.Stream+down", "#!/bin/sh\nexec head -c %d /dev/zero\n" % GIB)
        vault.add_service("test.HalfClose", "#!/bin/sh\nexec wc -c\n")
        cls.closeout_file = os.path.join(w.root, "closeout.txt")
        vault.add_service("test.CloseOut", '#!/bin/sh\nexec >&-\nread line\necho "$line" > %s\n' % cls.closeout_file)
        vault.add_service("test.Sleep", "#!/bin/sh\nsleep 30\n")
        w.qubes["work"].add_service("test.Echo", "#!/bin/sh\necho from-work\n")
        # A Unix socket service that echoes its descriptor, then the data.
        cls.sock_path = os.path.join(vault.rpc_dir, "test.Socket")
        cls.sock_server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        cls.sock_server.bind(cls.sock_path)
        cls.sock_server.listen(16)
        threading.Thread(target=cls._serve_socket, daemon=True).start()
        # A TCP echo server reached through qubes.ConnectTCP.
        cls.tcp_server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        cls.tcp_server.bind(("127.0.0.1", 0))
        cls.tcp_server.listen(16)
        cls.tcp_port = cls.tcp_server.getsockname()[1]
        threading.Thread(target=cls._serve_tcp, daemon=True).start()
        os.symlink("/dev/tcp/127.0.0.1", os.path.join(vault.rpc_dir, "qubes.ConnectTCP"))
        with open(os.path.join(vault.rpc_config_dir, "qubes.ConnectTCP"), "w") as f:
            f.write("skip-service-descriptor = true\nexit-on-service-eof = true\n")
        # dom0's own services, run by the daemons.
        w.dom0_rpc = os.path.join(w.root, "dom0-rpc")
        os.makedirs(w.dom0_rpc)
        with open(os.path.join(w.dom0_rpc, "test.Dom0"), "w") as f:
            f.write('#!/bin/sh\necho "dom0 got $QREXEC_REMOTE_DOMAIN $QREXEC_REQUESTED_TARGET_TYPE '
                    '$QREXEC_REQUESTED_TARGET_KEYWORD"\n')
        os.chmod(os.path.join(w.dom0_rpc, "test.Dom0"), 0o755)
        for q in w.qubes.values():
            q.daemon_env = {"QREXEC_SERVICE_PATH": w.dom0_rpc}
        w.start(["work", "vault", "relay"])
        # "solo" runs its agent unprivileged, with call variables planted in
        # the agent's own environment that services must not inherit.
        solo = w.qubes["solo"]
        solo.add_service("test.Whoami", "#!/bin/sh\nid -un\n")
        os.symlink("test.Whoami", os.path.join(solo.rpc_dir, "test.AsRoot"))
        solo.add_service("test.Env", '#!/bin/sh\necho "arg=[$QREXEC_SERVICE_ARGUMENT] '
                                     'target=[$QREXEC_REQUESTED_TARGET]"\n')
        solo.start_agent(as_uid=65534, extra_env={"QREXEC_SERVICE_ARGUMENT": "planted",
                                                  "QREXEC_REQUESTED_TARGET": "planted"})
        wait_for(lambda: os.path.exists(solo.agent_socket))
        solo.start_daemon(default_user="nobody")
        # "alt"'s daemon has no policy daemon to ask: it runs the policy program.
        alt = w.qubes["alt"]
        wrapper = os.path.join(w.root, "policy-program")
        with open(wrapper, "w") as f:
            f.write('#!/bin/sh\nexec %s --system-info %s --path %s "$@"\n'
                    % (w.bin("qrexec-policy-exec"), w.system_info, w.policy_dir))
        os.chmod(wrapper, 0o755)
        alt.start_agent()
        wait_for(lambda: os.path.exists(alt.agent_socket))
        alt.start_daemon(policy_socket=os.path.join(w.root, "no-such.sock"), policy_program=wrapper)

    @classmethod
    def tearDownClass(cls):
        cls.world.stop()
        if os.environ.get("AERIE_KEEP_TEST_DIR"):
            print("logs in", cls.world.root)
        else:
            cls.world.cleanup()

    @classmethod
    def _serve_socket(cls):
        while True:
            try:
                conn, _ = cls.sock_server.accept()
            except OSError:
                return
            threading.Thread(target=cls._echo_socket, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo_socket(conn):
        with conn:
            data = b""
            while b"\0" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                data += chunk
            descriptor, rest = data.split(b"\0", 1)
            conn.sendall(b"descriptor=" + descriptor + b"\n" + rest)
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                conn.sendall(chunk)

    @classmethod
    def _serve_tcp(cls):
        while True:
            try:
                conn, _ = cls.tcp_server.accept()
            except OSError:
                return

            def echo(c):
                with c:
                    data = c.recv(65536)
                    c.sendall(b"tcp:" + data)
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    def call(self, source, target, service, input_=b"", **kw):
        return self.world.qubes[source].call(target, service, input_, **kw)

    def assertCall(self, result, code, stdout=None):
        self.assertEqual(result.returncode, code, "stderr: %r\n%s" % (result.stderr, self.world.logs()))
        if stdout is not None:
            self.assertEqual(result.stdout, stdout)

    # --- decisions ---------------------------------------------------------

    def test_allowed_call_runs_service_with_its_environment(self):
        r = self.call("work", "vault", "test.Echo+arg1", b"payload\n")
        self.assertCall(r, 3, b"svc=test.Echo+arg1 src=work arg=arg1 argenv=arg1\npayload\n")

    def test_other_direction_uses_other_policy_line(self):
        self.assertCall(self.call("vault", "work", "test.Echo"), 0, b"from-work\n")

    def test_denied_call_exits_126(self):
        r = self.call("work", "vault", "test.Denied")
        self.assertCall(r, 126, b"")
        self.assertIn(b"Request refused", r.stderr)

    def test_not_allowed_direction_is_denied(self):
        self.assertCall(self.call("work", "vault", "test.Unlisted"), 126, b"")

    def test_ask_without_anyone_to_ask_is_denied(self):
        self.assertCall(self.call("work", "vault", "test.Ask"), 126, b"")

    def test_missing_service_exits_127(self):
        self.assertCall(self.call("work", "vault", "test.Missing"), 127, b"")

    def test_call_to_dom0_runs_locally_on_the_admin_side(self):
        # The requested target reaches dom0's service as the caller spelled it
        # (Qubes' policy answers requested_target=dom0 for "dom0").
        self.assertCall(self.call("work", "@adminvm", "test.Dom0"), 0, b"dom0 got work keyword adminvm\n")
        self.assertCall(self.call("work", "dom0", "test.Dom0"), 0, b"dom0 got work name \n")

    def test_relay_speaks_for_its_remote_qube(self):
        r = self.call("relay", "vault", "test.Echo", b"relayed\n", extra=["--source-qube=remote"])
        self.assertCall(r, 3, b"svc=test.Echo+ src=remote arg= argenv=\nrelayed\n")

    def test_only_the_relay_may_speak_for_a_remote_qube(self):
        self.assertCall(self.call("work", "vault", "test.Echo", extra=["--source-qube=remote"]), 126, b"")
        self.assertCall(self.call("relay", "vault", "test.Echo", extra=["--source-qube=work"]), 126, b"")

    def test_daemon_falls_back_to_the_policy_program(self):
        self.assertCall(self.call("alt", "vault", "test.Echo", b"via program\n"), 3)
        self.assertCall(self.call("alt", "vault", "test.Denied"), 126, b"")

    # --- an unprivileged agent -------------------------------------------------

    def test_unprivileged_agent_runs_services_as_itself(self):
        self.assertCall(self.call("work", "solo", "test.Whoami"), 0, b"nobody\n")

    def test_unprivileged_agent_refuses_another_user(self):
        self.assertCall(self.call("work", "solo", "test.AsRoot"), 125, b"")

    def test_agent_environment_does_not_leak_into_services(self):
        self.assertCall(self.call("work", "solo", "test.Env"), 0, b"arg=[] target=[]\n")

    # --- service kinds ------------------------------------------------------

    def test_socket_service_gets_descriptor_and_data(self):
        r = self.call("work", "vault", "test.Socket+x", b"over the socket")
        self.assertCall(r, 0, b"descriptor=test.Socket+x work\nover the socket")

    def test_tcp_service_through_connect_tcp(self):
        r = self.call("work", "vault", "qubes.ConnectTCP+%d" % self.tcp_port, b"ping")
        self.assertCall(r, 0, b"tcp:ping")

    # --- streams ------------------------------------------------------------

    def test_one_gib_upstream_with_checksum(self):
        cmd = [self.world.bin("qrexec-client-vm"), "--agent-socket=" + self.world.qubes["work"].agent_socket,
               "vault", "test.Stream+up"]
        with subprocess.Popen(["head", "-c", str(GIB), "/dev/zero"], stdout=subprocess.PIPE) as src:
            r = subprocess.run(cmd, stdin=src.stdout, capture_output=True, timeout=300)
        expected = hashlib.sha256(b"\0" * GIB).hexdigest()
        self.assertCall(r, 0, (expected + "  -\n").encode())

    def test_one_gib_downstream_with_checksum(self):
        cmd = [self.world.bin("qrexec-client-vm"), "--agent-socket=" + self.world.qubes["work"].agent_socket,
               "vault", "test.Stream+down"]
        h = hashlib.sha256()
        total = 0
        with subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE) as p:
            while True:
                chunk = p.stdout.read(1 << 20)
                if not chunk:
                    break
                h.update(chunk)
                total += len(chunk)
            self.assertEqual(p.wait(300), 0)
        self.assertEqual(total, GIB)
        self.assertEqual(h.hexdigest(), hashlib.sha256(b"\0" * GIB).hexdigest())

    def test_caller_closing_stdin_still_gets_output(self):
        self.assertCall(self.call("work", "vault", "test.HalfClose", b"12345"), 0, b"5\n")

    def test_service_closing_stdout_still_gets_stdin(self):
        # The local program reads the service's stdout to EOF, then writes:
        # it would hang if the service's early EOF were not passed on.
        r = self.call("work", "vault", "test.CloseOut", args=["/bin/sh", "-c", "cat >/dev/null; echo late"],
                      timeout=30)
        self.assertCall(r, 0)
        def written():
            if not os.path.exists(self.closeout_file):
                return False
            with open(self.closeout_file) as f:
                return f.read() == "late\n"
        wait_for(written)

    def test_256_concurrent_calls_from_one_qube(self):
        work = self.world.qubes["work"]
        procs = []
        for i in range(256):
            cmd = [self.world.bin("qrexec-client-vm"), "--agent-socket=" + work.agent_socket, "vault",
                   "test.Echo+n%d" % i]
            procs.append(subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE))
        for i, p in enumerate(procs):
            p.stdin.write(b"call %d\n" % i)
            p.stdin.close()
        failures = []
        for i, p in enumerate(procs):
            out = p.stdout.read()
            code = p.wait(120)
            err = p.stderr.read()
            p.stdout.close()
            p.stderr.close()
            want = b"svc=test.Echo+n%d src=work arg=n%d argenv=n%d\ncall %d\n" % (i, i, i, i)
            if code != 3 or out != want:
                failures.append((i, code, out, err))
        self.assertEqual(failures, [], self.world.logs())

    # --- admin side ----------------------------------------------------------

    def test_qrexec_client_runs_command_in_qube(self):
        r = subprocess.run([self.world.bin("qrexec-client"), "--socket-dir=" + self.world.socket_dir, "-d", "vault",
                            "DEFAULT:echo as $(id -un); cat; exit 4"], input=b"in\n", capture_output=True,
                           timeout=30)
        self.assertCall(r, 4, b"as %s\nin\n" % self.world.user.encode())

    def test_call_to_itself_by_uuid(self):
        # As Qubes' policy: a call to the caller's own name is refused
        # (loopback), the same qube spelled by uuid is allowed and runs.
        vault = self.world.qubes["vault"]
        self.assertCall(self.call("vault", "vault", "test.Self"), 126, b"")
        self.assertCall(self.call("vault", "uuid:" + vault.uuid, "test.Self"), 0, b"self from vault\n")

    def test_qrexec_client_reaches_a_qube_by_uuid(self):
        vault = self.world.qubes["vault"]
        r = subprocess.run([self.world.bin("qrexec-client"), "--socket-dir=" + self.world.socket_dir,
                            "-d", "uuid:" + vault.uuid, "DEFAULT:echo by-uuid"], capture_output=True, timeout=30)
        self.assertCall(r, 0, b"by-uuid\n")

    def test_qrexec_client_just_exec(self):
        marker = os.path.join(self.world.root, "just-exec")
        r = subprocess.run([self.world.bin("qrexec-client"), "--socket-dir=" + self.world.socket_dir, "-d", "vault",
                            "-e", "DEFAULT:touch " + marker], capture_output=True, timeout=30)
        self.assertCall(r, 0, b"")
        wait_for(lambda: os.path.exists(marker))

    # --- hostile peers ---------------------------------------------------------

    def test_garbage_on_agent_socket_does_not_hurt_the_agent(self):
        for junk in (b"\xff" * 64, msg(0x999, b"x" * 10), struct_len_bomb()):
            s = unix_connect(self.world.qubes["work"].agent_socket)
            s.sendall(junk)
            s.settimeout(5)
            try:
                s.recv(100)
            except (socket.timeout, ConnectionError):
                pass
            s.close()
        self.assertCall(self.call("work", "vault", "test.Echo", b"still\n"), 3)

    def test_disconnect_mid_call_leaves_others_working(self):
        work = self.world.qubes["work"]
        cmd = [self.world.bin("qrexec-client-vm"), "--agent-socket=" + work.agent_socket, "vault", "test.Sleep"]
        with subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as p:
            time.sleep(0.5)
            p.kill()
        self.assertCall(self.call("work", "vault", "test.Echo", b"after\n"), 3)

    def evil_agent(self):
        """Plays the evil qube's agent: starts its daemon, says HELLO;
        returns the control channel."""
        evil = self.world.qubes["evil"]
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        path = os.path.join(evil.vchan_dir, "vchan.9.0.512.sock")
        if os.path.exists(path):
            os.unlink(path)
        listener.bind(path)
        listener.listen(1)
        evil.start_daemon(wait=False)
        listener.settimeout(10)
        conn, _ = listener.accept()
        listener.close()
        conn.sendall(hello(4))
        t, payload = recv_msg(conn)
        self.assertEqual(t, MSG["HELLO"])
        return evil, conn

    def test_hostile_agent_gets_refusals_for_bad_requests(self):
        evil, conn = self.evil_agent()
        with conn:
            # Refused as Qubes refuses them, the ident echoed byte for byte,
            # with calls from other qubes in between.
            bad = [(trigger4("", "vault", "bad/ident!", "test.Echo"), fixed("bad/ident!", 32)),
                   (msg("TRIGGER_SERVICE4", fixed("", 64) + fixed("vault", 64) + b"a\0b" + b"\0" * 29 + b"x\0"),
                    b"a\0b" + b"\0" * 29),
                   (msg("TRIGGER_SERVICE4", fixed("", 64) + fixed("vault", 64) + fixed("id", 32) + b"x"),
                    fixed("id", 32)),  # service name without its NUL
                   (trigger4("", "vault", "id2", "+arg"), fixed("id2", 32))]
            for request, _ in bad:
                conn.sendall(request)
            for i in range(1000):
                conn.sendall(trigger4("", "vault", "flood%d" % i, "test.Denied"))
            self.assertCall(self.call("work", "vault", "test.Echo", b"during flood\n"), 3)
            for _, ident in bad:
                self.assertEqual(recv_msg(conn), (MSG["SERVICE_REFUSED"], ident))
            for i in range(1000):
                t, payload = recv_msg(conn, timeout=60)
                self.assertEqual(t, MSG["SERVICE_REFUSED"])
            conn.sendall(trigger4("", "vault", "last", "test.Denied"))
            self.assertEqual(recv_msg(conn), (MSG["SERVICE_REFUSED"], fixed("last", 32)))
        evil.stop()

    def test_hostile_agent_stops_only_its_own_daemon(self):
        # What Qubes' daemon exits on stops this qube's daemon (aeried then
        # stops the qube), and nobody else's.
        for garbage in (msg(0x999, b"unknown type"),
                        msg("TRIGGER_SERVICE4", b"\xff" * 100),  # too short for its fields
                        msg("TRIGGER_SERVICE4", fixed("", 64) + fixed("vault", 64) + fixed("1", 32) +
                            b"x" * 70000 + b"\0"),  # service name over the limit
                        msg("TRIGGER_SERVICE", b"\0" * 128),  # v2 message on a v4 channel
                        msg("CONNECTION_TERMINATED", b"\0" * 8),  # invalid port
                        msg("CONNECTION_TERMINATED", b"\0" * 9),
                        b"\x13\x02\0\0\xff\xff\xff\x7f"):  # a length it cannot skip
            evil, conn = self.evil_agent()
            with conn:
                conn.sendall(garbage)
                conn.settimeout(10)
                self.assertEqual(conn.recv(10), b"", garbage[:16])
            self.assertNotEqual(evil.daemon.wait(10), 0)
            self.assertFalse(os.path.exists(os.path.join(self.world.socket_dir, "qrexec.evil")))
            self.assertCall(self.call("work", "vault", "test.Echo", b"after\n"), 3)


def struct_len_bomb():
    return struct.pack("<II", 0x213, 0x7fffffff)


if __name__ == "__main__":
    BUILD = sys.argv.pop(1)
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print("%d passed, %d failed" % (result.testsRun - failed, failed))
    sys.exit(1 if failed else 0)
