"""The test world shared by the tests of qubes that really run
(lifecycle_test.py, dispvm_test.py): aeried from this build with a state
folder of its own, the qvm-* tools pointed at it, an admin.Events reader, the
raw Admin API, and the accounting of what a world leaves behind (mounts,
cgroups, processes), checked at the end of every test.
Call setup(build_dir) first; needs root."""

import contextlib
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

from admin_wire import encode, exchange

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


def mount_image_aside(image, view, options):
    """Mounts a halted qube's volume image on `view`. Its file system may
    live on for a moment after the qube halted (a copy of its mount in a
    mount namespace another qube's launch cloned meanwhile), and mount(8)
    will not set up a second loop device over the same file until it goes."""
    deadline = time.monotonic() + 10
    while True:
        r = subprocess.run(["mount", "-o", options, image, view], capture_output=True, text=True)
        if r.returncode == 0:
            return
        if time.monotonic() >= deadline:
            raise AssertionError("mounting %s on %s: %s" % (image, view, r.stderr.strip()))
        time.sleep(0.05)


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
        self.daemon_args = []  # more options for aeried
        self.netns = None      # a network namespace (ip netns) to run aeried in: another "host"
        self.env = dict(os.environ, QUBESD_SOCKET=self.socket, QREXEC_SOCKET_DIR=self.qrexec_dir)
        self.env.pop("VCHAN_SOCKET_DIR", None)
        self.env.pop("VCHAN_DOMAIN", None)

    # --- processes -------------------------------------------------------------------------------

    def start_daemon(self, bin_dir=None):
        if bin_dir is not None:
            self.bin_dir = bin_dir
        argv = [bin_path("aeried"), "--state-dir", self.state, "--socket", self.socket,
                "--internal-socket", self.internal, "--runtime-dir", self.runtime, "--log-file", self.log_path,
                "--qrexec-socket-dir", self.qrexec_dir, "--policy-socket", self.policy_socket,
                "--policy-dir", self.policy_dir]
        if self.bin_dir:
            argv += ["--bin-dir", self.bin_dir]
        argv += self.daemon_args
        if self.netns:
            # Only the network namespace: `ip netns exec` would also remount /sys (and lose the cgroups).
            argv = ["nsenter", "--net=/run/netns/" + self.netns] + argv
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
        log_path = os.path.join(self.root, "policy-daemon.log")
        with open(log_path, "ab") as log:
            self.policy_daemon = subprocess.Popen(
                [bin_path("qrexec-policy-daemon"), "--socket", self.policy_socket, "--path", self.policy_dir,
                 "--internal-socket", self.internal, "--log-file", log_path],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
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
        return exchange(self.socket, encode(method, dest, arg, payload), timeout=60)

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

    def volume_dir(self, qube, volume):
        """Where the pool mounts a volume (its image's path without .img):
        its files while something holds it mounted (the qube running, or a
        qube running on it)."""
        path = self.volume_path(qube, volume)
        return path[:-4] if path.endswith(".img") else path

    @contextlib.contextmanager
    def halted_volume(self, qube, volume):
        """A halted qube's volume image mounted read-only aside (no journal
        replay) while the block runs: its folder."""
        view = tempfile.mkdtemp(prefix="volume-", dir=self.root)
        mount_image_aside(self.volume_path(qube, volume), view, "ro,loop,noload,nodev,nosuid")
        try:
            yield view
        finally:
            # Busy for a moment when something (a listing, a namespace being
            # made) still holds it: tried again, then detached.
            for _ in range(20):
                if subprocess.run(["umount", view], capture_output=True).returncode == 0:
                    break
                time.sleep(0.1)
            else:
                subprocess.run(["umount", "-l", view], capture_output=True)
            os.rmdir(view)

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
                    state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
                if state == "Z":
                    continue
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
                with open("/proc/%s/cgroup" % pid) as f:
                    cg = f.read()
            except (OSError, IndexError):
                continue
            if any(n in cmdline for n in needles) or cg_pattern.search(cg):
                procs.append("%s %s [%s, parent %s]" % (pid, cmdline, state, ppid))
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

    def finish(self, events=None):
        """Every qube shut down, the daemons stopped, and nothing may be
        left: the problems found (none: []); cleans up in any case."""
        return self.stop_everything(events) + self.verify_clean()

    def stop_everything(self, events=None):
        """Every qube shut down and the daemons stopped: the problems found."""
        problems = []
        try:
            if self.daemon is not None and self.daemon.poll() is None:
                r = self.tool("qvm-shutdown", "--all", "--wait", check=False, timeout=120)
                if r.returncode != 0:
                    problems.append("qvm-shutdown --all --wait: exit %d: %s" % (r.returncode, r.stderr.strip()))
            if events:
                events.close()
        finally:
            self.stop_daemon()
            self.stop_policy_daemon()
        return problems

    def verify_clean(self):
        """Nothing may be left once stopped (worlds sharing the machine: all
        stopped first): the problems found; cleans up in any case."""
        problems = []
        try:
            left = self.wait_clean()
            if left:
                problems.append("left behind %.0f s after every qube halted and the daemons stopped: %s" % (
                    GRACE, json.dumps(left, indent=1)))
        finally:
            self.force_clean()
        after = {k: v for k, v in self.leftovers().items() if v}
        if after:
            problems.append("cannot clean up: %s" % json.dumps(after, indent=1))
        return problems

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



def setup(build_dir):
    """Points the helpers at a build folder."""
    global BUILD
    BUILD = os.path.abspath(build_dir)


class WorldTest(unittest.TestCase):
    """Each test: a fresh world with a host template TPL (and AppVMs made on
    it); at the end every qube is shut down and nothing may be left."""

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
        self.assertEqual(self.w.finish(self.events), [])

    def custom_bin_dir(self, agent_script, keep_agent_as=None):
        """Aerie's programs, with the qubes' qrexec-agent replaced by
        `agent_script` (the real one kept next to it as `keep_agent_as`)."""
        d = os.path.join(self.w.root, "bin")
        os.makedirs(d)
        for name in os.listdir(os.path.join(BUILD, "bin")):
            src = bin_path(name)
            if name == "qrexec-agent":
                if keep_agent_as:
                    shutil.copy2(src, os.path.join(d, keep_agent_as))
                continue
            if name == "aerie-qube-init":
                shutil.copy2(src, os.path.join(d, name))  # seen inside the qube
            else:
                os.symlink(src, os.path.join(d, name))    # run on the host
        with open(os.path.join(d, "qrexec-agent"), "w") as f:
            f.write(agent_script)
        os.chmod(os.path.join(d, "qrexec-agent"), 0o755)
        os.chmod(d, 0o755)
        return d


# What a world of running qubes needs built.
PROGRAMS = ("aeried", "aerie-qube-init", "qrexec-agent", "qrexec-daemon", "qrexec-client", "qrexec-client-vm",
            "qrexec-policy-daemon", "qvm-template", "qvm-create", "qvm-start", "qvm-shutdown", "qvm-kill",
            "qvm-run", "qvm-ls", "qvm-prefs", "qvm-remove")


def run_tests(argv, more=()):
    """The main() of a world test module: exit code 77 without root; the
    programs a world needs (and `more`) must be built."""
    needed = PROGRAMS + tuple(more)
    setup(argv.pop(1) if len(argv) > 1 else os.environ.get("AERIE_BUILD_DIR", "build"))
    if os.geteuid() != 0:
        print("these tests need root (namespaces, cgroups, id-mapped mounts); skipped")
        return 77
    become_subreaper()
    for name in needed:
        if not os.access(bin_path(name), os.X_OK):
            print("missing %s: build it first" % bin_path(name))
            return 1
    result = unittest.main(exit=False, verbosity=2).result
    failed = len({id(t) for t, _ in result.failures + result.errors})
    print("%d passed, %d failed" % (result.testsRun - failed, failed))
    return 1 if failed else 0
