"""Qubes that really run, end to end: aeried from this build (real sockets,
the ns backend, the file pool, aerie-qube-init, qrexec agents inside, a
qrexec daemon per qube on the host) driven through the qvm-* tools and the
raw Admin API. Every test has a state folder of its own and its own daemon,
and ends with everything stopped and nothing left behind: no mount under its
folder, no cgroup folder of its qubes under aeried's "aerie" group, no
process whose command line names its folder or that sits in one of its
qubes' cgroups (counted before and after; the test is the subreaper of what
aeried leaves, and reaps it as a host's init would).

  start        Running in qvm-ls, admin.vm.List, admin.vm.CurrentState and
               qvm-check; domain-pre-start then domain-start on admin.Events.
  run          qvm-run -p: the command's stdout, stderr, stdin and exit code;
               -u root.
  shutdown     --wait answers once Halted; domain-pre-shutdown and
               domain-shutdown; the qube's mounts, cgroups, processes (its
               qrexec daemon included), runtime folder and qrexec sockets gone.
  kill         the same after qvm-kill; kill and shutdown of a halted qube
               refused.
  pause        a counter inside stands still while Paused (domain-paused), and
               goes on after unpause (domain-unpaused).
  bad agent    an agent that exits at once, and one that never answers within
               qrexec_timeout: the start fails with a clear message, the qube
               is Halted, nothing is left.
  volumes      an AppVM's writes to / are gone after a restart, its /rw and
               /home stay; a TemplateVM's writes to its root stay (and AppVMs
               started later see them); an AppVM's writes never reach its
               template's root volume; the host's /usr is read-only inside.
  running      rename and remove refused while running (QubesVMNotHaltedError),
               allowed once halted; the renamed qube keeps its data.
  restart      kill -9 of aeried while two qubes run: both adopted as Running,
               qvm-run works; a qube whose init dies while aeried is down is
               Halted and cleaned up after the next start of aeried.
  qrexec       a call from one running qube to another with
               qrexec-client-vm, decided by qrexec-policy-daemon: allowed by
               one rule, refused (exit code 126, service not run) by others.
Needs root (exit code 77 otherwise).
Run: python3 lifecycle_test.py BUILD_DIR"""

import ctypes
import json
import os
import re
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
PREFIX = "t%d-" % (os.getpid() % 100000)  # qube names: cgroup folders are shared host-wide
GRACE = 5.0  # seconds leftovers get to go away after a qube halted

ECHO_SERVICE = """#!/bin/sh
echo "test.Echo in $(hostname) for $QREXEC_REMOTE_DOMAIN arg=$QREXEC_SERVICE_ARGUMENT"
echo "$QREXEC_REMOTE_DOMAIN" >> /tmp/test.Echo.calls
cat
"""


def bin_path(name):
    return os.path.join(BUILD, "bin", name)


