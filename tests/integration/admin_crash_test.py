"""Crash consistency of the admin daemon's store. Several clients change the
system at once (creates, property sets, feature sets, tag adds, label
creates, removes) while the daemon is killed with SIGKILL at a random
moment; on restart over the same state directory every change whose success
reply arrived must be there, the one change each client had in flight may
be there or not but never in part, and the store must pass SQLite's
integrity check. The daemon must also refuse, without touching it, a store
file that is not a database or is damaged.
Run: python3 admin_crash_test.py BUILD_DIR  (AERIE_CRASH_SEED=N replays a run)"""

import copy
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import unittest

BUILD = None
ROUNDS = 7
WORKERS = 6
TEMPLATE = "tpl"
PROPERTIES = {"memory": (200, 4000), "vcpus": (1, 8), "qrexec_timeout": (5, 300)}
LABELS = ["red", "orange", "yellow", "green", "gray", "blue", "purple", "black"]


# --- talking to the daemon ------------------------------------------------------

def call(path, method, dest="dom0", payload=b"", timeout=10):
    """One qubesd-framed request; the raw reply (b"" when the daemon closed
    without one). Raises OSError when the daemon cannot be reached."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(("%s dom0 name %s\0" % (method, dest)).encode() + payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def ok(reply):
    if not reply.startswith(b"0\0"):
        raise AssertionError("expected a success reply, got %r" % reply[:300])
    return reply[2:].decode()


class Daemon:
    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.socket = os.path.join(state_dir, "qubesd.sock")
        self.internal = os.path.join(state_dir, "qubesd.internal.sock")
        self.log = os.path.join(state_dir, "aeried.log")
        self.proc = None

    def argv(self):
        return [os.path.join(BUILD, "bin", "aeried"), "--state-dir", self.state_dir, "--socket", self.socket,
                "--internal-socket", self.internal]

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("aeried exited with %d at start:\n%s" % (self.proc.returncode, self.log_text()))
            try:
                if call(self.socket, "admin.vm.List", timeout=2).startswith(b"0\0"):
                    return
            except OSError:
                pass
            time.sleep(0.01)
        raise AssertionError("aeried did not answer within 15 s:\n" + self.log_text())

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""


def integrity_check(db_path):
    """SQLite's PRAGMA integrity_check through the sqlite3 CLI when there is
    one, else through Python's module."""
    if shutil.which("sqlite3"):
        r = subprocess.run(["sqlite3", db_path, "PRAGMA integrity_check"], capture_output=True, timeout=60)
        return (r.stdout + r.stderr).decode(errors="replace").strip()
    con = sqlite3.connect(db_path)
    try:
        return "\n".join(row[0] for row in con.execute("PRAGMA integrity_check"))
    finally:
        con.close()


def crash_copy(state_dir, scratch):
    """Copies the store as the crash left it (database and write-ahead log,
    not the shared-memory index), so checking it cannot change the original."""
    os.makedirs(scratch)
    for suffix in ("", "-wal"):
        src = os.path.join(state_dir, "qubes.db" + suffix)
        if os.path.exists(src):
            shutil.copyfile(src, os.path.join(scratch, "qubes.db" + suffix))
    return os.path.join(scratch, "qubes.db")


# --- what each client believes ----------------------------------------------------
#
# A client's model holds the qubes and labels it made or changed. Only
# changes answered with success enter it; the one change in flight when the
# daemon died may have been applied or not, never in part.

def empty_model():
    return {"qubes": {}, "labels": {}}


def apply(model, op):
    m = copy.deepcopy(model)
    kind = op[0]
    if kind == "create":
        _, name, klass, label = op
        m["qubes"][name] = {"klass": klass, "props": {"label": label}, "features": {}, "tags": {"created-by-dom0"}}
    elif kind == "prop":
        m["qubes"][op[1]]["props"][op[2]] = op[3]
    elif kind == "feature":
        m["qubes"][op[1]]["features"][op[2]] = op[3]
    elif kind == "tag":
        m["qubes"][op[1]]["tags"].add(op[2])
    elif kind == "label":
        m["labels"][op[1]] = op[2]
    elif kind == "remove":
        del m["qubes"][op[1]]
    return m


