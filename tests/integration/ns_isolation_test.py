"""Isolation of qubes run by the ns backend (aerie-ns-run over NsBackend), on
a template made from the host's own system. Every test names the protection
it checks; each fails when that protection is taken out of the backend.

  processes   PID namespace + a fresh /proc: a qube sees neither the host's
              processes nor another qube's.
  files       mount namespace + pivot_root: host files (world-readable ones
              included) and another qube's private folder are not there.
  read-only   read-only mounts: the template's root and the host's /usr refuse
              writes with EROFS, even for a file the qube's own root owns.
  network     network namespace: only lo; the host's 127.0.0.1 listener and
              its external address are unreachable.
  mounts      mount namespace: a qube's own mounts stay inside it; a host file
              system cannot be mounted.
  modules     capability bounding set (no CAP_SYS_MODULE & co.) and seccomp.
  seccomp     the filter: keyctl, bpf, perf_event_open, name_to_handle_at,
              userfaultfd, a nested user namespace (all of which the kernel
              would otherwise allow here or answer differently) get EPERM;
              clone3 ENOSYS.
  memory      the memory cgroup: a process allocating past maxmem is
              OOM-killed inside the qube; the qube, the host and this test live.
  pause       the freezer: a paused qube's counter stands still.
  lifecycle   nothing is left after shutdown or kill; a restarted backend
              adopts running qubes and cleans up dead ones.
Needs root. Run: python3 ns_isolation_test.py BUILD_DIR"""

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

BUILD = None
WORK = None
TEMPLATE = None
PROBE_DIR = None
GROUP = "aerie-iso-%d" % os.getpid()
QUBE_BASE = 0x10000000

