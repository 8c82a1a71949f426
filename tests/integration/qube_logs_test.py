"""The host's logs against a hostile qube (docs/security.md, "Logs").

  flood     200 refused calls with a 60 KB argument from a qube: the qube's
            qrexec-daemon log and the policy daemon's log stay under their
            caps, every line is short and escaped, and once lines are let
            through again one says how many were suppressed.
  console   root in a qube takes PID 1's stdout (pidfd_getfd) and writes
            20 MB to it: the host's console log stays under its cap (one
            rotated copy besides); PID 1 holds a pipe, never the log file.
  remove    a removed qube's logs (and their rotated copies) are gone, and
            a disposable's once it is cleaned up.
  restart   what a qube writes to its console after aeried was killed and
            started again still reaches its console log (the log service
            that drains it outlives the aeried that started it).
Needs root. Run: python3 qube_logs_test.py BUILD_DIR"""

import os
import signal
import sys
import time

from aerie_world import PREFIX, WorldTest, run_tests, wait_for

QUBE_LOG_CAP = 1 << 20       # aeried's --qube-log-max-bytes default
POLICY_LOG_CAP = 8 << 20     # qrexec-policy-daemon's --log-max-bytes default
LONGEST_LINE = 2048          # log_safe bounds a line's text to 512 bytes, escaped at most 4 times over

# 200 refused calls, 8 callers at once (so that a slow host, a sanitizer
# build, still sends them faster than the logs let lines through).
FLOOD = r'''
A=$(head -c 60000 /dev/zero | tr '\0' A)
caller() {
  i=0
  while [ $i -lt 25 ]; do
    qrexec-client-vm dom0 "test.Denied+$A" </dev/null >/dev/null 2>&1
    i=$((i + 1))
  done
}
for c in 1 2 3 4 5 6 7 8; do caller & done
wait
echo flooded
'''

# Root in the qube: one line into PID 1's stdout (its console).
CONSOLE_MARK = r'''
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.syscall(438, libc.syscall(434, 1, 0), 1, 0)   # pidfd_getfd(pidfd_open(1), 1)
if fd < 0: sys.exit("pidfd_getfd: %d" % ctypes.get_errno())
import os; os.write(fd, sys.argv[1].encode() + b"\n")
'''

# Root in the qube: PID 1's stdout through pidfd_getfd, then 20 MB into it
# (stopped after 8 s by `timeout` when the host holds it back).
CONSOLE_WRITE = r'''
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
pidfd = libc.syscall(434, 1, 0)            # pidfd_open(1, 0)
if pidfd < 0: sys.exit("pidfd_open: %d" % ctypes.get_errno())
fd = libc.syscall(438, pidfd, 1, 0)        # pidfd_getfd(pidfd, 1, 0)
if fd < 0: sys.exit("pidfd_getfd: %d" % ctypes.get_errno())
print(os.readlink("/proc/self/fd/%d" % fd), flush=True)
block = b"X" * 65535 + b"\n"
for _ in range(320):
    os.write(fd, block)
'''


def log_path(w, name, kind):
    return os.path.join(w.runtime, "log", "%s.%s.log" % (name, kind))