def wait_for(pred, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(0.02)


# Our own children that subprocess reaps (aeried, the policy daemon).
OWN_CHILDREN = set()


def become_subreaper():
    """Orphans below us (a killed aeried's qubes, the qrexec daemons it
    detached) become our children, reaped at once as the host's init would
    be expected to; a zombie PID 1 would otherwise pass for a live one."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def reap_orphans():
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in OWN_CHILDREN:
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            if state == "Z" and int(ppid) == me:
                os.waitpid(int(entry), os.WNOHANG)
        except (OSError, IndexError, ValueError):
            pass


def ended(pid):
    """The process is gone or a zombie."""
    reap_orphans()
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def encode(method, dest="dom0", arg="", payload=b""):
    return ("%s%s dom0 name %s" % (method, "+" + arg if arg else "", dest)).encode() + b"\0" + payload


def exchange(path, data, timeout=60):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def own_cgroup_dirs():
    """The folders where aeried (our child) makes its "aerie" group: our own
    cgroup in every mounted hierarchy."""
    own = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            own[controllers] = path
    dirs = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            sep = fields.index("-")
            fstype, options = fields[sep + 1], fields[sep + 3].split(",")
            mount_point, root = fields[4], fields[3]
            if fstype == "cgroup2":
                path = own.get("")
            elif fstype == "cgroup":
                path = None
                for controllers, p in own.items():
                    if controllers and all(n in options for n in controllers.split(",")):
                        path = p
            else:
                continue
            if path is None:
                continue
            rel = os.path.relpath(path, root) if path.startswith(root) else path.lstrip("/")
            dirs.add(os.path.normpath(os.path.join(mount_point, rel)))
    return sorted(dirs)


class Events:
    """An admin.Events stream read on a thread; events collected in order."""

    def __init__(self, socket_path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(socket_path)
        self.sock.sendall(encode("admin.Events"))
        self.sock.shutdown(socket.SHUT_WR)
        self.events = []  # (subject, event, kwargs)
        self.cond = threading.Condition()
        self.error = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        buf = b""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
                while True:
                    parsed = self._parse(buf)
                    if parsed is None:
                        break
                    event, buf = parsed
                    with self.cond:
                        self.events.append(event)
                        self.cond.notify_all()
        except OSError as e:
            self.error = e
        with self.cond:
            self.cond.notify_all()

    @staticmethod
    def _parse(buf):
        """(event, rest of buf), or None while incomplete. An event is
        "1\\0SUBJECT\\0EVENT\\0(KEY\\0VALUE\\0)*\\0"."""
        if len(buf) < 2:
            return None
        if buf[:2] != b"1\0":
            raise AssertionError("event without its 1\\0 header: %r" % buf[:100])
        pos = 2

        def field():
            nonlocal pos
            end = buf.find(b"\0", pos)
            if end < 0:
                return None
            value, pos = buf[pos:end].decode(), end + 1
            return value

        subject, event = field(), None
        if subject is not None:
            event = field()
        if event is None:
            return None
        kwargs = {}
        while True:
            key = field()
            if key is None:
                return None
            if key == "":
                return (subject, event, kwargs), buf[pos:]
            value = field()
            if value is None:
                return None
            kwargs[key] = value

    def of(self, subject):
        with self.cond:
            return [(e, kw) for s, e, kw in self.events if s == subject]

    def wait(self, subject, event, timeout=10.0):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for s, e, kw in self.events:
                    if s == subject and e == event:
                        return kw
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError("no %s event for %s; got %r" % (event, subject, self.of(subject)))
                self.cond.wait(left)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(5)


class World:
    """One aeried with its own folder; the qvm-* tools pointed at it."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="aerie-lc-")
        os.chmod(self.root, 0o755)
        self.state = os.path.join(self.root, "state")
        self.socket = os.path.join(self.root, "qubesd.sock")
        self.internal = os.path.join(self.root, "qubesd.internal.sock")
        self.runtime = os.path.join(self.root, "run")
        self.qrexec_dir = os.path.join(self.root, "qubes")
        self.policy_socket = os.path.join(self.root, "policy.sock")
        self.policy_dir = os.path.join(self.root, "policy")
        self.log_path = os.path.join(self.root, "aeried.log")
        self.daemon = None
        self.policy_daemon = None
        self.bin_dir = None
        self.env = dict(os.environ, QUBESD_SOCKET=self.socket, QREXEC_SOCKET_DIR=self.qrexec_dir)
        self.env.pop("VCHAN_SOCKET_DIR", None)
        self.env.pop("VCHAN_DOMAIN", None)

    # --- processes -------------------------------------------------------------------------------

    def start_daemon(self, bin_dir=None):
        if bin_dir is not None:
            self.bin_dir = bin_dir
        argv = [bin_path("aeried"), "--state-dir", self.state, "--socket", self.socket,
                "--internal-socket", self.internal, "--runtime-dir", self.runtime,
                "--qrexec-socket-dir", self.qrexec_dir, "--policy-socket", self.policy_socket]
        if self.bin_dir:
            argv += ["--bin-dir", self.bin_dir]
        with open(self.log_path, "ab") as log:
            self.daemon = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        OWN_CHILDREN.add(self.daemon.pid)

        def up():
            if self.daemon.poll() is not None:
                raise AssertionError("aeried exited with %d:\n%s" % (self.daemon.returncode, self.log()))
            try:
                return exchange(self.socket, encode("admin.vm.List"), timeout=2).startswith(b"0\0")
            except OSError:
                return False
        wait_for(up, 20, "aeried to answer")

    def stop_daemon(self, sig=signal.SIGTERM):
        if self.daemon is None:
            return
        if self.daemon.poll() is None:
            self.daemon.send_signal(sig)
        try:
            self.daemon.wait(20)
        except subprocess.TimeoutExpired:
            self.daemon.kill()
            self.daemon.wait()
        self.daemon = None

    def start_policy_daemon(self, policy_text):
        os.makedirs(self.policy_dir, exist_ok=True)
        self.write_policy(policy_text)
        with open(os.path.join(self.root, "policy-daemon.log"), "ab") as log:
            self.policy_daemon = subprocess.Popen(
                [bin_path("qrexec-policy-daemon"), "--socket", self.policy_socket, "--path", self.policy_dir,
                 "--internal-socket", self.internal], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        OWN_CHILDREN.add(self.policy_daemon.pid)
        wait_for(lambda: os.path.exists(self.policy_socket), 10, "the policy daemon's socket")

    def write_policy(self, text):
        tmp = os.path.join(self.policy_dir, ".30-test.tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, os.path.join(self.policy_dir, "30-test.policy"))

    def stop_policy_daemon(self):
        if self.policy_daemon is not None:
            self.policy_daemon.terminate()
            try:
                self.policy_daemon.wait(10)
            except subprocess.TimeoutExpired:
                self.policy_daemon.kill()
                self.policy_daemon.wait()
            self.policy_daemon = None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def qube_log(self, name, kind="console"):
        try:
            with open(os.path.join(self.runtime, "log", "%s.%s.log" % (name, kind)), errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    # --- tools and the Admin API ------------------------------------------------------------------

    def tool(self, name, *args, input=None, check=True, timeout=120):
        argv = [bin_path(name)] + [str(a) for a in args]
        r = subprocess.run(argv, env=self.env, input=input, capture_output=True, timeout=timeout,
                           text=isinstance(input, str) or input is None)
        if check and r.returncode != 0:
            raise AssertionError("%s: exit %d\nstdout: %s\nstderr: %s\naeried log:\n%s" % (
                " ".join(argv), r.returncode, r.stdout, r.stderr, self.log()))
        return r

    def run(self, qube, command, user=None, input=None, check=True, timeout=60):
        """qvm-run -p; (exit code, stdout, stderr)."""
        args = ["-p", "--no-filter-escape-chars"]
        if user:
            args += ["-u", user]
        r = self.tool("qvm-run", *args, qube, command, input=input, check=False, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError("qvm-run %s %r: exit %d\nstdout: %s\nstderr: %s\nconsole: %s" % (
                qube, command, r.returncode, r.stdout, r.stderr, self.qube_log(qube)))
        return r.returncode, r.stdout, r.stderr

    def call(self, method, dest="dom0", arg="", payload=b""):
        return exchange(self.socket, encode(method, dest, arg, payload))

    def ok(self, method, dest="dom0", arg="", payload=b""):
        reply = self.call(method, dest, arg, payload)
        if not reply.startswith(b"0\0"):
            raise AssertionError("%s %s %s: %r" % (method, dest, arg, reply))
        return reply[2:].decode()

    def volume_path(self, qube, volume):
        info = self.ok("admin.vm.volume.Info", qube, volume)
        for line in info.splitlines():
            if line.startswith("path="):
                return line[5:]
        raise AssertionError("no path= in the %s volume's info of %s: %r" % (volume, qube, info))

    def uuid(self, qube):
        return self.listed()[qube]["uuid"]

    def listed(self):
        """admin.vm.List: name -> {class, state, uuid}."""
        out = {}
        for line in self.ok("admin.vm.List").splitlines():
            name, *rest = line.split(" ")
            out[name] = dict(kv.split("=", 1) for kv in rest)
        return out

    def qvm_ls_states(self):
        out = {}
        lines = self.tool("qvm-ls").stdout.splitlines()
        header = lines[0].split()
        for line in lines[1:]:
            fields = line.split()
            row = dict(zip(header, fields))
            out[row["NAME"]] = row["STATE"]
        return out

    def current_state(self, qube):
        return dict(kv.split("=", 1) for kv in self.ok("admin.vm.CurrentState", qube).split())

    def init_pid(self, qube):
        with open(os.path.join(self.runtime, "backend", qube, "qube.json")) as f:
            return json.load(f)["init_pid"]

    # --- what a world leaves behind ----------------------------------------------------------------

    def leftovers(self, qubes=None):
        """What is left: mounts under the folder; cgroup folders of our qubes
        under aeried's group ("aerie" or "aerie-HASH" in its own cgroup);
        processes (not zombies) whose command line names the folder or that
        sit in such a cgroup. With
        qubes ({name: uuid}), only what belongs to those qubes: mounts and
        command lines naming their uuid, their cgroups."""
        if qubes:
            cg_names = set(qubes)
            cg_pattern = re.compile(r"/aerie(-[0-9a-f]+)?/(%s)(/|$)" % "|".join(re.escape(n) for n in qubes), re.M)
            needles = list(qubes.values())
        else:
            cg_names = None
            cg_pattern = re.compile(r"/aerie(-[0-9a-f]+)?/%s[^/\n]*(/|$)" % re.escape(PREFIX), re.M)
            needles = [self.root]
        mounts = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                point = line.split()[4]
                if (point == self.root or point.startswith(self.root + "/")) and (
                        not qubes or any(n in point for n in needles)):
                    mounts.append(point)
        cgroups = []
        for d in own_cgroup_dirs():
            try:
                groups = [os.path.join(d, g) for g in os.listdir(d) if re.fullmatch(r"aerie(-[0-9a-f]+)?", g)]
            except OSError:
                continue
            for group in groups:
                try:
                    entries = os.listdir(group)
                except OSError:
                    continue
                for e in entries:
                    if os.path.isdir(os.path.join(group, e)) and (
                            e in cg_names if cg_names is not None else e.startswith(PREFIX)):
                        cgroups.append(os.path.join(group, e))
        procs = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == os.getpid():
                continue
            try:
                with open("/proc/%s/stat" % pid) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        continue
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                with open("/proc/%s/cgroup" % pid) as f:
                    cg = f.read()
            except (OSError, IndexError):
                continue
            if any(n in cmdline for n in needles) or cg_pattern.search(cg):
                procs.append("%s %s" % (pid, cmdline))
        return {"mounts": mounts, "cgroups": cgroups, "processes": procs}

    def wait_clean(self, qubes=None, timeout=GRACE):
        """Leftovers still there after up to `timeout` seconds ({} when none)."""
        deadline = time.monotonic() + timeout
        while True:
            reap_orphans()
            left = {k: v for k, v in self.leftovers(qubes).items() if v}
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.05)

    def force_clean(self):
        """Whatever is left goes: processes, mounts, cgroups."""
        for _ in range(3):
            left = self.leftovers()
            for p in left["processes"]:
                try:
                    os.kill(int(p.split()[0]), signal.SIGKILL)
                except OSError:
                    pass
            for m in reversed(left["mounts"]):
                subprocess.run(["umount", "-l", m], capture_output=True)
            time.sleep(0.2)
            for c in left["cgroups"]:
                for dirpath, dirnames, _ in sorted(os.walk(c, topdown=False), key=lambda t: -len(t[0])):
                    try:
                        os.rmdir(dirpath)
                    except OSError:
                        pass
        shutil.rmtree(self.root, ignore_errors=True)


class LifecycleTest(unittest.TestCase):
    """Each test: a fresh world with a host template TPL and AppVMs made on it."""

    def setUp(self):
        self.w = World()
        self.before = self.w.leftovers()
        self.assertEqual({k: v for k, v in self.before.items() if v}, {},
                         "leftovers of an earlier run with this pid's prefix")
        self.events = None
        self.tpl = PREFIX + "tpl"
        self.work = PREFIX + "work"
        self.vault = PREFIX + "vault"

    def make_world(self, appvms=("work",), bin_dir=None):
        self.w.start_daemon(bin_dir)
        self.w.tool("qvm-template", "create-from-host", self.tpl)
        for short in appvms:
            self.w.tool("qvm-create", "--template", self.tpl, "--label", "red", PREFIX + short)
        self.events = Events(self.w.socket)

    def tearDown(self):
        w = self.w
        problems = []
        try:
            if w.daemon is not None and w.daemon.poll() is None:
                r = w.tool("qvm-shutdown", "--all", "--wait", check=False, timeout=120)
                if r.returncode != 0:
                    problems.append("qvm-shutdown --all --wait: exit %d: %s" % (r.returncode, r.stderr.strip()))
            if self.events:
                self.events.close()
            w.stop_daemon()
            w.stop_policy_daemon()
            left = w.wait_clean()
            if left:
                problems.append("left behind %.0f s after every qube halted and the daemons stopped: %s" % (
                    GRACE, json.dumps(left, indent=1)))
        finally:
            w.force_clean()
        after = {k: v for k, v in w.leftovers().items() if v}
        if after:
            problems.append("cannot clean up: %s" % json.dumps(after, indent=1))
        self.assertEqual(problems, [])

    # --- helpers ------------------------------------------------------------------------------------

    def start(self, name):
        t0 = time.monotonic()
        self.w.tool("qvm-start", name)
        return time.monotonic() - t0

    def assertState(self, name, state):
        self.assertEqual(self.w.qvm_ls_states().get(name), state, "qvm-ls")
        self.assertEqual(self.w.listed()[name]["state"], state, "admin.vm.List")
        self.assertEqual(self.w.current_state(name)["power_state"], state, "admin.vm.CurrentState")

    def assertNothingLeftOf(self, name, what):
        uuid = self.w.uuid(name)
        qid = self.w.ok("admin.vm.property.Get", name, "qid").split()[-1]
        left = self.w.wait_clean({name: uuid})
        self.assertEqual(left, {}, "%s: still there %.0f s after %s halted" % (what, GRACE, name))
        self.assertFalse(os.path.exists(os.path.join(self.w.runtime, "qubes", name)), "runtime folder")
        self.assertFalse(os.path.exists(os.path.join(self.w.runtime, "backend", name)), "backend record")
        for link in ("qrexec." + name, "qrexec.uuid:" + uuid, "qrexec." + qid):
            self.assertFalse(os.path.lexists(os.path.join(self.w.qrexec_dir, link)), link)

    # --- start, run ----------------------------------------------------------------------------------

    def test_01_start_is_running_with_events(self):
        self.make_world()
        self.assertState(self.work, "Halted")
        elapsed = self.start(self.work)
        self.assertState(self.work, "Running")
        # What the leftover checks look for is there while it runs.
        running = self.w.leftovers({self.work: self.w.uuid(self.work)})
        self.assertGreaterEqual(len(running["mounts"]), 2, running)      # its root view and private volume
        self.assertGreaterEqual(len(running["cgroups"]), 1, running)
        self.assertGreaterEqual(len(running["processes"]), 3, running)   # init, agent, qrexec daemon
        self.assertEqual(self.w.tool("qvm-check", "--running", self.work, check=False).returncode, 0)
        self.assertEqual([e for e, _ in self.events.of(self.work)][:2], ["domain-pre-start", "domain-start"])
        # The template stays halted: an AppVM's start does not start it.
        self.assertState(self.tpl, "Halted")
        # Starting a running qube is no error (as Qubes), and changes nothing.
        self.w.tool("qvm-start", self.work, check=False)
        self.assertEqual(self.w.ok("admin.vm.Start", self.work), "")
        self.assertEqual([e for e, _ in self.events.of(self.work)].count("domain-start"), 1)
        # Running means the agent answers: a call goes through at once.
        rc, out, _ = self.w.run(self.work, "hostname")
        self.assertEqual((rc, out), (0, self.work + "\n"))
        self.assertLess(elapsed, 10)

    def test_02_run_passes_output_input_and_exit_code(self):
        self.make_world()
        self.start(self.work)
        rc, out, err = self.w.run(self.work, "echo out; echo err >&2; exit 7", check=False)
        self.assertEqual((rc, out), (7, "out\n"))
        self.assertIn("err", err)
        rc, out, _ = self.w.run(self.work, "tr a-z A-Z", input="hello qube\n")
        self.assertEqual((rc, out), (0, "HELLO QUBE\n"))
        rc, out, _ = self.w.run(self.work, "id -u; id -un")
        self.assertEqual(out.split(), ["1000", "user"])
        rc, out, _ = self.w.run(self.work, "id -u", user="root")
        self.assertEqual(out, "0\n")
        # The qube's PID 1 is Aerie's init; the agent runs under it.
        rc, out, _ = self.w.run(self.work, "cat /proc/1/cmdline | tr '\\0' ' '")
        self.assertIn("aerie-qube-init", out)
        # qvm-run without -p: exit code only.
        r = self.w.tool("qvm-run", self.work, "exit 3", check=False)
        self.assertEqual(r.returncode, 3)
        # A halted qube is started by qvm-run (autostart), as in Qubes.
        self.w.tool("qvm-shutdown", "--wait", self.work)
        rc, out, _ = self.w.run(self.work, "echo again")
        self.assertEqual(out, "again\n")
        self.assertState(self.work, "Running")

    # --- shutdown, kill ------------------------------------------------------------------------------

    def test_03_shutdown_wait_halts_and_leaves_nothing(self):
        self.make_world()
        self.start(self.work)
        self.w.run(self.work, "sleep 1000 </dev/null >/dev/null 2>&1 & echo started")
        pid = self.w.init_pid(self.work)
        self.w.tool("qvm-shutdown", "--wait", self.work)
        # --wait answers once it is Halted, not before.
        self.assertState(self.work, "Halted")
        kw = self.events.wait(self.work, "domain-shutdown")
        events = [e for e, _ in self.events.of(self.work)]
        self.assertLess(events.index("domain-pre-shutdown"), events.index("domain-shutdown"))
        self.assertNotEqual(kw.get("reason"), "crashed")
        wait_for(lambda: ended(pid), 5, "PID 1 to end")
        self.assertNothingLeftOf(self.work, "after qvm-shutdown --wait")
        # The shutdown of a halted qube is an error of the API, which
        # qvm-shutdown passes over (as Qubes'); a second cycle works.
        self.assertTrue(self.w.call("admin.vm.Shutdown", self.work).startswith(b"2\0QubesVMNotStartedError\0"))
        self.w.tool("qvm-shutdown", "--wait", self.work)
        self.assertState(self.work, "Halted")
        self.start(self.work)
        self.assertEqual(self.w.run(self.work, "echo back")[1], "back\n")
        self.w.tool("qvm-shutdown", "--wait", self.work)
        self.assertNothingLeftOf(self.work, "after the second qvm-shutdown --wait")

    def test_04_kill_halts_and_leaves_nothing(self):
        self.make_world()
        self.start(self.work)
        self.w.run(self.work, "sleep 1000 </dev/null >/dev/null 2>&1 &", user="root")
        self.w.tool("qvm-kill", self.work)
        wait_for(lambda: self.w.listed()[self.work]["state"] == "Halted", 10, "Halted after kill")
        self.assertState(self.work, "Halted")
        self.events.wait(self.work, "domain-shutdown")
        self.assertNothingLeftOf(self.work, "after qvm-kill")
        reply = self.w.call("admin.vm.Kill", self.work)
        self.assertTrue(reply.startswith(b"2\0QubesVMNotStartedError\0") or
                        reply.startswith(b"2\0QubesVMNotRunningError\0"), reply)
        self.assertState(self.work, "Halted")

    # --- pause ----------------------------------------------------------------------------------------

    def test_05_pause_stops_a_counter_and_unpause_resumes(self):
        self.make_world()
        self.start(self.work)
        count = os.path.join(self.w.volume_path(self.work, "private"), "count")
        self.w.run(self.work, "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /rw/count.new;"
                              " mv /rw/count.new /rw/count; sleep 0.01; done' </dev/null >/dev/null 2>&1 &", user="root")

        def value():
            try:
                with open(count) as f:
                    return int(f.read().strip() or 0)
            except (OSError, ValueError):
                return 0
        wait_for(lambda: value() > 20, 10, "the counter inside")
        self.w.tool("qvm-pause", self.work)
        self.assertState(self.work, "Paused")
        self.events.wait(self.work, "domain-paused")
        a = value()
        time.sleep(0.7)
        self.assertEqual(value(), a, "the counter moved while paused")
        self.assertEqual(self.w.tool("qvm-check", "--paused", self.work, check=False).returncode, 0)
        # Pausing twice is refused; unpausing a running qube too.
        self.assertNotEqual(self.w.tool("qvm-pause", self.work, check=False).returncode, 0)
        self.w.tool("qvm-unpause", self.work)
        self.events.wait(self.work, "domain-unpaused")
        self.assertState(self.work, "Running")
        wait_for(lambda: value() > a + 20, 10, "the counter after unpause")
        self.assertNotEqual(self.w.tool("qvm-unpause", self.work, check=False).returncode, 0)
        self.assertEqual(self.w.run(self.work, "echo awake")[1], "awake\n")
        # A paused qube shuts down too.
        self.w.tool("qvm-pause", self.work)
        self.w.tool("qvm-shutdown", "--wait", self.work)
        self.assertState(self.work, "Halted")
        self.assertNothingLeftOf(self.work, "after shutdown of a paused qube")

    # --- starts that fail ------------------------------------------------------------------------------

    def broken_bin_dir(self):
        """Aerie's programs, with an agent that fails at once in qubes named
        *bad and never answers in others."""
        d = os.path.join(self.w.root, "bin")
        os.makedirs(d)
        for name in os.listdir(os.path.join(BUILD, "bin")):
            if name == "qrexec-agent":
                continue
            src = bin_path(name)
            if name == "aerie-qube-init":
                shutil.copy2(src, os.path.join(d, name))  # seen inside the qube
            else:
                os.symlink(src, os.path.join(d, name))    # run on the host
        with open(os.path.join(d, "qrexec-agent"), "w") as f:
            f.write("#!/bin/sh\ncase $(hostname) in\n"
                    "  *bad) echo 'qrexec-agent: broken on purpose' >&2; exit 1 ;;\n"
                    "  *) exec sleep 1000 ;;\nesac\n")
        os.chmod(os.path.join(d, "qrexec-agent"), 0o755)
        os.chmod(d, 0o755)
        return d

    def test_06_start_with_a_broken_agent_fails_cleanly(self):
        self.make_world(appvms=("bad", "mute"), bin_dir=self.broken_bin_dir())
        bad, mute = PREFIX + "bad", PREFIX + "mute"
        r = self.w.tool("qvm-start", bad, check=False)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Start failed", r.stderr)
        self.assertIn("stopped before its qrexec agent started", r.stderr)
        self.assertIn("broken on purpose", r.stderr)  # the console's last lines
        self.assertState(bad, "Halted")
        self.assertEqual(self.w.tool("qvm-check", "--running", bad, check=False).returncode, 1)
        self.assertNothingLeftOf(bad, "after the failed start")
        self.assertEqual([e for e, _ in self.events.of(bad)][0], "domain-pre-start")
        self.assertNotIn("domain-start", [e for e, _ in self.events.of(bad)])

        # An agent that never says hello: qrexec_timeout, then the qube goes.
        self.w.ok("admin.vm.property.Set", mute, "qrexec_timeout", b"2")
        t0 = time.monotonic()
        r = self.w.tool("qvm-start", mute, check=False)
        elapsed = time.monotonic() - t0
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("Cannot connect to qrexec agent for 2 seconds", r.stderr)
        self.assertGreaterEqual(elapsed, 1.9)
        self.assertLess(elapsed, 10)
        wait_for(lambda: self.w.listed()[mute]["state"] == "Halted", 10, "Halted after the timeout")
        self.assertState(mute, "Halted")
        self.assertNotIn("domain-start", [e for e, _ in self.events.of(mute)])
        self.assertNothingLeftOf(mute, "after the start that timed out")

    # --- volumes ---------------------------------------------------------------------------------------

    def test_07_appvm_root_is_volatile_rw_and_home_persist(self):
        self.make_world()
        self.start(self.work)
        self.w.run(self.work, "echo root-write > /etc/aerie-root-marker && echo var > /var/aerie-var-marker &&"
                              " echo rw > /rw/aerie-rw-marker", user="root")
        self.w.run(self.work, "echo home > /home/user/aerie-home-marker")
        rc, out, _ = self.w.run(self.work, "cat /etc/aerie-root-marker /home/user/aerie-home-marker")
        self.assertEqual(out, "root-write\nhome\n")
        self.w.tool("qvm-shutdown", "--wait", self.work)
        self.start(self.work)
        rc, out, _ = self.w.run(self.work, "for f in /etc/aerie-root-marker /var/aerie-var-marker"
                                           " /rw/aerie-rw-marker /home/user/aerie-home-marker; do"
                                           " if [ -e $f ]; then echo \"$f $(cat $f)\"; else echo \"$f gone\"; fi;"
                                           " done")
        self.assertEqual(out.splitlines(), ["/etc/aerie-root-marker gone", "/var/aerie-var-marker gone",
                                            "/rw/aerie-rw-marker rw", "/home/user/aerie-home-marker home"])
        # And on the host: private holds them, the template's root does not.
        private = self.w.volume_path(self.work, "private")
        self.assertTrue(os.path.exists(os.path.join(private, "aerie-rw-marker")))
        self.assertTrue(os.path.exists(os.path.join(private, "home", "user", "aerie-home-marker")))
        self.assertFalse(os.path.exists(os.path.join(self.w.volume_path(self.tpl, "root"), "etc",
                                                     "aerie-root-marker")))

    def test_08_template_root_writes_persist(self):
        self.make_world()
        self.start(self.tpl)
        self.w.run(self.tpl, "echo template-write > /etc/aerie-tpl-marker", user="root")
        self.w.tool("qvm-shutdown", "--wait", self.tpl)
        self.assertNothingLeftOf(self.tpl, "after the template's shutdown")
        self.start(self.tpl)
        self.assertEqual(self.w.run(self.tpl, "cat /etc/aerie-tpl-marker")[1], "template-write\n")
        self.w.tool("qvm-shutdown", "--wait", self.tpl)
        root = self.w.volume_path(self.tpl, "root")
        with open(os.path.join(root, "etc", "aerie-tpl-marker")) as f:
            self.assertEqual(f.read(), "template-write\n")
        # An AppVM started afterwards sees its template's root as it now is.
        self.start(self.work)
        self.assertEqual(self.w.run(self.work, "cat /etc/aerie-tpl-marker")[1], "template-write\n")

    def test_09_appvm_cannot_write_its_template_root(self):
        self.make_world()
        root = self.w.volume_path(self.tpl, "root")
        with open(os.path.join(root, "etc", "hostname"), "rb") as f:
            hostname_before = f.read()
        listing_before = sorted(os.listdir(os.path.join(root, "etc")))
        self.start(self.work)
        rc, out, err = self.w.run(
            self.work,
            "echo evil > /etc/aerie-evil; echo evil >> /etc/hostname; rm -f /etc/hosts; mkdir /aerie-evil-dir;"
            " for p in /usr/aerie-evil /usr/bin/aerie-evil; do touch $p 2>/dev/null && echo \"$p written\";"
            " done; grep -c . /proc/self/mountinfo >/dev/null; echo done", user="root")
        self.assertEqual(out.splitlines()[-1], "done")
        self.assertNotIn("written", out)  # the host's /usr is read-only inside
        # The writes landed in the qube's own view only.
        self.assertEqual(self.w.run(self.work, "cat /etc/aerie-evil")[1], "evil\n")
        self.assertFalse(os.path.exists(os.path.join(root, "etc", "aerie-evil")))
        self.assertFalse(os.path.exists(os.path.join(root, "aerie-evil-dir")))
        self.assertFalse(os.path.exists("/usr/aerie-evil"))
        with open(os.path.join(root, "etc", "hostname"), "rb") as f:
            self.assertEqual(f.read(), hostname_before)
        self.assertEqual(sorted(os.listdir(os.path.join(root, "etc"))), listing_before)
        # No mount inside is of the template's root volume folder itself.
        rc, out, _ = self.w.run(self.work, "grep -c %s /proc/self/mountinfo" % self.w.uuid(self.tpl),
                                check=False)
        self.assertEqual(out, "0\n")
        # The template, started afterwards, has none of it.
        self.w.tool("qvm-shutdown", "--wait", self.work)
        self.start(self.tpl)
        rc, out, _ = self.w.run(self.tpl, "ls /etc/aerie-evil /aerie-evil-dir 2>&1; cat /etc/hostname")
        self.assertIn("No such file", out)
        self.assertTrue(out.endswith(hostname_before.decode()), out)

    # --- refused while running -------------------------------------------------------------------------

    def test_10_rename_and_remove_refused_while_running(self):
        self.make_world()
        self.start(self.work)
        self.w.run(self.work, "echo kept > /home/user/kept")
        reply = self.w.call("admin.vm.property.Set", self.work, "name", (PREFIX + "renamed").encode())
        self.assertEqual(reply, b"2\0QubesVMNotHaltedError\0\0Domain is not powered off: '%s'\0"
                         % self.work.encode())
        reply = self.w.call("admin.vm.Remove", self.work)
        self.assertEqual(reply, b"2\0QubesVMNotHaltedError\0\0Domain is not powered off: '%s'\0"
                         % self.work.encode())
        r = self.w.tool("qvm-remove", "--force", self.work, check=False)
        self.assertNotEqual(r.returncode, 0)
        # Nothing changed: still there, still running, still answering.
        self.assertState(self.work, "Running")
        self.assertEqual(self.w.run(self.work, "cat /home/user/kept")[1], "kept\n")
        # The template of a running AppVM cannot be removed either.
        reply = self.w.call("admin.vm.Remove", self.tpl)
        self.assertTrue(reply.startswith(b"2\0"), reply)
        self.w.tool("qvm-shutdown", "--wait", self.work)
        # Once halted, both are allowed; the renamed qube keeps its private data.
        renamed = PREFIX + "renamed"
        self.assertEqual(self.w.call("admin.vm.property.Set", self.work, "name", renamed.encode()), b"0\0")
        self.start(renamed)
        self.assertEqual(self.w.run(renamed, "cat /home/user/kept; hostname")[1], "kept\n%s\n" % renamed)
        self.w.tool("qvm-shutdown", "--wait", renamed)
        self.assertNothingLeftOf(renamed, "after the renamed qube's shutdown")
        private = os.path.dirname(self.w.volume_path(renamed, "private"))
        self.assertEqual(self.w.call("admin.vm.Remove", renamed), b"0\0")
        self.assertFalse(os.path.exists(private), "the removed qube's volumes")

    # --- daemon restart --------------------------------------------------------------------------------

    def test_11_daemon_restart_adopts_running_and_cleans_dead(self):
        self.make_world(appvms=("work", "vault"))
        self.start(self.work)
        self.start(self.vault)
        pids = {n: self.w.init_pid(n) for n in (self.work, self.vault)}
        self.events.close()
        self.events = None
        self.w.stop_daemon(signal.SIGKILL)
        # The qubes go on without the daemon.
        for n, pid in pids.items():
            self.assertFalse(ended(pid), n)
        self.w.start_daemon()
        self.assertState(self.work, "Running")
        self.assertState(self.vault, "Running")
        for n in (self.work, self.vault):
            self.assertEqual(self.w.run(n, "hostname")[1], n + "\n")
            self.assertEqual(self.w.init_pid(n), pids[n])
        # The adopted qubes are watched: an adopted one that is shut down
        # halts and goes away as any other.
        self.events = Events(self.w.socket)
        self.w.run(self.work, "echo private > /rw/before-restart", user="root")

        # Down again; vault's PID 1 dies meanwhile.
        self.events.close()
        self.events = None
        self.w.stop_daemon(signal.SIGKILL)
        os.kill(pids[self.vault], signal.SIGKILL)
        wait_for(lambda: ended(pids[self.vault]) and not os.path.exists("/proc/%d" % pids[self.vault]), 10,
                 "vault's PID 1 to die and be reaped")
        self.w.start_daemon()
        self.assertState(self.vault, "Halted")
        self.assertState(self.work, "Running")
        self.assertNothingLeftOf(self.vault, "after a restart that found vault dead")
        self.assertEqual(self.w.run(self.work, "cat /rw/before-restart")[1], "private\n")
        # vault starts again, fresh.
        self.start(self.vault)
        self.assertEqual(self.w.run(self.vault, "hostname")[1], self.vault + "\n")
        self.assertNotEqual(self.w.init_pid(self.vault), pids[self.vault])
        # An adopted qube's shutdown: it halts and leaves nothing.
        self.events = Events(self.w.socket)
        self.w.tool("qvm-shutdown", "--wait", self.work)
        self.assertState(self.work, "Halted")
        self.events.wait(self.work, "domain-shutdown")
        self.assertNothingLeftOf(self.work, "after the shutdown of an adopted qube")

    # --- qrexec between qubes ------------------------------------------------------------------------------

    def test_12_qrexec_call_between_qubes_decided_by_policy(self):
        self.make_world(appvms=("work", "vault"))
        work, vault = self.work, self.vault
        self.w.start_policy_daemon(
            "test.Echo +ok %s %s allow\n"
            "test.Echo +no %s %s deny\n"
            "test.Echo * %s %s deny\n" % (work, vault, work, vault, vault, work))
        # The service goes into the template before its AppVMs start.
        self.start(self.tpl)
        self.w.run(self.tpl, "mkdir -p /etc/qubes-rpc && cat > /etc/qubes-rpc/test.Echo &&"
                             " chmod 755 /etc/qubes-rpc/test.Echo", user="root", input=ECHO_SERVICE)
        self.w.tool("qvm-shutdown", "--wait", self.tpl)
        self.start(work)
        self.start(vault)

        # Allowed: the service runs in vault, with the caller's name and stdin.
        rc, out, err = self.w.run(work, "qrexec-client-vm %s test.Echo+ok" % vault, input="ping\n")
        self.assertEqual(rc, 0, err + self.w.qube_log(work, "qrexec-daemon"))
        self.assertEqual(out, "test.Echo in %s for %s arg=ok\nping\n" % (vault, work))
        # The agent socket inside is the default one.
        rc, out, _ = self.w.run(work, "test -S /var/run/qubes/qrexec-agent && echo socket")
        self.assertEqual(out, "socket\n")

        # Refused by a deny rule for the argument, by a deny rule for the
        # direction, and by the absence of any rule for another service.
        for caller, target, service in ((work, vault, "test.Echo+no"), (vault, work, "test.Echo+ok"),
                                        (work, vault, "test.Other")):
            rc, out, err = self.w.run(caller, "qrexec-client-vm %s %s" % (target, service), input="ping\n",
                                      check=False)
            self.assertEqual(rc, 126, "%s -> %s %s: %r %r" % (caller, target, service, out, err))
            self.assertNotIn("test.Echo in", out)
        self.assertEqual(self.w.run(vault, "cat /tmp/test.Echo.calls")[1], work + "\n")  # only the allowed one
        self.assertNotEqual(self.w.run(work, "cat /tmp/test.Echo.calls", check=False)[0], 0)

        # A new policy counts at once: the allowed call is now refused.
        self.w.write_policy("test.Echo * @anyvm @anyvm deny\n")

        def refused():
            return self.w.run(work, "qrexec-client-vm %s test.Echo+ok </dev/null" % vault, check=False)[0] == 126
        wait_for(refused, 10, "the changed policy to refuse")
        self.assertEqual(self.w.run(vault, "cat /tmp/test.Echo.calls")[1], work + "\n")


def main():
    global BUILD
    BUILD = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else os.environ.get("AERIE_BUILD_DIR", "build"))
    if os.geteuid() != 0:
        print("lifecycle tests need root (namespaces, cgroups, id-mapped mounts); skipped")
        return 77
    become_subreaper()
    for name in ("aeried", "aerie-qube-init", "qrexec-agent", "qrexec-daemon", "qrexec-client",
                 "qrexec-client-vm", "qrexec-policy-daemon", "qvm-template", "qvm-create", "qvm-start",
                 "qvm-shutdown", "qvm-kill", "qvm-pause", "qvm-unpause", "qvm-run", "qvm-ls", "qvm-check",
                 "qvm-remove"):
        if not os.access(bin_path(name), os.X_OK):
            print("missing %s: build it first" % bin_path(name))
            return 1
    result = unittest.main(exit=False, verbosity=2).result
    failed = len({id(t) for t, _ in result.failures + result.errors})
    print("%d passed, %d failed" % (result.testsRun - failed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