PROBE = r'''
import ctypes, errno, json, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)

def call(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return "ok" if r >= 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

def try_open(path, mode="r"):
    try:
        with open(path, mode) as f:
            if mode == "r":
                f.read(16)
            else:
                f.write("x")
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

def try_mkdir(path):
    try:
        os.mkdir(path)
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno))

def connect(addr, port):
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect((addr, port))
        return "ok"
    except OSError as e:
        return errno.errorcode.get(e.errno, str(e.errno)) if e.errno else "timeout"
    finally:
        s.close()

what = sys.argv[1]
out = {}
if what == "procs":
    pids = sorted(int(p) for p in os.listdir("/proc") if p.isdigit())
    out["pids"] = pids
    cmds = []
    for p in pids:
        try:
            cmds.append(open("/proc/%d/cmdline" % p, "rb").read().replace(b"\0", b" ").decode())
        except OSError:
            pass
    out["cmdlines"] = cmds
    out["kill"] = {}
    for p in sys.argv[2:]:
        try:
            os.kill(int(p), 0)
            out["kill"][p] = "ok"
        except OSError as e:
            out["kill"][p] = errno.errorcode[e.errno]
elif what == "read":
    out = {p: try_open(p) for p in sys.argv[2:]}
elif what == "write":
    out = {p: try_mkdir(p + "/new-dir") if os.path.isdir(p) else try_open(p, "a") for p in sys.argv[2:]}
elif what == "net":
    out["ifaces"] = sorted(os.listdir("/sys/class/net")) if os.path.isdir("/sys/class/net") else None
    out["proc_net_dev"] = sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:])
    out["loopback"] = connect("127.0.0.1", int(sys.argv[2]))
    out["external"] = connect(sys.argv[3], int(sys.argv[2]))
elif what == "syscalls":
    out["keyctl"] = call(250, 0, -3, 1)                   # KEYCTL_GET_KEYRING_ID, session, create
    out["add_key"] = call(248, 0, 0, 0, 0, 0)
    out["request_key"] = call(249, 0, 0, 0, 0)
    out["bpf"] = call(321, 9999, 0, 0)                    # unknown command: EINVAL without the filter
    out["perf_event_open"] = call(298, 0, 0, -1, -1, 0)   # NULL attr: EFAULT without the filter
    buf = ctypes.create_string_buffer(256)
    buf[0:4] = (128).to_bytes(4, "little")  # struct file_handle: handle_bytes
    mnt = ctypes.c_int(0)
    out["name_to_handle_at"] = call(303, -100, ctypes.addressof(ctypes.create_string_buffer(b"/")),
                                     ctypes.addressof(buf), ctypes.addressof(mnt), 0)
    out["open_by_handle_at"] = call(304, -100, ctypes.addressof(buf), 0)
    out["userfaultfd"] = call(323, 1)                     # UFFD_USER_MODE_ONLY: allowed without the filter
    out["unshare_user"] = call(272, 0x10000000)           # CLONE_NEWUSER
    r = libc.syscall(ctypes.c_long(56), ctypes.c_long(0x10000000 | 17), *[ctypes.c_long(0)] * 4)
    if r == 0:
        os._exit(0)  # the child of a clone that should not have worked
    out["clone_user"] = "ok" if r > 0 and os.waitpid(r, 0) else errno.errorcode.get(ctypes.get_errno())
    out["clone3"] = call(435, 0, 0)
    out["init_module"] = call(175, 0, 0, 0)
    out["finit_module"] = call(313, -1, 0, 0)
    out["delete_module"] = call(176, 0, 0)
    out["kexec_load"] = call(246, 0, 0, 0, 0)
    out["kexec_file_load"] = call(320, -1, -1, 0, 0, 0)
    out["iopl"] = call(172, 3)
    out["ioperm"] = call(173, 0, 1, 1)
    out["swapon"] = call(167, 0, 0)
    out["acct"] = call(163, 0)
    out["reboot"] = call(169, 0xfee1dead, 0, 0, 0)        # bad second magic: EINVAL even for host root
    out["unshare_net"] = call(272, 0x40000000)            # other namespaces stay allowed
elif what == "status":
    out["status"] = open("/proc/self/status").read()
    out["uid_map"] = open("/proc/self/uid_map").read()
    out["hostname"] = socket.gethostname()
elif what == "mount":
    import subprocess
    r = subprocess.run(["mount", "-t", "tmpfs", sys.argv[2], "/mnt"], capture_output=True)
    out["tmpfs"] = r.returncode
    r = subprocess.run(["mount", "-t", "ext4", sys.argv[3], "/media"], capture_output=True)
    out["ext4"] = r.returncode
    out["mounts"] = open("/proc/self/mountinfo").read()
    open("/run/mounted", "w").write("1")
print("PROBE " + json.dumps(out), flush=True)
'''


def ns_run(*args, check=True, timeout=60):
    argv = [os.path.join(BUILD, "bin", "aerie-ns-run"), "--runtime-base", os.path.join(WORK, "run"),
            "--cgroup-group", GROUP] + list(args)
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        raise AssertionError("%s: exit %d\n%s%s" % (" ".join(argv), r.returncode, r.stdout, r.stderr))
    return r


def qube_args(name, qid, *extra):
    return ["--name", name, "--qid", str(qid), "--root", TEMPLATE, "--host-usr", "--root-ro",
            "--bind", PROBE_DIR + ":/run/probe"] + list(extra)


def probe(name, qid, what, *args, extra=()):
    """Runs the probe in a fresh qube; its JSON result."""
    r = ns_run("run", *qube_args(name, qid, *extra), "--", "/usr/bin/python3", "/run/probe/probe.py", what,
               *[str(a) for a in args])
    for line in r.stdout.splitlines():
        if line.startswith("PROBE "):
            return json.loads(line[6:])
    raise AssertionError("no probe output:\n%s%s" % (r.stdout, r.stderr))


def record(name):
    with open(os.path.join(WORK, "run", name, "qube.json")) as f:
        return json.load(f)


def cgroup_procs(rec):
    pids = set()
    for d in set(rec["cgroups"].values()):
        try:
            with open(os.path.join(d, "cgroup.procs")) as f:
                pids.update(int(x) for x in f.read().split())
        except FileNotFoundError:
            pass
    return pids