def size(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def read(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


class QubeLogsTest(WorldTest):

    def assert_bounded(self, path, cap):
        for p in (path, path + ".1"):
            self.assertLessEqual(size(p), cap, p)
            for line in read(p).splitlines():
                self.assertLess(len(line), LONGEST_LINE, "%s: a line of %d bytes" % (p, len(line)))
                self.assertTrue(all(32 <= b < 127 for b in line), "%s: raw bytes in %r" % (p, line[:80]))

    def test_01_refused_call_flood_stays_bounded(self):
        self.make_world(("work",))
        self.w.start_policy_daemon("test.Other * @anyvm @anyvm deny\n")
        self.w.tool("qvm-start", self.work)
        t0 = time.monotonic()
        self.assertIn("flooded", self.w.run(self.work, FLOOD, user="root", timeout=300)[1])
        elapsed = time.monotonic() - t0

        daemon_log = log_path(self.w, self.work, "qrexec-daemon")
        policy_log = os.path.join(self.w.root, "policy-daemon.log")
        wait_for(lambda: b"refused" in read(daemon_log), 10, "the qrexec daemon's refusals")
        self.assert_bounded(daemon_log, QUBE_LOG_CAP)
        self.assert_bounded(policy_log, POLICY_LOG_CAP)
        lines = read(daemon_log).splitlines()
        refusals = [l for l in lines if b"refused" in l]
        self.assertTrue(any(b"...(+" in l for l in refusals), "the argument is not shown truncated")
        self.assertLess(len(refusals), 200, "every refusal was logged: no rate limit")
        # The limit's own terms: a burst of 20, then 5 lines a second.
        self.assertLessEqual(len(refusals), 20 + 5 * elapsed + 5,
                             "%d refusals logged in %.1f s" % (len(refusals), elapsed))

        # Let through again later: one line says how many were dropped meanwhile.
        time.sleep(1.5)
        self.w.run(self.work, "qrexec-client-vm dom0 test.Denied+again </dev/null", user="root", check=False)
        wait_for(lambda: b"similar messages suppressed" in read(daemon_log), 10,
                 "the count of suppressed lines in %s" % daemon_log)
        wait_for(lambda: b"similar messages suppressed" in read(policy_log), 10,
                 "the count of suppressed lines in %s" % policy_log)

    def test_02_console_write_through_pid1_stays_capped(self):
        self.make_world(("work",))
        self.w.tool("qvm-start", self.work)
        console = log_path(self.w, self.work, "console")
        _, fds, _ = self.w.run(self.work, "ls -l /proc/1/fd/", user="root")
        self.assertNotIn("console.log", fds)
        self.assertNotIn(self.w.root, fds)
        self.assertIn("pipe:", fds)

        rc, out, err = self.w.run(self.work, "timeout 8 python3 -c '%s'" % CONSOLE_WRITE, user="root",
                                  check=False, timeout=120)
        self.assertIn(rc, (0, 124), "%r %r" % (out, err))  # done, or held back by the host and stopped
        self.assertIn("pipe:", out)  # pidfd_getfd worked: it got a pipe
        self.assertNotIn("console.log", out)
        # The host holds back what it has not taken yet: stop the qube, its drainer ends with it.
        self.w.tool("qvm-shutdown", "--wait", self.work)
        self.assertLessEqual(size(console), QUBE_LOG_CAP)
        self.assertLessEqual(size(console + ".1"), QUBE_LOG_CAP)
        self.assertFalse(os.path.exists(console + ".2"))

    def test_03_removed_qube_logs_are_gone(self):
        self.make_world(("work",))
        self.w.tool("qvm-start", self.work)
        self.w.run(self.work, "echo hello from the console >/proc/1/fd/1", user="root", check=False)
        self.w.tool("qvm-shutdown", "--wait", self.work)
        logs = [log_path(self.w, self.work, kind) for kind in ("console", "qrexec-daemon")]
        for p in logs:
            self.assertTrue(os.path.exists(p), p)
        with open(logs[0] + ".1", "w") as f:  # as a rotation leaves it
            f.write("older\n")
        self.w.tool("qvm-remove", "-f", self.work)
        left = [p for p in logs + [logs[0] + ".1"] if os.path.exists(p)]
        self.assertEqual(left, [])

    def test_04_disposable_logs_go_at_its_cleanup(self):
        self.make_world(())
        dvm = PREFIX + "dvm"
        self.w.tool("qvm-create", "--template", self.tpl, "--label", "green", dvm)
        self.w.tool("qvm-prefs", dvm, "template_for_dispvms", "True")
        name = self.w.tool("qvm-run", "-p", "--dispvm=" + dvm, "hostname").stdout.strip()
        self.assertRegex(name, r"^disp[0-9]+$")
        wait_for(lambda: name not in self.w.listed(), 10, "the disposable removed")
        log_dir = os.path.join(self.w.runtime, "log")
        wait_for(lambda: not [f for f in os.listdir(log_dir) if f.startswith(name + ".")], 10,
                 "the logs of %s removed (left: %s)" % (name, os.listdir(log_dir)))

    def test_05_console_log_goes_on_across_a_daemon_restart(self):
        self.make_world(("work",))
        self.w.tool("qvm-start", self.work)
        console = log_path(self.w, self.work, "console")
        self.w.stop_daemon(signal.SIGKILL)
        self.w.start_daemon()
        mark = "written-after-the-restart"
        self.w.run(self.work, "python3 -c '%s' %s" % (CONSOLE_MARK, mark), user="root")
        wait_for(lambda: mark.encode() in read(console), 10, "the line in %s" % console)
        self.w.tool("qvm-shutdown", "--wait", self.work)


def main():
    return run_tests(sys.argv)


if __name__ == "__main__":
    sys.exit(main())