def request(op):
    """(method, dest, payload) of a change."""
    kind = op[0]
    if kind == "create":
        _, name, klass, label = op
        method = "admin.vm.Create.AppVM+" + TEMPLATE if klass == "AppVM" else "admin.vm.Create." + klass
        return method, "dom0", ("name=%s label=%s" % (name, label)).encode()
    if kind == "prop":
        return "admin.vm.property.Set+" + op[2], op[1], op[3].encode()
    if kind == "feature":
        return "admin.vm.feature.Set+" + op[2], op[1], op[3].encode()
    if kind == "tag":
        return "admin.vm.tag.Set+" + op[2], op[1], b""
    if kind == "label":
        return "admin.label.Create+" + op[1], "dom0", op[2].encode()
    if kind == "remove":
        return "admin.vm.Remove", op[1], b""
    raise ValueError(op)


class Universe:
    """Every name a client ever addressed, so an observation covers both the
    model and the model with the in-flight change applied."""

    def __init__(self):
        self.qubes = {}  # name -> {"props": set, "features": set, "tags": set}
        self.labels = set()

    def note(self, op):
        kind = op[0]
        if kind == "label":
            self.labels.add(op[1])
            return
        q = self.qubes.setdefault(op[1], {"props": {"label"}, "features": set(), "tags": {"created-by-dom0"}})
        if kind == "prop":
            q["props"].add(op[2])
        elif kind == "feature":
            q["features"].add(op[2])
        elif kind == "tag":
            q["tags"].add(op[2])


def project(model, universe):
    """A model as the observation of `universe` would show it."""
    out = {"qubes": {}, "labels": {name: model["labels"].get(name) for name in sorted(universe.labels)}}
    for name, u in sorted(universe.qubes.items()):
        q = model["qubes"].get(name)
        if q is None:
            out["qubes"][name] = None
            continue
        out["qubes"][name] = {
            "klass": q["klass"],
            "props": {p: q["props"].get(p) for p in sorted(u["props"])},
            "features": {k: q["features"].get(k) for k in sorted(u["features"])},
            "tags": {t: t in q["tags"] for t in sorted(u["tags"])},
        }
    return out


class Worker(threading.Thread):
    """One client: makes changes one after the other until the daemon stops
    answering."""

    def __init__(self, index, sock, seed):
        super().__init__(daemon=True)
        self.index = index
        self.sock = sock
        self.rng = random.Random(seed)
        self.model = empty_model()
        self.universe = Universe()
        self.counter = 0
        self.pending = None
        self.stop_flag = threading.Event()
        self.acked = 0
        self.unexpected = []   # replies that were neither success nor the daemon's death
        self.silent_at = None  # monotonic time of the first request that got no reply

    def fresh(self, prefix):
        self.counter += 1
        return "%s%dn%d" % (prefix, self.index, self.counter)

    def next_op(self):
        own = sorted(self.model["qubes"])
        r = self.rng.random()
        if not own or r < 0.25:
            klass = self.rng.choice(["AppVM", "AppVM", "AppVM", "StandaloneVM", "TemplateVM"])
            return ("create", self.fresh("c"), klass, self.rng.choice(LABELS))
        name = self.rng.choice(own)
        if r < 0.45:
            prop = self.rng.choice(sorted(PROPERTIES) + ["label"])
            if prop == "label":
                return ("prop", name, "label", self.rng.choice(LABELS))
            lo, hi = PROPERTIES[prop]
            return ("prop", name, prop, str(self.rng.randint(lo, hi)))
        if r < 0.65:
            return ("feature", name, "f%d" % self.rng.randint(0, 4), "v%d" % self.rng.randint(0, 10 ** 6))
        if r < 0.80:
            return ("tag", name, "t%d" % self.rng.randint(0, 6))
        if r < 0.87:
            return ("label", self.fresh("lab"), "0x%06x" % self.rng.randint(0, 0xFFFFFF))
        return ("remove", name)

    def run(self):
        while not self.stop_flag.is_set():
            op = self.next_op()
            self.universe.note(op)
            self.pending = op
            method, dest, payload = request(op)
            try:
                reply = call(self.sock, method, dest, payload)
            except OSError:
                reply = b""
            if reply == b"0\0":
                self.model = apply(self.model, op)
                self.pending = None
                self.acked += 1
            elif reply == b"":
                self.silent_at = time.monotonic()
                return  # the daemon is gone; `op` may or may not have been applied
            else:
                self.unexpected.append((op, reply[:300]))
                self.pending = None  # an error reply means nothing was changed
                return


