"""The admin daemon under load: 1,000 qubes defined through the Admin API,
then 200 clients at once mixing reads, writes and listings, every reply
checked; the state survives a restart; qvm-ls (when built) lists them all.
Run: python3 admin_load_test.py BUILD_DIR"""

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor

BUILD = None
QUBES = 1000          # besides dom0
CLIENTS = 200
OPS_PER_CLIENT = 12
TEMPLATE = "tpl"
LABELS = ["red", "orange", "yellow", "green", "gray", "blue", "purple", "black"]


def call(path, method, dest="dom0", payload=b"", timeout=30):
    """One qubesd-framed request; the raw reply (b"" when the daemon closed
    without one)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(("%s dom0 name %s\0" % (method, dest)).encode() + payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def ok(reply, what=""):
    if not reply.startswith(b"0\0"):
        raise AssertionError("%s: expected a success reply, got %r" % (what, reply[:300]))
    return reply[2:].decode()


def qube_name(i):
    return "q%04d" % i


def label_of(i):
    return LABELS[i % len(LABELS)]


class AdminLoad(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="aerie-load-")
        cls.socket = os.path.join(cls.root, "qubesd.sock")
        cls.internal = os.path.join(cls.root, "qubesd.internal.sock")
        cls.log = os.path.join(cls.root, "aeried.log")
        cls.proc = None
        cls.start_daemon()
        t0 = time.monotonic()
        ok(call(cls.socket, "admin.vm.Create.TemplateVM", payload=b"name=%s label=black" % TEMPLATE.encode()))
        ok(call(cls.socket, "admin.property.Set+default_template", payload=TEMPLATE.encode()))

        # The template counts among the 1,000; the rest are AppVMs on the
        # default template, created by several clients at once.
        def create(i):
            reply = call(cls.socket, "admin.vm.Create.AppVM",
                         payload=("name=%s label=%s" % (qube_name(i), label_of(i))).encode())
            return i, reply

        with ThreadPoolExecutor(8) as pool:
            bad = [(i, r[:200]) for i, r in pool.map(create, range(1, QUBES)) if r != b"0\0"]
        if bad:
            raise AssertionError("%d creates failed, first: %r" % (len(bad), bad[:3]))
        cls.names = {"dom0", TEMPLATE} | {qube_name(i) for i in range(1, QUBES)}
        print("\n%d qubes created in %.1f s" % (QUBES, time.monotonic() - t0), flush=True)

    @classmethod
    def tearDownClass(cls):
        cls.stop_daemon()
        shutil.rmtree(cls.root, ignore_errors=True)

    @classmethod
    def start_daemon(cls):
        with open(cls.log, "ab") as log:
            cls.proc = subprocess.Popen([os.path.join(BUILD, "bin", "aeried"), "--state-dir", cls.root,
                                         "--socket", cls.socket, "--internal-socket", cls.internal],
                                        stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if cls.proc.poll() is not None:
                raise AssertionError("aeried exited with %d:\n%s" % (cls.proc.returncode, cls.log_text()))
            try:
                if call(cls.socket, "admin.vm.List", timeout=5).startswith(b"0\0"):
                    return
            except OSError:
                pass
            time.sleep(0.01)
        raise AssertionError("aeried did not answer within 15 s:\n" + cls.log_text())

    @classmethod
    def stop_daemon(cls):
        if cls.proc and cls.proc.poll() is None:
            cls.proc.terminate()
            try:
                cls.proc.wait(10)
            except subprocess.TimeoutExpired:
                cls.proc.kill()
                cls.proc.wait()

    @classmethod
    def log_text(cls):
        try:
            with open(cls.log, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def check_listing(self, body):
        lines = body.splitlines()
        self.assertEqual(len(lines), QUBES + 1, "admin.vm.List: %d lines" % len(lines))
        self.assertEqual({line.split(" ", 1)[0] for line in lines}, self.names)
        return lines

    def test_1_list_and_system_info_hold_every_qube(self):
        t0 = time.monotonic()
        lines = self.check_listing(ok(call(self.socket, "admin.vm.List"), "admin.vm.List"))
        t1 = time.monotonic()
        for line in lines:
            name, rest = line.split(" ", 1)
            expected = {"dom0": "AdminVM", TEMPLATE: "TemplateVM"}.get(name, "AppVM")
            self.assertIn("class=%s " % expected, rest + " ", line)
        info = json.loads(ok(call(self.internal, "internal.GetSystemInfo"), "internal.GetSystemInfo"))
        t2 = time.monotonic()
        domains = info["domains"]
        self.assertEqual(len(domains), QUBES + 1)
        self.assertEqual(set(domains), self.names)
        for i in range(1, QUBES):
            d = domains[qube_name(i)]
            self.assertEqual((d["type"], d["label"]), ("AppVM", label_of(i)))
            self.assertIn("created-by-dom0", d["tags"])
        print("admin.vm.List %.1f ms, internal.GetSystemInfo %.1f ms (from Python)"
              % ((t1 - t0) * 1000, (t2 - t1) * 1000), flush=True)

    def test_2_two_hundred_clients_at_once(self):
        # Client k alone writes to qube k+1 (features and memory), so each of
        # its reads has exactly one right answer; everyone reads everything.
        start = threading.Barrier(CLIENTS)
        failures = []
        counts = {"get": 0, "set": 0, "list": 0, "feature": 0, "tag": 0}
        lock = threading.Lock()

        def fail(k, what):
            with lock:
                failures.append("client %d: %s" % (k, what))

        def client(k):
            rng = random.Random(k)
            own = qube_name(k + 1)
            memory = None
            features = {}
            try:
                start.wait(30)
                for step in range(OPS_PER_CLIENT):
                    r = rng.random()
                    if r < 0.30:
                        i = rng.randrange(1, QUBES)
                        got = ok(call(self.socket, "admin.vm.property.Get+label", qube_name(i)), "label.Get")
                        if got != "default=False type=label " + label_of(i):
                            fail(k, "label of %s: %r" % (qube_name(i), got))
                        got = ok(call(self.socket, "admin.vm.property.Get+template", qube_name(i)), "template.Get")
                        if got != "default=False type=vm " + TEMPLATE:
                            fail(k, "template of %s: %r" % (qube_name(i), got))
                        kind = "get"
                    elif r < 0.50:
                        memory = str(rng.randint(300, 8000))
                        ok(call(self.socket, "admin.vm.property.Set+memory", own, memory.encode()), "memory.Set")
                        got = ok(call(self.socket, "admin.vm.property.Get+memory", own), "memory.Get")
                        if got != "default=False type=int " + memory:
                            fail(k, "memory of %s after setting %s: %r" % (own, memory, got))
                        kind = "set"
                    elif r < 0.65:
                        key, value = "load%d" % rng.randrange(3), "v%d-%d" % (k, step)
                        ok(call(self.socket, "admin.vm.feature.Set+" + key, own, value.encode()), "feature.Set")
                        features[key] = value
                        got = ok(call(self.socket, "admin.vm.feature.List", own), "feature.List")
                        if sorted(got.split()) != sorted(features):
                            fail(k, "features of %s: %r, expected %r" % (own, got, sorted(features)))
                        kind = "feature"
                    elif r < 0.80:
                        i = rng.randrange(1, QUBES)
                        got = ok(call(self.socket, "admin.vm.tag.Get+created-by-dom0", qube_name(i)), "tag.Get")
                        if got != "1":
                            fail(k, "created-by-dom0 tag of %s: %r" % (qube_name(i), got))
                        kind = "tag"
                    else:
                        body = ok(call(self.socket, "admin.vm.List"), "admin.vm.List")
                        lines = body.splitlines()
                        if len(lines) != QUBES + 1 or not body.endswith("\n"):
                            fail(k, "admin.vm.List gave %d lines" % len(lines))
                        kind = "list"
                    with lock:
                        counts[kind] += 1
                # What this client wrote, read back at the end.
                if memory is not None:
                    got = ok(call(self.socket, "admin.vm.property.Get+memory", own), "memory.Get")
                    if got != "default=False type=int " + memory:
                        fail(k, "memory of %s at the end: %r" % (own, got))
                for key, value in features.items():
                    got = ok(call(self.socket, "admin.vm.feature.Get+" + key, own), "feature.Get")
                    if got != value:
                        fail(k, "feature %s of %s at the end: %r" % (key, own, got))
            except (AssertionError, OSError, threading.BrokenBarrierError) as e:
                fail(k, "%s: %s" % (type(e).__name__, e))
            return memory, features

        t0 = time.monotonic()
        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(client, range(CLIENTS)))
        elapsed = time.monotonic() - t0
        print("%d clients, %s in %.1f s" % (CLIENTS, counts, elapsed), flush=True)
        self.assertEqual(failures, [], "%d wrong replies, first ones:\n%s" % (len(failures), "\n".join(failures[:10])))
        self.assertEqual(sum(counts.values()), CLIENTS * OPS_PER_CLIENT)

        # The acknowledged writes outlive the daemon.
        self.stop_daemon()
        self.assertEqual(self.proc.returncode, 0, self.log_text())
        t1 = time.monotonic()
        self.start_daemon()
        print("restart over %d qubes: %.2f s" % (QUBES, time.monotonic() - t1), flush=True)
        self.check_listing(ok(call(self.socket, "admin.vm.List"), "admin.vm.List"))
        for k, (memory, features) in enumerate(results):
            own = qube_name(k + 1)
            if memory is not None:
                self.assertEqual(ok(call(self.socket, "admin.vm.property.Get+memory", own)),
                                 "default=False type=int " + memory, own)
            self.assertEqual(sorted(ok(call(self.socket, "admin.vm.feature.List", own)).split()), sorted(features))

    def test_3_qvm_ls(self):
        qvm_ls = os.path.join(BUILD, "bin", "qvm-ls")
        if not os.access(qvm_ls, os.X_OK):
            self.skipTest("%s is not built" % qvm_ls)
        env = dict(os.environ, QUBESD_SOCKET=self.socket)
        for args in ([], ["--raw-list"]):
            t0 = time.monotonic()
            r = subprocess.run([qvm_ls] + args, capture_output=True, env=env, timeout=30)
            elapsed = time.monotonic() - t0
            self.assertEqual(r.returncode, 0, "qvm-ls %s: %s" % (" ".join(args), r.stderr.decode(errors="replace")))
            lines = [line for line in r.stdout.decode().splitlines() if line.strip()]
            if args:
                self.assertEqual(sorted(lines), sorted(self.names), "qvm-ls --raw-list")
            else:
                self.assertEqual(lines[0].split()[:2], ["NAME", "STATE"], "qvm-ls header: %r" % lines[0])
                listed = {line.split()[0] for line in lines[1:]}
                self.assertEqual(listed, self.names, "qvm-ls")
                self.assertEqual(len(lines), QUBES + 2)
            print("qvm-ls %s: %d lines in %.2f s" % (" ".join(args), len(lines), elapsed), flush=True)


if __name__ == "__main__":
    BUILD = sys.argv.pop(1)
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print("%d passed, %d failed" % (result.testsRun - failed, failed))
    sys.exit(1 if failed else 0)
