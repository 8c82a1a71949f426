"""A hostile qube against the host's qrexec daemons, without real qubes
(qrexec_harness: per qube a vchan folder, agent and daemon on one host):

- root in a qube replaces its agent's socket by a symlink (to a root-only
  host socket, to another qube's agent socket) and drops the link: the daemon
  never connects through it, retries with a growing wait, logs a bounded
  number of lines, and connects again once a real agent listens;
- a fake agent that closes before HELLO: callers fail at once with a clear
  error, and once qrexec_timeout passes the daemon gives up (exit 4, which
  aeried watches);
- 300 long calls from one qube to a target: 64 run, the rest wait their
  turn, and another qube's call to it and dom0's qrexec-client still succeed;
- the sockets the host makes have the narrowest mode.

Run: python3 qrexec_hostile_test.py BUILD_DIR"""

import os
import select
import socket
import stat
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qrexec_harness import World, wait_for  # noqa: E402

BUILD = None

POLICY = """
test.Echo        *       a      b      allow
test.Echo        *       b      a      allow
test.Hold        *       a      b      allow
test.Hold        *       c      b      allow
*                *       @anyvm @anyvm deny
"""


def control_socket(qube):
    return os.path.join(qube.vchan_dir, "vchan.%d.0.512.sock" % qube.domid)


def read_log(world, name):
    try:
        with open(os.path.join(world.log_dir, name + ".log"), "rb") as f:
            return f.read()
    except FileNotFoundError:
        return b""


def log_lines(world, name):
    return read_log(world, name).count(b"\n")


def qrexec_client(world, target, cmd, timeout=20):
    return subprocess.run([world.bin("qrexec-client"), "--socket-dir=" + world.socket_dir, "-d", target, cmd],
                          capture_output=True, timeout=timeout)