# --- reading the daemon's state back -----------------------------------------------

def parse_property(reply, what):
    body = ok(reply)
    fields = body.split(" ", 2)
    if len(fields) != 3 or not fields[0].startswith("default=") or not fields[1].startswith("type="):
        raise AssertionError("%s: malformed property reply %r" % (what, body))
    return None if fields[0] == "default=True" else fields[2]


def listing(sock):
    out = {}
    for line in ok(call(sock, "admin.vm.List")).splitlines():
        fields = line.split(" ")
        attrs = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
        out[fields[0]] = attrs.get("class")
    return out


def observe(sock, universe, qubes, labels):
    out = {"qubes": {}, "labels": {}}
    for name in sorted(universe.labels):
        out["labels"][name] = ok(call(sock, "admin.label.Get+" + name)) if name in labels else None
    for name, u in sorted(universe.qubes.items()):
        if name not in qubes:
            out["qubes"][name] = None
            continue
        q = {"klass": qubes[name], "props": {}, "features": {}, "tags": {}}
        for p in sorted(u["props"]):
            q["props"][p] = parse_property(call(sock, "admin.vm.property.Get+" + p, name), name + "." + p)
        for k in sorted(u["features"]):
            reply = call(sock, "admin.vm.feature.Get+" + k, name)
            if reply.startswith(b"2\0QubesFeatureNotFoundError\0"):
                q["features"][k] = None
            else:
                q["features"][k] = ok(reply)
        for t in sorted(u["tags"]):
            got = ok(call(sock, "admin.vm.tag.Get+" + t, name))
            if got not in ("0", "1"):
                raise AssertionError("%s: tag.Get+%s answered %r" % (name, t, got))
            q["tags"][t] = got == "1"
        out["qubes"][name] = q
    return out


def diff(expected, observed, path=""):
    """The first few places where two nested dicts differ."""
    if isinstance(expected, dict) and isinstance(observed, dict):
        out = []
        for key in sorted(set(expected) | set(observed)):
            out += diff(expected.get(key, "<absent>"), observed.get(key, "<absent>"), path + "/" + str(key))
        return out[:10]
    return [] if expected == observed else ["%s: expected %r, found %r" % (path or "/", expected, observed)]


# --- the tests ---------------------------------------------------------------------