def wait_for(pred, timeout=10, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError("timed out waiting for " + what)


def own_range(qid):
    return QUBE_BASE + qid * 65536


def external_address():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.123", 9))  # no packet is sent
        return s.getsockname()[0]
    except OSError:
        return None
    finally:
        s.close()


class Isolation(unittest.TestCase):
    def tearDown(self):
        for line in ns_run("adopt", check=False).stdout.splitlines():
            ns_run("kill", line.split()[0], check=False)

    def start(self, name, qid, *cmd, extra=()):
        ns_run("start", *qube_args(name, qid, *extra), "--", *cmd)
        return record(name)

    # --- processes ------------------------------------------------------------
    def test_processes_of_host_and_other_qubes_are_invisible(self):
        marker = subprocess.Popen(["sleep", "4242.5"])
        try:
            other = self.start("iso-p1", 31, "/bin/sh", "-c", "exec sleep 4343.5")
            out = probe("iso-p2", 32, "procs", marker.pid, other["init_pid"], os.getpid())
            text = "\n".join(out["cmdlines"])
            self.assertNotIn("4242.5", text)  # the host's
            self.assertNotIn("4343.5", text)  # the other qube's
            self.assertNotIn("aerie-ns-run", text)
            self.assertEqual(out["pids"][0], 1)
            self.assertLessEqual(len(out["pids"]), 4, out["cmdlines"])  # init, python (+ a thread's leftovers)
            self.assertIn("/run/aerie/init", out["cmdlines"][0])
            for pid, res in out["kill"].items():
                if int(pid) not in out["pids"]:
                    self.assertEqual(res, "ESRCH", pid)
        finally:
            marker.kill()
            marker.wait()

    # --- files ----------------------------------------------------------------
    def test_host_files_and_other_private_folders_are_absent(self):
        secret = os.path.join(WORK, "host-secret.txt")
        with open(secret, "w") as f:
            f.write("host secret\n")
        os.chmod(secret, 0o644)  # readable by anyone who can name it
        private = os.path.join(WORK, "private-p3")
        os.makedirs(private, exist_ok=True)
        with open(os.path.join(private, "secret"), "w") as f:
            f.write("p3 secret\n")
        os.chown(os.path.join(private, "secret"), own_range(33), own_range(33))
        os.chmod(os.path.join(private, "secret"), 0o600)
        os.chown(private, own_range(33), own_range(33))
        os.chmod(private, 0o700)
        # Its owner reads it; a qube of another range, even given the folder,
        # does not (uid ranges keep qubes apart beyond the mount namespace).
        self.assertEqual(probe("iso-p5", 33, "read", "/rw/secret", extra=("--bind", private + ":/rw"))["/rw/secret"],
                         "ok")
        self.assertEqual(probe("iso-p5", 133, "read", "/rw/secret", extra=("--bind", private + ":/rw"))["/rw/secret"],
                         "EACCES")
        a = self.start("iso-p3", 33, "/usr/bin/sleep", "1000", extra=("--bind", private + ":/rw:rw"))
        paths = [secret, private + "/secret", "/proc/%d/root/rw/secret" % a["init_pid"],
                 "/work/main/README.md", os.path.join(BUILD, "CMakeCache.txt"), "/rw/secret",
                 "/root/.bashrc", "/etc/shadow", "/etc/ssh/ssh_host_ed25519_key"]
        self.assertTrue(os.path.exists(secret))
        out = probe("iso-p4", 34, "read", *paths)
        for p in paths:
            self.assertNotEqual(out[p], "ok", p)
        # Host paths do not even exist there.
        for p in (secret, private + "/secret", "/work/main/README.md", "/proc/%d/root/rw/secret" % a["init_pid"]):
            self.assertEqual(out[p], "ENOENT", p)

    # --- read-only ----------------------------------------------------------------
    def test_template_root_and_host_usr_are_read_only(self):
        # A file the qube's own root owns, so only the read-only mount stops it.
        owned = os.path.join(TEMPLATE, "srv", "qube-owned")
        with open(owned, "w") as f:
            f.write("template\n")
        os.chown(owned, own_range(35), own_range(35))
        os.chown(os.path.join(TEMPLATE, "srv"), own_range(35), own_range(35))
        try:
            out = probe("iso-p6", 35, "write", "/srv/qube-owned", "/srv", "/usr/lib", "/usr", "/etc/hostname",
                        "/usr/bin/true")
            # The mount refuses first: a file and a folder the qube owns, new
            # folders in the host's /usr.
            for p in ("/srv/qube-owned", "/srv", "/usr/lib", "/usr"):
                self.assertEqual(out[p], "EROFS", p)
            # Host-owned files: the permission check (they belong to no id of
            # the qube) comes before the mount's.
            for p in ("/etc/hostname", "/usr/bin/true"):
                self.assertIn(out[p], ("EROFS", "EACCES"), p)
            with open(owned) as f:
                self.assertEqual(f.read(), "template\n")
        finally:
            os.chown(os.path.join(TEMPLATE, "srv"), 0, 0)
            os.unlink(owned)

    # --- network ----------------------------------------------------------------
    def test_only_loopback_no_host_network(self):
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        listener.setblocking(False)
        port = listener.getsockname()[1]
        ext = external_address() or "192.0.2.2"
        try:
            out = probe("iso-p7", 36, "net", port, ext)
            self.assertEqual(out["loopback"], "ECONNREFUSED")  # the qube's own lo, up and empty
            self.assertIn(out["external"], ("ENETUNREACH", "EHOSTUNREACH", "timeout"))
            with self.assertRaises(BlockingIOError):
                listener.accept()
            self.assertEqual(out["proc_net_dev"], ["lo"])
            self.assertEqual(out["ifaces"], ["lo"])
        finally:
            listener.close()

    # --- mounts and modules ---------------------------------------------------------
    def test_mounts_stay_inside_and_host_filesystems_cannot_be_mounted(self):
        tag = "aerie-iso-tmpfs-%d" % os.getpid()
        root_dev = None
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if fields[4] == "/":
                    root_dev = fields[fields.index("-") + 2]
        r = ns_run("start", *qube_args("iso-p8", 37), "--", "/bin/sh", "-c",
                   "python3 /run/probe/probe.py mount %s %s > /run/probe.out; exec sleep 1000" % (tag, root_dev or "/dev/vda"))
        self.assertEqual(r.returncode, 0)
        rec = record("iso-p8")
        wait_for(lambda: os.path.exists("/proc/%d/root/run/mounted" % rec["init_pid"]), what="the mounts")
        with open("/proc/%d/root/run/probe.out" % rec["init_pid"]) as f:
            out = json.loads(f.read().split("PROBE ", 1)[1])
        self.assertEqual(out["tmpfs"], 0)
        self.assertIn(tag, out["mounts"])
        self.assertNotEqual(out["ext4"], 0)
        for path in ("/proc/self/mountinfo", "/proc/1/mountinfo"):
            with open(path) as f:
                self.assertNotIn(tag, f.read(), path)

    def test_capabilities_for_modules_and_hardware_are_gone(self):
        out = probe("iso-p9", 38, "status")
        fields = dict(l.split(":\t", 1) for l in out["status"].splitlines() if ":\t" in l)
        bnd = int(fields["CapBnd"], 16)
        eff = int(fields["CapEff"], 16)
        for cap in (16, 17, 22, 25, 27, 29, 30, 34, 37, 39, 38):  # MODULE RAWIO BOOT TIME MKNOD AUDIT_* SYSLOG ...
            self.assertFalse(bnd >> cap & 1, "capability %d in the bounding set" % cap)
            self.assertFalse(eff >> cap & 1, "capability %d effective" % cap)
        self.assertTrue(eff >> 21 & 1)  # CAP_SYS_ADMIN, over the qube's own namespaces
        self.assertEqual(fields["NoNewPrivs"].strip(), "1")
        self.assertEqual(fields["Seccomp"].strip(), "2")
        self.assertEqual(out["uid_map"].split(), ["0", str(own_range(38)), "65536"])
        self.assertEqual(out["hostname"], "iso-p9")

    # --- seccomp ----------------------------------------------------------------------
    def test_denied_system_calls_get_eperm(self):
        out = probe("iso-p10", 39, "syscalls")
        for name in ("keyctl", "add_key", "request_key", "bpf", "perf_event_open", "name_to_handle_at",
                     "open_by_handle_at", "userfaultfd", "unshare_user", "clone_user", "init_module",
                     "finit_module", "delete_module", "kexec_load", "kexec_file_load", "iopl", "ioperm",
                     "swapon", "acct", "reboot"):
            self.assertEqual(out[name], "EPERM", name)
        self.assertEqual(out["clone3"], "ENOSYS")
        self.assertEqual(out["unshare_net"], "ok")

    # --- memory -----------------------------------------------------------------------
    def test_memory_past_maxmem_is_killed_inside_the_qube(self):
        script = ("{ python3 -c 'b = bytearray(512 << 20); print(\"allocated\")'; echo hog=$?;"
                  " echo alive; exec sleep 1000; } > /run/out 2>&1")
        rec = self.start("iso-p11", 40, "/bin/sh", "-c", script,
                         extra=("--maxmem", "96", "--memory", "64"))
        out_path = "/proc/%d/root/run/out" % rec["init_pid"]

        def done():
            try:
                with open(out_path) as f:
                    text = f.read()
                return text if "alive" in text else None
            except OSError:
                return None
        text = wait_for(done, timeout=60, what="the memory hog")
        self.assertIn("hog=137", text)  # SIGKILL from the OOM killer
        self.assertNotIn("allocated", text)
        mem = rec["cgroups"].get("memory") or rec["cgroups"].get("unified")
        if "memory" in rec["cgroups"]:
            with open(os.path.join(mem, "memory.oom_control")) as f:
                self.assertRegex(f.read(), r"oom_kill [1-9]")
            with open(os.path.join(mem, "memory.limit_in_bytes")) as f:
                self.assertEqual(int(f.read()), 96 << 20)
        else:
            with open(os.path.join(mem, "memory.events")) as f:
                self.assertRegex(f.read(), r"oom_kill [1-9]")
        self.assertEqual(ns_run("state", "iso-p11").stdout.strip(), "Running")

    # --- pause ---------------------------------------------------------------------------
    def test_pause_freezes_and_unpause_resumes(self):
        shared = os.path.join(WORK, "counter-p12")
        os.makedirs(shared, exist_ok=True)
        os.chown(shared, own_range(41), own_range(41))
        count = os.path.join(shared, "count")
        self.start("iso-p12", 41, "/bin/sh", "-c",
                   "i=0; while :; do i=$((i+1)); echo $i > /rw/count.new; mv /rw/count.new /rw/count; done",
                   extra=("--bind", shared + ":/rw:rw"))

        def value():
            try:
                with open(count) as f:
                    return int(f.read() or 0)
            except (OSError, ValueError):
                return 0
        wait_for(lambda: value() > 10, what="the counter")
        ns_run("pause", "iso-p12")
        self.assertEqual(ns_run("state", "iso-p12").stdout.strip(), "Paused")
        a = value()
        time.sleep(0.5)
        self.assertEqual(value(), a)
        ns_run("unpause", "iso-p12")
        self.assertEqual(ns_run("state", "iso-p12").stdout.strip(), "Running")
        wait_for(lambda: value() > a + 10, what="the counter after unpause")

    # --- lifecycle ------------------------------------------------------------------------
    def test_nothing_left_after_shutdown_and_kill(self):
        # Only this test's mounts count: other tests may run at the same time.
        def own_mounts():
            with open("/proc/self/mountinfo") as f:
                return [l for l in f if WORK in l]
        mounts_before = own_mounts()
        for how in ("shutdown", "kill"):
            name = "iso-p13" + how[0]
            rec = self.start(name, 42, "/bin/sh", "-c", "sleep 1000 & sleep 1000 & exec sleep 1000")
            wait_for(lambda: len(cgroup_procs(rec)) == 4, what="the qube's processes")
            pids = cgroup_procs(rec)
            ns_run(how, name)
            # PID 1 may linger as a zombie until the host's init reaps it (its
            # parent, the aerie-ns-run that started it, is gone); all else is gone.
            for pid in pids:
                if pid != rec["init_pid"]:
                    self.assertFalse(os.path.exists("/proc/%d" % pid), pid)
            wait_for(lambda: not os.path.exists("/proc/%d" % rec["init_pid"]), what="the host's init to reap")
            for d in rec["cgroups"].values():
                self.assertFalse(os.path.exists(d), d)
            self.assertFalse(os.path.exists(os.path.join(WORK, "run", name)))
            self.assertEqual(ns_run("state", name).stdout.strip(), "Halted")
        self.assertEqual(own_mounts(), mounts_before)

    def test_restarted_backend_adopts_running_and_cleans_dead(self):
        a = self.start("iso-p14", 43, "/usr/bin/sleep", "1000")
        b = self.start("iso-p15", 44, "/usr/bin/sleep", "1000")
        # Each aerie-ns-run is a fresh backend: listing is adoption.
        listed = dict(l.split() for l in ns_run("adopt").stdout.splitlines())
        self.assertEqual(listed.get("iso-p14"), str(a["init_pid"]))
        self.assertEqual(listed.get("iso-p15"), str(b["init_pid"]))
        os.kill(b["init_pid"], 9)  # dies while no backend watches
        wait_for(lambda: not os.path.exists("/proc/%d/cgroup" % b["init_pid"]) or
                 open("/proc/%d/stat" % b["init_pid"]).read().split(") ")[1][0] == "Z", what="death")
        listed = dict(l.split() for l in ns_run("adopt").stdout.splitlines())
        self.assertIn("iso-p14", listed)
        self.assertNotIn("iso-p15", listed)
        self.assertFalse(os.path.exists(os.path.join(WORK, "run", "iso-p15")))
        for d in b["cgroups"].values():
            self.assertFalse(os.path.exists(d), d)
        self.assertEqual(ns_run("state", "iso-p14").stdout.strip(), "Running")


def main():
    global BUILD, WORK, TEMPLATE, PROBE_DIR
    BUILD = os.path.abspath(sys.argv.pop(1))
    if os.geteuid() != 0:
        print("ns isolation tests need root; skipped")
        return 77
    WORK = tempfile.mkdtemp(prefix="aerie-iso-")
    os.chmod(WORK, 0o755)
    try:
        TEMPLATE = os.path.join(WORK, "tpl")
        subprocess.run([os.path.join(BUILD, "bin", "aerie-ns-run"), "template", TEMPLATE], check=True,
                       capture_output=True)
        PROBE_DIR = os.path.join(WORK, "probe")
        os.makedirs(PROBE_DIR)
        with open(os.path.join(PROBE_DIR, "probe.py"), "w") as f:
            f.write(PROBE)
        result = unittest.main(exit=False, verbosity=2).result
        failed = len(result.failures) + len(result.errors)
        print("%d passed, %d failed" % (result.testsRun - failed, failed))
        return 1 if failed else 0
    finally:
        for line in subprocess.run([os.path.join(BUILD, "bin", "aerie-ns-run"), "--runtime-base",
                                    os.path.join(WORK, "run"), "--cgroup-group", GROUP, "adopt"],
                                   capture_output=True, text=True).stdout.splitlines():
            subprocess.run([os.path.join(BUILD, "bin", "aerie-ns-run"), "--runtime-base", os.path.join(WORK, "run"),
                            "--cgroup-group", GROUP, "kill", line.split()[0]], capture_output=True)
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