class QrexecHostile(unittest.TestCase):
    def setUp(self):
        self.world = World(BUILD, POLICY, [("a", 2), ("b", 3), ("c", 4)])
        for q in self.world.qubes.values():
            q.add_service("test.Echo", "#!/bin/sh\necho echo-$QREXEC_REMOTE_DOMAIN\n")

    def tearDown(self):
        self.world.stop()
        self.world.cleanup()

    def drop_agent(self, qube):
        """Root in the qube stops its agent (the daemon's link drops)."""
        qube.agent.kill()
        qube.agent.wait(10)
        wait_for(lambda: b"has disconnected" in read_log(self.world, "daemon-" + qube.name))

    def test_planted_symlink_is_never_followed(self):
        w = self.world
        w.start(["a", "b"])
        a, b = w.qubes["a"], w.qubes["b"]
        self.assertEqual(a.call("b", "test.Echo").stdout, b"echo-a\n")

        # A socket only the host's root may use.
        secret = os.path.join(w.root, "secret")
        os.makedirs(secret, mode=0o700)
        victim = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        victim.bind(os.path.join(secret, "root-only.sock"))
        victim.listen(64)

        self.drop_agent(a)
        lines_at_drop = log_lines(w, "daemon-a")
        os.unlink(control_socket(a))
        os.symlink(os.path.join(secret, "root-only.sock"), control_socket(a))
        time.sleep(1.5)
        readable, _, _ = select.select([victim], [], [], 0)
        self.assertEqual(readable, [], "the daemon connected to the root-only socket through the symlink")
        # Callers are told at once, not kept waiting for the agent.
        r = qrexec_client(w, "a", "DEFAULT:true")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"qrexec agent of a is not connected", r.stderr)
        r = b.call("a", "test.Echo", timeout=20)
        self.assertEqual(r.returncode, 126, r)
        # Then a link to another qube's agent socket.
        os.unlink(control_socket(a))
        os.symlink(os.path.relpath(control_socket(b), a.vchan_dir), control_socket(a))
        time.sleep(1.5)

        readable, _, _ = select.select([victim], [], [], 0)
        self.assertEqual(readable, [], "the daemon connected to the root-only socket through the symlink")
        with open(os.path.join(w.log_dir, "agent-b.log"), "rb") as f:
            self.assertNotIn(b"second daemon connection", f.read())
        self.assertIsNone(a.daemon.poll(), w.logs())
        # Bounded: a handful of lines for 3 s of a planted link, not thousands.
        self.assertLess(log_lines(w, "daemon-a") - lines_at_drop, 30, w.logs())
        with open(os.path.join(w.log_dir, "daemon-a.log"), "rb") as f:
            self.assertIn(b"symbolic link (refused)", f.read())

        # The qube's real agent comes back: the daemon reconnects by itself.
        os.unlink(control_socket(a))
        a.start_agent()
        wait_for(lambda: b.call("a", "test.Echo").stdout == b"echo-b\n", timeout=15)
        victim.close()

    def test_fake_agent_closing_before_hello(self):
        w = self.world
        w.qubes["a"].daemon_env = {"QREXEC_STARTUP_TIMEOUT": "3"}
        w.start(["a", "b"])
        a, b = w.qubes["a"], w.qubes["b"]
        self.drop_agent(a)
        lines_at_drop = log_lines(w, "daemon-a")

        os.unlink(control_socket(a))
        fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        fake.bind(control_socket(a))
        fake.listen(64)
        accepted = []
        stop = threading.Event()

        def serve():
            fake.settimeout(0.1)
            while not stop.is_set():
                try:
                    conn, _ = fake.accept()
                except socket.timeout:
                    continue
                except OSError:
                    return
                accepted.append(1)
                conn.close()  # before HELLO
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        try:
            wait_for(lambda: accepted, timeout=10)
            # The daemon is still there (not exited on the first bad agent)
            # and turns callers away at once with a clear error.
            self.assertIsNone(a.daemon.poll(), w.logs())
            r = qrexec_client(w, "a", "DEFAULT:true")
            self.assertIn(b"qrexec agent of a is not connected", r.stderr)
            self.assertEqual(b.call("a", "test.Echo", timeout=20).returncode, 126)
            # After qrexec_timeout it gives up: exit 4 (aeried then stops the qube).
            self.assertEqual(a.daemon.wait(20), 4, w.logs())
        finally:
            stop.set()
            t.join(5)
            fake.close()
        with open(os.path.join(w.log_dir, "daemon-a.log"), "rb") as f:
            self.assertIn(b"did not come back within 3 seconds", f.read())
        self.assertLess(len(accepted), 20)  # attempts spaced out, not a busy loop
        self.assertLess(log_lines(w, "daemon-a") - lines_at_drop, 30, w.logs())
        self.assertFalse(os.path.exists(os.path.join(w.socket_dir, "qrexec.a")))

    def test_one_caller_cannot_take_all_data_ports(self):
        w = self.world
        b = w.qubes["b"]
        started = os.path.join(w.root, "started")
        b.add_service("test.Hold", "#!/bin/sh\necho $$ >> %s\nread line\necho held-$QREXEC_REMOTE_DOMAIN\n" % started)
        w.start()
        a, c = w.qubes["a"], w.qubes["c"]
        calls = []
        try:
            for _ in range(300):
                calls.append(subprocess.Popen(
                    [w.bin("qrexec-client-vm"), "--agent-socket=" + a.agent_socket, "b", "test.Hold"],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=a.env()))

            def started_calls():
                try:
                    with open(started) as f:
                        return len(f.read().split())
                except FileNotFoundError:
                    return 0
            # a's first 64 calls run; the rest wait for a port of their own.
            wait_for(lambda: started_calls() >= 64, timeout=180)

            # Another qube's call to the same target, and dom0's, still go.
            r = c.call("b", "test.Hold", input_=b"go\n", timeout=60)
            self.assertEqual((r.returncode, r.stdout), (0, b"held-c\n"), w.logs())
            r = qrexec_client(w, "b", "DEFAULT:echo from-dom0", timeout=60)
            self.assertEqual((r.returncode, r.stdout), (0, b"from-dom0\n"), r.stderr)
            self.assertEqual(started_calls(), 64 + 1)  # a's 64 and c's one
            self.assertTrue(all(p.poll() is None for p in calls), "a call of a was refused instead of waiting")
            with open(os.path.join(w.log_dir, "daemon-b.log"), "rb") as f:
                self.assertIn(b"already holds 64 data ports", f.read())
            # As a's calls end, its waiting ones get ports: all 300 are served.
            for p in calls:
                p.stdin.write(b"end\n")
                p.stdin.close()
            for p in calls:
                self.assertEqual(p.wait(180), 0)
            self.assertEqual(started_calls(), 300 + 1)
        finally:
            for p in calls:
                if p.poll() is None and not p.stdin.closed:
                    try:
                        p.stdin.write(b"end\n")
                        p.stdin.close()
                    except OSError:
                        pass
            for p in calls:
                try:
                    p.wait(60)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
                if p.stdin and not p.stdin.closed:
                    p.stdin.close()
                p.stdout.close()

    def test_host_sockets_have_the_narrowest_mode(self):
        w = self.world
        w.start(["a"])
        st = os.stat(os.path.join(w.socket_dir, "qrexec.2"))
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)
        st = os.stat(w.policy_socket)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600)


def main():
    global BUILD
    BUILD = sys.argv.pop(1) if len(sys.argv) > 1 else "build"
    unittest.main(verbosity=2)


if __name__ == "__main__":
    main()