class AdminCrash(unittest.TestCase):
    def setUp(self):
        self.root = tempfile.mkdtemp(prefix="aerie-crash-")
        self.daemons = []

    def tearDown(self):
        for d in self.daemons:
            d.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def daemon(self, state_dir):
        os.makedirs(state_dir, exist_ok=True)
        d = Daemon(state_dir)
        self.daemons.append(d)
        return d

    def check_whole_population(self, d, qubes):
        """Nothing half-made: every qube but dom0 has its label, its
        created-by-dom0 tag and (AppVMs) its template; the system info agrees."""
        sock = d.socket
        info = json.loads(ok(call(d.internal, "internal.GetSystemInfo", timeout=30)))
        domains = info["domains"]
        self.assertEqual(set(domains), set(qubes), "internal.GetSystemInfo and admin.vm.List disagree")
        for name, klass in qubes.items():
            if name == "dom0":
                continue
            label = parse_property(call(sock, "admin.vm.property.Get+label", name), name + ".label")
            self.assertIn(label, LABELS, "%s has no label of its own" % name)
            self.assertEqual(ok(call(sock, "admin.vm.tag.Get+created-by-dom0", name)), "1",
                             "%s lacks its created-by-dom0 tag" % name)
            if klass == "AppVM":
                self.assertEqual(parse_property(call(sock, "admin.vm.property.Get+template", name),
                                                name + ".template"), TEMPLATE)
            self.assertEqual(domains[name]["type"], klass)
            self.assertEqual(domains[name]["label"], label)
            self.assertIn("created-by-dom0", domains[name]["tags"])

    def test_kill_during_burst_loses_no_acknowledged_change(self):
        seed = int(os.environ.get("AERIE_CRASH_SEED", random.randrange(1 << 30)))
        print("\nseed %d (AERIE_CRASH_SEED=%d replays this run)" % (seed, seed), flush=True)
        rng = random.Random(seed)
        state = os.path.join(self.root, "state")
        d = self.daemon(state)
        d.start()
        ok(call(d.socket, "admin.vm.Create.TemplateVM", payload=b"name=%s label=black" % TEMPLATE.encode()))

        # Kill delays from almost at once to well into the burst, in random order.
        delays = [0.005, 0.05, 0.15, 0.35, 0.7, 1.1, 1.6][:ROUNDS]
        rng.shuffle(delays)
        delays = [x * rng.uniform(0.7, 1.3) for x in delays]
        models = [empty_model() for _ in range(WORKERS)]
        universes = [Universe() for _ in range(WORKERS)]
        counters = [0] * WORKERS
        total_acked = 0
        for rnd, delay in enumerate(delays):
            workers = []
            for i in range(WORKERS):
                w = Worker(i, d.socket, rng.randrange(1 << 30))
                w.model, w.universe, w.counter = models[i], universes[i], counters[i]
                workers.append(w)
            for w in workers:
                w.start()
            time.sleep(delay)
            killed_at = time.monotonic()
            d.kill()
            for w in workers:
                w.stop_flag.set()
            for w in workers:
                w.join(30)
                self.assertFalse(w.is_alive(), "a client hung after the daemon died")
            acked = sum(w.acked for w in workers)
            in_flight = sum(1 for w in workers if w.pending)
            total_acked += acked
            for w in workers:
                self.assertEqual(w.unexpected, [], "client %d got an error reply during the burst" % w.index)
                if w.silent_at is not None:
                    self.assertGreaterEqual(w.silent_at, killed_at,
                                            "client %d got no reply before the daemon was killed (%r)"
                                            % (w.index, w.pending))

            # The store as the crash left it passes SQLite's own check.
            copy_path = crash_copy(state, os.path.join(self.root, "crash%d" % rnd))
            self.assertEqual(integrity_check(copy_path), "ok", "store after the kill of round %d" % (rnd + 1))

            d.start()
            qubes = listing(d.socket)
            labels = set(ok(call(d.socket, "admin.label.List")).split())
            landed = 0
            for w in workers:
                observed = observe(d.socket, w.universe, qubes, labels)
                before = project(w.model, w.universe)
                if observed == before:
                    resolved = w.model
                else:
                    landed += 1
                    after = apply(w.model, w.pending) if w.pending else None
                    if after is None or observed != project(after, w.universe):
                        text = "against the acknowledged state:\n  " + "\n  ".join(diff(before, observed))
                        if after is not None:
                            text += "\nagainst that plus the change in flight %r:\n  %s" % (
                                w.pending, "\n  ".join(diff(project(after, w.universe), observed)))
                        self.fail("round %d, client %d: the state after restart is neither the acknowledged "
                                  "one nor that plus the change in flight; differences %s" % (rnd + 1, w.index, text))
                    resolved = after
                models[w.index], universes[w.index], counters[w.index] = resolved, w.universe, w.counter
            print("round %d: killed after %.0f ms; %d changes acknowledged, all kept; %d in flight, %d of them "
                  "applied; %d qubes" % (rnd + 1, delay * 1000, acked, in_flight, landed, len(qubes)), flush=True)
            self.check_whole_population(d, qubes)
            self.assertEqual(integrity_check(os.path.join(state, "qubes.db")), "ok")
        self.assertGreater(total_acked, 50, "the bursts made too few changes to mean anything")
        d.stop()
        self.assertEqual(d.proc.returncode, 0, d.log_text())
        self.assertEqual(integrity_check(os.path.join(state, "qubes.db")), "ok")

    # --- damaged stores ---

    def make_store(self, name):
        """A store holding a few qubes, closed cleanly (its log merged)."""
        state = os.path.join(self.root, name)
        d = self.daemon(state)
        d.start()
        ok(call(d.socket, "admin.vm.Create.TemplateVM", payload=b"name=tpl label=black"))
        for i in range(30):
            ok(call(d.socket, "admin.vm.Create.AppVM+tpl", payload=b"name=work%d label=red" % i))
            ok(call(d.socket, "admin.vm.feature.Set+f", "work%d" % i, b"v" * 200))
            ok(call(d.socket, "admin.vm.tag.Set+t%d" % i, "work%d" % i))
        d.stop()
        self.assertEqual(d.proc.returncode, 0, d.log_text())
        self.assertFalse(os.path.exists(os.path.join(state, "qubes.db-wal")), "the log was not merged at exit")
        return d

    def assert_refused(self, d, keywords):
        """aeried exits non-zero, says why naming the file, listens nowhere and
        leaves the store as it was. Reports every one of these that fails."""
        db = os.path.join(d.state_dir, "qubes.db")
        with open(db, "rb") as f:
            before = hashlib.sha256(f.read()).hexdigest()
        r = subprocess.run(d.argv(), capture_output=True, timeout=30)
        err = r.stderr.decode(errors="replace")
        problems = []
        if r.returncode == 0:
            problems.append("aeried started (and exited 0) on a damaged store")
        with open(db, "rb") as f:
            if hashlib.sha256(f.read()).hexdigest() != before:
                problems.append("aeried changed the store it refused")
        wal = db + "-wal"
        if os.path.exists(wal) and os.path.getsize(wal) > 0:
            problems.append("aeried left changes in the log of the store it refused")
        if os.path.exists(d.socket):
            problems.append("aeried created its socket before refusing")
        if "qubes.db" not in err:
            problems.append("the message does not name the store file")
        if not any(k in err.lower() for k in keywords):
            problems.append("the message does not say what is wrong (expected one of %r)" % keywords)
        if problems:
            self.fail("%s\naeried exited %d, stderr:\n%s" % ("\n".join(problems), r.returncode, err))

    def test_refuses_a_file_that_is_not_a_database(self):
        state = os.path.join(self.root, "garbage")
        d = self.daemon(state)
        with open(os.path.join(state, "qubes.db"), "wb") as f:
            f.write(b"these are not the qubes you are looking for\n" * 200)
        self.assert_refused(d, ["not a database"])

    def test_refuses_a_truncated_store(self):
        d = self.make_store("truncated")
        db = os.path.join(d.state_dir, "qubes.db")
        size = os.path.getsize(db)
        with open(db, "r+b") as f:
            f.truncate(size // 2)
        self.assert_refused(d, ["malformed", "corrupt", "integrity", "not a database"])

    def test_refuses_a_store_with_damaged_pages(self):
        d = self.make_store("scrambled")
        db = os.path.join(d.state_dir, "qubes.db")
        size = os.path.getsize(db)
        rng = random.Random(7)
        with open(db, "r+b") as f:
            # Garbage over the start of every page but the first (the header).
            for offset in range(4096, size, 4096):
                f.seek(offset + 8)
                f.write(bytes(rng.randrange(256) for _ in range(64)))
        self.assert_refused(d, ["malformed", "corrupt", "integrity", "not a database", "schema"])

    def test_refuses_a_store_failing_its_own_checks_without_writing(self):
        # Rows of the qubes table lost (dom0's among them) while rows that
        # belong to them remain: SQLite's page check passes, Aerie's own
        # (no orphan rows) does not. The daemon must refuse before writing.
        d = self.make_store("orphans")
        con = sqlite3.connect(os.path.join(d.state_dir, "qubes.db"))
        con.execute("PRAGMA foreign_keys = OFF")
        con.execute("DELETE FROM qubes WHERE name IN ('dom0', 'work3')")
        con.commit()
        con.close()
        self.assertEqual(integrity_check(os.path.join(d.state_dir, "qubes.db")), "ok")
        self.assert_refused(d, ["integrity", "missing"])


if __name__ == "__main__":
    BUILD = sys.argv.pop(1)
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print("%d passed, %d failed" % (result.testsRun - failed, failed))
    sys.exit(1 if failed else 0)
