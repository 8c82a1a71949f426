"""A qube whose qrexec agent is gone, with real qubes (aerie_world): root in
the qube drops its agent's link to the host daemon (pidfd_getfd of the
agent's end, shutdown) and puts a fake agent that closes before HELLO in
place of the agent's socket. Callers (qvm-run) fail at once with a clear
error instead of hanging; once qrexec_timeout passes the daemon gives up and
aeried stops the qube (Halted, "crashed" in its log) instead of leaving
it "Running" with no way in. A qrexec daemon killed from outside is noticed
the same way.
Needs root (exit code 77 otherwise).
Run: python3 qrexec_agent_gone_test.py BUILD_DIR"""

import os
import signal
import sys

from aerie_world import WorldTest, run_tests, wait_for

# Run as root inside the qube: fake agent first, then the real one's link cut.
FAKE_AGENT = r'''
import ctypes, os, socket
d = "/run/qubes-vchan"
path = os.path.join(d, [n for n in os.listdir(d) if n.endswith(".0.512.sock")][0])
os.unlink(path)
fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
fake.bind(path)
fake.listen(64)
# The agent's end of its connection to the daemon: a socket named like the
# control socket that is not the listener.
libc = ctypes.CDLL(None, use_errno=True)
for pid in [p for p in os.listdir("/proc") if p.isdigit()]:
    try:
        if open("/proc/%s/comm" % pid).read().strip() != "qrexec-agent":
            continue
        pidfd = os.pidfd_open(int(pid))
        for fd in os.listdir("/proc/%s/fd" % pid):
            if not os.readlink("/proc/%s/fd/%s" % (pid, fd)).startswith("socket:"):
                continue
            got = libc.syscall(438, pidfd, int(fd), 0)  # pidfd_getfd
            if got < 0:
                continue
            s = socket.socket(fileno=got)
            if s.family == socket.AF_UNIX and s.getsockname() == path and \
                    not s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                s.shutdown(socket.SHUT_RDWR)
            s.detach()
            os.close(got)
    except OSError:
        pass
while True:
    conn, _ = fake.accept()
    conn.close()  # before HELLO
'''


class QrexecAgentGone(WorldTest):
    def state(self, name):
        return self.w.listed()[name]["state"]

    def test_fake_agent_after_the_link_drops(self):
        self.make_world()
        self.w.ok("admin.vm.property.Set", self.work, "qrexec_timeout", b"3")
        self.w.tool("qvm-start", self.work)
        self.w.run(self.work, "cat > /run/fake-agent.py", user="root", input=FAKE_AGENT)
        self.w.run(self.work, "setsid -f python3 /run/fake-agent.py </dev/null >/dev/null 2>&1", user="root")
        wait_for(lambda: b"has disconnected" in self.daemon_log(), 10, "the link to drop")

        # Callers are turned away at once, with a clear error.
        r = self.w.tool("qvm-run", "-p", self.work, "true", check=False, timeout=20)
        self.assertNotEqual(r.returncode, 0, self.daemon_log())
        self.assertIn("not connected", r.stderr)
        # After qrexec_timeout, the qube is stopped, not left "Running".
        wait_for(lambda: self.state(self.work) == "Halted", 30, "the qube to stop")
        self.assertEqual(self.events.wait(self.work, "domain-shutdown"), {})
        wait_for(lambda: "%s crashed" % self.work in self.w.log(), 10, "aeried to log the crash")
        self.assertIn("did not come back within 3 seconds", self.daemon_log().decode(errors="replace"))
        self.assertLess(self.daemon_log().count(b"\n"), 40)

    def test_killed_daemon_stops_its_qube(self):
        self.make_world()
        self.w.tool("qvm-start", self.work)
        with open(os.path.join(self.w.runtime, "qubes", self.work, "qrexec-daemon.pid")) as f:
            os.kill(int(f.read()), signal.SIGKILL)
        wait_for(lambda: self.state(self.work) == "Halted", 30, "the qube to stop")
        self.assertIn("qrexec daemon of %s exited" % self.work, self.w.log())

    def daemon_log(self):
        try:
            with open(os.path.join(self.w.runtime, "log", self.work + ".qrexec-daemon.log"), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return b""


if __name__ == "__main__":
    sys.exit(run_tests(sys.argv))
