"""Disposables end to end: aeried from this build with real qubes (the ns
backend), driven through the Admin API, the qvm-* tools and qrexec.

  create       admin.vm.CreateDisposable: a DispVM of the template (or of the
               caller's default_dispvm for DEST dom0) with auto_cleanup, the
               created-by tags, the template's features but not its preload
               ones; payload "uuid"; bad argument or payload refused; a qube
               that is not a disposable template refused with a message. Run,
               then killed: removed with all it had (volumes, runtime
               folders, sockets, mounts, cgroups, processes, store record).
  named        a DispVM made with admin.vm.Create stays after shutdown.
  preload      preload-dispvm-max fills the queue: internal, paused,
               -completed; domain-preload-dispvm-start; the managed features
               refused through the API; bad values of the others refused.
  request      a request takes the first preload (running at once, internal
               gone, domain-preload-dispvm-used, created-by tags), the queue
               refills after preload-dispvm-delay, not before; a negative
               delay refills only when the queue is empty.
  dom0 max     dom0's preload-dispvm-max wins for the global default_dispvm
               (even 0), not for other templates; removing it gives the
               template's own value back.
  threshold    preloads stay within free memory above the threshold.
  unpause      a preload unpaused without a request counts as used.
  outdated     a template property change, and a change of the TemplateVM's
               root, discard the preloads and replace them; a new one sees
               the change.
  crash        kill -9 of aeried in each phase of the preload cycle (created,
               starting, started, paused, handed out) and with stale records:
               the restarted daemon keeps complete preloads, drops absent
               names, removes interrupted ones and refills; nothing leaks.
  failure      a preload whose qubes.WaitForRunningSystem times out is
               reported and removed, not retried; a request waiting for it
               gets a fresh disposable.
  qrexec       a call from a qube to @dispvm (cold and preloaded) runs in a new
               disposable, which is gone after the call; qvm-run --dispvm.
  no leak      500 disposable runs leave no mount, cgroup, process or file.
Needs root (exit code 77 otherwise).
Run: python3 dispvm_test.py BUILD_DIR"""

import json
import os
import re
import signal
import sqlite3
import sys
import threading
import time

from admin_wire import encode, exchange
from aerie_world import (ECHO_SERVICE, GRACE, PREFIX, Events, WorldTest, ended, run_tests, wait_for)


def thaw(pid):
    """Thaws the cgroup of a paused qube's process, behind aeried's back."""
    with open("/proc/%d/cgroup" % pid) as f:
        lines = [line.rstrip("\n").split(":", 2) for line in f]
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split() for line in f]
    for _, controllers, path in lines:
        for m in mounts:
            sep = m.index("-")
            fstype, options = m[sep + 1], m[sep + 3].split(",")
            if controllers == "freezer" and fstype == "cgroup" and "freezer" in options:
                with open(os.path.join(m[4], path.lstrip("/"), "freezer.state"), "w") as f:
                    f.write("THAWED")
                return
            if controllers == "" and fstype == "cgroup2" and not any(c == "freezer" for _, c, _ in lines):
                with open(os.path.join(m[4], path.lstrip("/"), "cgroup.freeze"), "w") as f:
                    f.write("0")
                return
    raise AssertionError("no freezer cgroup for %d" % pid)


class DispVMTest(WorldTest):

    def setUp(self):
        super().setUp()
        self.dvm = PREFIX + "dvm"

    def make_dvm(self, appvms=("work",), max_preload=None, delay=None, extra=(), bin_dir=None):
        """The world with a disposable template DVM (and AppVMs)."""
        self.make_world(appvms, bin_dir=bin_dir)
        self.w.tool("qvm-create", "--template", self.tpl, "--label", "green", self.dvm)
        self.w.tool("qvm-prefs", self.dvm, "template_for_dispvms", "True")
        for prop, value in extra:
            self.w.tool("qvm-prefs", self.dvm, prop, value)
        if delay is not None:
            self.feature(self.dvm, "preload-dispvm-delay", delay)
        if max_preload is not None:
            self.feature(self.dvm, "preload-dispvm-max", max_preload)

    # --- helpers ------------------------------------------------------------------------------------

    def feature(self, qube, name, value=None):
        if value is None:
            self.w.tool("qvm-features", "--unset", qube, name)
        else:
            self.w.tool("qvm-features", qube, name, str(value))

    def features(self, qube):
        out = {}
        for line in self.w.ok("admin.vm.feature.List", qube).splitlines():
            out[line] = self.w.ok("admin.vm.feature.Get", qube, line)
        return out

    def queue(self, tpl=None):
        reply = self.w.call("admin.vm.feature.Get", tpl or self.dvm, "preload-dispvm")
        return reply[2:].decode().split() if reply.startswith(b"0\0") else []

    def dispvms(self):
        return {n: q for n, q in self.w.listed().items() if q["class"] == "DispVM"}

    def settled(self, count, tpl=None):
        """Waits until the queue has `count` complete, paused preloads."""
        def done():
            q = self.queue(tpl)
            if len(q) != count:
                return None
            listed = self.w.listed()
            for name in q:
                if listed.get(name, {}).get("state") != "Paused":
                    return None
                if self.features(name).get("preload-dispvm-completed") != "1":
                    return None
            return (q,)  # true even when empty
        return wait_for(done, 30, "%d complete preloads (queue %r, log %s)" % (count, self.queue(tpl), self.w.log()))[0]

    def create_disposable(self, dest=None, payload=b"", src="dom0"):
        return exchange(self.w.socket, encode("admin.vm.CreateDisposable", dest or self.dvm, payload=payload,
                                              source=src), timeout=60)

    def events_named(self, event, subject=None):
        with self.events.cond:
            return [(s, kw) for s, e, kw in self.events.events if e == event and (subject is None or s == subject)]

    def prop(self, qube, name):
        return self.w.ok("admin.vm.property.Get", qube, name).split(" ", 2)[2]

    def uuids(self):
        return {n: q["uuid"] for n, q in self.w.listed().items()}

    def assertGone(self, name, uuid, what):
        """The disposable is removed with everything it had."""
        wait_for(lambda: name not in self.w.listed(), 10, "%s to be removed (%s)" % (name, what))
        left = self.w.wait_clean({name: uuid})
        self.assertEqual(left, {}, "%s: left of %s" % (what, name))
        for folder in (os.path.join(self.w.runtime, "qubes", name), os.path.join(self.w.runtime, "backend", name),
                       os.path.join(self.w.state, "pool", "vm", uuid), os.path.join(self.w.state, "pool", "run", uuid)):
            self.assertFalse(os.path.exists(folder), "%s: %s" % (what, folder))
        for link in ("qrexec." + name, "qrexec.uuid:" + uuid):
            self.assertFalse(os.path.lexists(os.path.join(self.w.qrexec_dir, link)), link)
        db = sqlite3.connect(os.path.join(self.w.state, "qubes.db"))
        try:
            self.assertEqual(db.execute("SELECT count(*) FROM qubes WHERE uuid = ?", (uuid,)).fetchone()[0], 0)
        finally:
            db.close()

    def install(self, qube_or_tpl, path, text, mode="755"):
        """Writes a file into a TemplateVM's root (started and stopped)."""
        self.w.run(qube_or_tpl, "mkdir -p %s && cat > %s && chmod %s %s" % (
            os.path.dirname(path), path, mode, path), user="root", input=text)
        self.w.tool("qvm-shutdown", "--wait", qube_or_tpl)

    # --- create, cleanup ------------------------------------------------------------------------------

    def test_01_create_disposable_runs_and_leaves_nothing(self):
        self.make_dvm(extra=[("vcpus", "1")])
        self.feature(self.dvm, "service.demo", "1")
        self.w.ok("admin.vm.tag.Set", self.dvm, "dvm-tag")
        reply = self.create_disposable()
        self.assertRegex(reply, rb"^0\0disp[0-9]{1,4}$")
        name = reply[2:].decode()
        self.assertEqual(self.w.listed()[name]["class"], "DispVM")
        self.assertEqual(self.w.listed()[name]["state"], "Halted")
        self.assertEqual(self.prop(name, "template"), self.dvm)
        self.assertEqual(self.prop(name, "auto_cleanup"), "True")
        self.assertEqual(self.prop(name, "dispid"), name[4:])
        self.assertEqual(self.prop(name, "vcpus"), "1")          # the template's own setting
        self.assertEqual(self.prop(name, "label"), "green")
        self.assertEqual(self.prop(name, "is_preload"), "False")
        tags = self.w.ok("admin.vm.tag.List", name).split()
        for tag in ("created-by-dom0", "disp-created-by-dom0", "dvm-tag"):
            self.assertIn(tag, tags)
        self.assertEqual(self.features(name).get("service.demo"), "1")
        # The creator tags are the daemon's to set.
        self.assertEqual(self.w.call("admin.vm.tag.Remove", name, "created-by-dom0"), b"")
        # payload "uuid": the answer is uuid:UUID.
        reply = self.create_disposable(payload=b"uuid")
        self.assertRegex(reply, rb"^0\0uuid:[0-9a-f-]{36}$")
        by_uuid = [n for n, q in self.w.listed().items() if q["uuid"] == reply[7:].decode()]
        self.assertEqual(len(by_uuid), 1)
        # Refusals.
        self.assertEqual(self.create_disposable(payload=b"name"),
                         b"2\0QubesValueError\0\0Invalid payload for admin.vm.CreateDisposable: expected the empty "
                         b"string or 'uuid'\0")
        self.assertEqual(exchange(self.w.socket, encode("admin.vm.CreateDisposable", self.dvm, "other")), b"")
        reply = self.create_disposable(dest=self.work)
        self.assertEqual(reply, b"2\0QubesException\0\0Refusing to create disposable out of this AppVM, because "
                                b"template_for_dispvms=False\0")
        # DEST dom0: the caller's default_dispvm.
        self.w.tool("qvm-prefs", self.work, "default_dispvm", self.dvm)
        reply = self.create_disposable(dest="dom0", src=self.work)
        self.assertRegex(reply, rb"^0\0disp")
        made = reply[2:].decode()
        self.assertIn("created-by-" + self.work, self.w.ok("admin.vm.tag.List", made).split())
        # Run it; kill it: gone with all it had.
        uuid = self.w.uuid(name)
        self.w.tool("qvm-start", name)
        rc, out, _ = self.w.run(name, "hostname; echo data > /home/user/file; cat /home/user/file")
        self.assertEqual(out, name + "\ndata\n")
        self.w.tool("qvm-kill", name)
        self.assertGone(name, uuid, "after kill")
        deleted = [kw.get("vm") for _, kw in self.events_named("domain-delete")]
        self.assertIn(name, deleted)
        # A shutdown cleans up the same way.
        uuid = self.w.uuid(made)
        self.w.tool("qvm-start", made)
        self.w.tool("qvm-shutdown", "--wait", made)
        self.assertGone(made, uuid, "after shutdown")
        # The template's private volume never saw the disposable's write.
        self.w.tool("qvm-start", self.dvm)
        self.assertNotEqual(self.w.run(self.dvm, "cat /home/user/file", check=False)[0], 0)

    def test_02_named_disposable_stays_until_removed(self):
        self.make_dvm()
        named = PREFIX + "named"
        self.w.tool("qvm-create", "--class", "DispVM", "--template", self.dvm, "--label", "red", named)
        self.assertEqual(self.prop(named, "auto_cleanup"), "False")
        self.w.tool("qvm-start", named)
        self.w.run(named, "echo x > /home/user/f")
        self.w.tool("qvm-shutdown", "--wait", named)
        self.assertIn(named, self.w.listed())
        self.w.tool("qvm-start", named)
        self.assertNotEqual(self.w.run(named, "cat /home/user/f", check=False)[0], 0)  # disposable data
        self.w.tool("qvm-shutdown", "--wait", named)
        self.w.tool("qvm-remove", "-f", named)

    # --- preloading -----------------------------------------------------------------------------------

    def test_03_preload_fills_the_queue_paused(self):
        self.make_dvm()
        self.feature(self.dvm, "service.demo", "1")
        self.feature(self.dvm, "preload-dispvm-max", 2)
        queue = self.settled(2)
        for name in queue:
            f = self.features(name)
            self.assertEqual(f.get("internal"), "1")
            self.assertEqual(f.get("preload-dispvm-completed"), "1")
            self.assertEqual(f.get("preload-dispvm-in-progress"), "")
            self.assertEqual(f.get("service.demo"), "1")
            self.assertNotIn("preload-dispvm-max", f)
            self.assertEqual(self.prop(name, "is_preload"), "True")
            self.assertEqual(self.prop(name, "auto_cleanup"), "True")
        starts = self.events_named("domain-preload-dispvm-start", self.dvm)
        self.assertTrue(starts and starts[0][1].get("reason"), starts)
        self.assertEqual(set(self.dispvms()), set(queue))
        # The managed features: no reply, nothing changed.
        for feature in ("preload-dispvm", "preload-dispvm-in-progress", "preload-dispvm-completed"):
            self.assertEqual(self.w.call("admin.vm.feature.Set", self.dvm, feature, b"x"), b"")
            self.assertEqual(self.w.call("admin.vm.feature.Set", queue[0], feature, b""), b"")
            self.assertEqual(self.w.call("admin.vm.feature.Remove", queue[0], "preload-dispvm-completed"), b"")
        self.assertEqual(self.queue(), queue)
        # Values the settings do not take.
        # (QubesValueError, answered as Qubes R4.3 does.)
        for feature, bad, good, why in (
                ("preload-dispvm-max", ["a", "-1", "1 1"], ["", "0", "2"], "not a digit"),
                ("preload-dispvm-threshold", ["a", "-1", "1 1"], ["", "0", "1"], "not a digit"),
                ("preload-dispvm-delay", ["a", ".2.", "1 1"], ["", "0", "-1", "3.14"], "not an integer or float")):
            for value in bad:
                self.assertEqual(self.w.call("admin.vm.feature.Set", "dom0", feature, value.encode()),
                                 ("2\0QubesValueError\0\0Invalid %s value: %s\0" % (feature, why)).encode(),
                                 feature + "=" + value)
            for value in good:
                self.assertEqual(self.w.call("admin.vm.feature.Set", "dom0", feature, value.encode()), b"0\0",
                                 feature + "=" + value)
            self.w.ok("admin.vm.feature.Remove", "dom0", feature)

    def test_04_request_takes_a_preload_and_refill_waits_for_the_delay(self):
        self.make_dvm(max_preload=2, delay=2)
        queue = self.settled(2)
        t0 = time.monotonic()
        reply = self.create_disposable()
        took = time.monotonic() - t0
        name = reply[2:].decode()
        self.assertEqual(name, queue[0])
        self.assertLess(took, 1.0)
        self.assertEqual(self.w.listed()[name]["state"], "Running")
        f = self.features(name)
        self.assertNotIn("internal", f)
        self.assertNotIn("preload-dispvm-in-progress", f)
        self.assertEqual(self.prop(name, "is_preload"), "False")
        self.assertIn("disp-created-by-dom0", self.w.ok("admin.vm.tag.List", name).split())
        used = self.events.wait(self.dvm, "domain-preload-dispvm-used")
        self.assertEqual(used, {"dispvm": name})
        self.assertEqual(self.queue(), queue[1:])
        # Its is_preload changed, and said so (as the queue feature did).
        self.assertEqual(self.events.wait(name, "property-reset:is_preload"), {"name": "is_preload"})
        changed = self.events_named("domain-feature-set:preload-dispvm", self.dvm)
        self.assertTrue(any(kw.get("value", "").split() == queue[1:] for _, kw in changed), changed)
        # It runs commands at once.
        self.assertEqual(self.w.run(name, "hostname")[1], name + "\n")
        # No refill before the delay; one after it.
        time.sleep(1.0)
        self.assertEqual(len(self.queue()), 1)
        wait_for(lambda: len(self.queue()) == 2, 10, "the refill after the delay")
        self.assertGreater(time.monotonic() - t0, 1.9)
        self.settled(2)
        # Negative delay: refill only when the queue is empty.
        self.feature(self.dvm, "preload-dispvm-delay", "-1")
        first = self.create_disposable()[2:].decode()
        time.sleep(1.5)
        self.assertEqual(len(self.queue()), 1, "refilled although the queue was not empty")
        second = self.create_disposable()[2:].decode()
        self.assertNotEqual(first, second)
        self.settled(2)
        for n in (name, first, second):
            self.w.tool("qvm-kill", n)

    def test_05_dom0_max_wins_for_the_default_dispvm(self):
        self.make_dvm(max_preload=1)
        other = PREFIX + "dvm2"
        self.w.tool("qvm-create", "--template", self.tpl, "--label", "blue", other)
        self.w.tool("qvm-prefs", other, "template_for_dispvms", "True")
        self.feature(other, "preload-dispvm-max", 1)
        self.settled(1)
        self.settled(1, other)
        # dom0's value without default_dispvm pointing at dvm: no effect.
        self.feature("dom0", "preload-dispvm-max", 3)
        time.sleep(0.5)
        self.assertEqual(len(self.queue()), 1)
        self.w.ok("admin.property.Set", "dom0", "default_dispvm", self.dvm.encode())
        self.settled(3)
        self.settled(1, other)
        # Even 0 wins.
        self.feature("dom0", "preload-dispvm-max", 0)
        self.settled(0)
        self.settled(1, other)
        # Without dom0's feature the template's own value counts again.
        self.feature("dom0", "preload-dispvm-max")
        self.settled(1)
        # An empty value is there, and reads as 0.
        self.feature("dom0", "preload-dispvm-max", "")
        self.settled(0)

    def test_06_threshold_keeps_free_memory(self):
        meminfo = os.path.join(self.w.root, "meminfo")
        with open(meminfo, "w") as f:
            f.write("MemTotal:       8388608 kB\nMemFree:        1048576 kB\nMemAvailable:    2048000 kB\n")
        self.w.daemon_args = ["--meminfo", meminfo]  # 2000 MiB available
        self.make_dvm()
        self.feature("dom0", "preload-dispvm-threshold", 1000)
        self.feature(self.dvm, "preload-dispvm-max", 4)   # 400 MiB each: (2000 - 1000) / 400 = 2
        self.settled(2)
        time.sleep(0.5)
        self.assertEqual(len(self.queue()), 2)
        self.assertIn("not enough free memory", self.w.log())
        # More memory: the next fill takes it.
        with open(meminfo, "w") as f:
            f.write("MemAvailable:    8192000 kB\n")
        self.feature(self.dvm, "preload-dispvm-max", 3)
        self.settled(3)

    def test_07_unpause_without_request_counts_as_used(self):
        self.make_dvm(max_preload=1, delay=60)
        name = self.settled(1)[0]
        self.w.tool("qvm-unpause", name)
        wait_for(lambda: self.queue() == [], 10, "the preload to leave the queue")
        used = self.events.wait(self.dvm, "domain-preload-dispvm-used")
        self.assertEqual(used, {"dispvm": name})
        f = self.features(name)
        self.assertNotIn("internal", f)
        self.assertEqual(f.get("preload-dispvm-in-progress"), "")
        self.assertEqual(self.w.listed()[name]["state"], "Running")
        self.w.tool("qvm-kill", name)

    def test_08_outdated_preloads_are_replaced(self):
        # A preload keeps the template's own settings as they were (Qubes
        # copies those set explicitly; the others follow the template anyway).
        self.make_dvm(max_preload=2, delay=0, extra=[("vcpus", "2")])
        old = self.settled(2)
        self.w.tool("qvm-prefs", self.dvm, "vcpus", "1")
        wait_for(lambda: not set(self.queue()) & set(old) and len(self.queue()) == 2, 20,
                 "the outdated preloads to be replaced")
        new = self.settled(2)
        for name in old:
            wait_for(lambda: name not in self.w.listed(), 10, "%s removed" % name)
        for name in new:
            self.assertEqual(self.prop(name, "vcpus"), "1")
        # The TemplateVM's root: changed while the preloads run.
        self.install(self.tpl, "/etc/aerie-test-marker", "v2\n", mode="644")
        wait_for(lambda: not set(self.queue()) & set(new) and len(self.queue()) == 2, 20,
                 "preloads of the old root to be replaced")
        newest = self.settled(2)
        name = self.create_disposable()[2:].decode()
        self.assertIn(name, newest)
        self.assertEqual(self.w.run(name, "cat /etc/aerie-test-marker")[1], "v2\n")
        self.w.tool("qvm-kill", name)
        # A request right after a change (before the preloads are refreshed)
        # skips the outdated ones for a new disposable.
        queue = self.settled(2)
        self.w.tool("qvm-prefs", self.dvm, "vcpus", "3")
        name = self.create_disposable()[2:].decode()
        self.assertNotIn(name, queue)
        self.assertEqual(self.prop(name, "vcpus"), "3")
        self.assertIn("discarding preloaded %s: it has outdated property(ies): vcpus" % queue[0], self.w.log())
        self.settled(2)

    # --- crash recovery -------------------------------------------------------------------------------

    def restart(self):
        self.events.close()
        self.w.start_daemon()
        self.events = Events(self.w.socket)

    def crash_at(self, event, action):
        """Starts `action`, kills aeried with SIGKILL as soon as `event` is
        seen for a DispVM, restarts it."""
        n = len(self.events.events)
        action()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with self.events.cond:
                hit = [s for s, e, kw in self.events.events[n:]
                       if e == event and (s or kw.get("vm", "")).startswith("disp")]
            if hit:
                break
            time.sleep(0.0005)
        else:
            raise AssertionError("no %s event" % event)
        os.kill(self.w.daemon.pid, signal.SIGKILL)
        self.w.daemon.wait()
        self.w.daemon = None
        self.restart()

    def request_in_background(self):
        def request():
            try:
                self.create_disposable()
            except OSError:
                pass  # the daemon died under it
        threading.Thread(target=request, daemon=True).start()

    def assertHealthy(self, count, handed_out_ok=False):
        """After recovery: `count` complete preloads, no other disposable
        (but the one a request had been given, if its answer was stored before
        the crash: running, no longer a preload), and nothing left of the
        removed ones."""
        before = self.uuids()
        queue = self.settled(count)
        time.sleep(0.3)
        others = set(self.dispvms()) - set(queue)
        if handed_out_ok and others:
            self.assertEqual(len(others), 1, others)
            other = others.pop()
            self.assertEqual(self.w.listed()[other]["state"], "Running")
            self.assertEqual(self.prop(other, "is_preload"), "False")
            self.w.tool("qvm-kill", other)
            wait_for(lambda: other not in self.w.listed(), 10, "the handed-out disposable removed")
        self.assertEqual(set(self.dispvms()), set(queue), "only queued disposables")
        for name in queue:
            f = self.features(name)
            self.assertEqual(f.get("preload-dispvm-in-progress"), "", name)
        gone = {n: u for n, u in before.items() if n not in self.w.listed()}
        if gone:
            self.assertEqual(self.w.wait_clean(gone), {}, "left of removed preloads")
        return queue

    def test_09_crash_in_each_phase_of_the_preload_cycle(self):
        self.make_dvm(delay=0)
        set_max = lambda n: lambda: self.feature(self.dvm, "preload-dispvm-max", n)  # noqa: E731
        self.crash_at("domain-add", set_max(1))            # made, not started
        self.assertHealthy(1)
        self.crash_at("domain-pre-start", set_max(2))      # starting
        self.assertHealthy(2)
        self.crash_at("domain-start", set_max(3))          # started, not paused
        self.assertHealthy(3)
        self.crash_at("domain-paused", set_max(4))         # paused, completion being stored
        self.assertHealthy(4)
        # While a request hands one out.
        self.crash_at("domain-unpaused", self.request_in_background)
        self.assertHealthy(4, handed_out_ok=True)
        # Stale records: a queued name that is no qube, a complete preload
        # whose qube died while aeried was down, one marked in progress.
        queue = self.settled(4)
        os.kill(self.w.daemon.pid, signal.SIGKILL)
        self.w.daemon.wait()
        self.w.daemon = None
        dead, marked = queue[0], queue[1]
        pid = self.w.init_pid(dead)
        thaw(pid)  # a frozen task does not die
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: ended(pid), 10, "the preload's PID 1 to end")
        db = sqlite3.connect(os.path.join(self.w.state, "qubes.db"))
        with db:
            uuid = {n: u for n, u in db.execute("SELECT name, uuid FROM qubes")}
            db.execute("UPDATE qube_features SET value = ? WHERE uuid = ? AND key = 'preload-dispvm'",
                       (" ".join(queue + ["disp99999"]), uuid[self.dvm]))
            db.execute("UPDATE qube_features SET value = '1' WHERE uuid = ? AND key = 'preload-dispvm-in-progress'",
                       (uuid[marked],))
        db.close()
        self.restart()
        healthy = self.assertHealthy(4)
        self.assertNotIn(dead, healthy)
        self.assertNotIn(marked, healthy)
        self.assertNotIn("disp99999", healthy)
        for name in (dead, marked):
            self.assertNotIn(name, self.w.listed())
            self.assertEqual(self.w.wait_clean({name: uuid[name]}), {})
        self.assertIn("dropping absent preloaded qube(s)", self.w.log())

    # --- failure ---------------------------------------------------------------------------------------

    def test_10_failed_preload_is_removed_not_retried(self):
        self.make_dvm(extra=[("qrexec_timeout", "2")], delay=0)
        self.install(self.tpl, "/etc/qubes-rpc/qubes.WaitForRunningSystem", "#!/bin/sh\nsleep 30\n")
        self.feature(self.dvm, "supported-rpc.qubes.WaitForRunningSystem", "1")
        self.feature(self.dvm, "preload-dispvm-max", 1)
        def started():
            queue, listed = self.queue(), self.w.listed()
            return queue and queue[0] in listed and (queue[0], listed[queue[0]]["uuid"])
        preload, uuid = wait_for(started, 10, "a preload to start")
        wait_for(lambda: preload not in self.w.listed(), 10, "the failed preload to be removed")
        self.assertIn("preloading %s for %s failed: Timed out call to 'qubes.WaitForRunningSystem' after '2' "
                      "seconds during preload startup" % (preload, self.dvm), self.w.log())
        self.assertEqual(self.w.wait_clean({preload: uuid}), {})
        # Not retried: no new disposable appears.
        added = len(self.events_named("domain-add"))
        time.sleep(4)
        self.assertEqual(len(self.events_named("domain-add")), added)
        self.assertEqual(self.queue(), [])
        # Nor after a request (which fills gaps): it gets a new disposable.
        fresh = self.create_disposable()[2:].decode()
        time.sleep(1)
        self.assertEqual(self.queue(), [])
        self.assertIn("not preloading disposables of %s: the last attempt failed" % self.dvm, self.w.log())
        self.w.tool("qvm-remove", "-f", fresh)
        # Asking again retries: a service that answers makes it complete.
        self.install(self.tpl, "/etc/qubes-rpc/qubes.WaitForRunningSystem", "#!/bin/sh\nexit 0\n")
        self.feature(self.dvm, "preload-dispvm-max", 2)
        self.settled(2)

    def test_11_request_falls_back_when_the_preload_does_not_come_up(self):
        # Agents wait while the flag is there (the bin folder is seen inside).
        bin_dir = self.custom_bin_dir("#!/bin/sh\nwhile [ -e /run/aerie/bin/slow ]; do sleep 0.1; done\n"
                                      "exec /run/aerie/bin/qrexec-agent.real \"$@\"\n", keep_agent_as="qrexec-agent.real")
        self.make_dvm(extra=[("qrexec_timeout", "3")], delay=0, bin_dir=bin_dir)
        open(os.path.join(bin_dir, "slow"), "w").close()
        t0 = time.monotonic()
        self.feature(self.dvm, "preload-dispvm-max", 1)
        preload = wait_for(lambda: self.queue(), 10, "a preload to start")[0]
        reply = self.create_disposable()
        waited = time.monotonic() - t0
        self.assertRegex(reply, rb"^0\0disp")
        fresh = reply[2:].decode()
        self.assertNotEqual(fresh, preload)
        self.assertGreater(waited, 2.5)
        self.assertLess(waited, 8)
        self.assertIn("falling back to a new disposable instead of " + preload, self.w.log())
        wait_for(lambda: preload not in self.w.listed(), 10, "the preload that did not come up removed")
        os.unlink(os.path.join(bin_dir, "slow"))
        self.w.tool("qvm-start", fresh)
        self.assertEqual(self.w.run(fresh, "hostname")[1], fresh + "\n")
        self.w.tool("qvm-kill", fresh)

    # --- through qrexec --------------------------------------------------------------------------------

    def call_dispvm(self, caller, target="@dispvm", service="test.Echo+x", data="ping"):
        return self.w.run(caller, "qrexec-client-vm %s %s" % (target, service), input=data, check=False)

    def setup_echo(self):
        self.w.tool("qvm-start", self.tpl)
        self.install(self.tpl, "/etc/qubes-rpc/test.Echo", ECHO_SERVICE)
        self.w.start_policy_daemon("test.Echo * %s @dispvm allow\n"
                                   "test.Echo * %s @dispvm:%s allow\n" % (self.work, self.work, self.dvm))
        self.w.tool("qvm-prefs", self.work, "default_dispvm", self.dvm)

    def test_12_qrexec_call_to_dispvm_cold_and_preloaded(self):
        self.make_dvm()
        self.setup_echo()
        self.w.tool("qvm-start", self.work)
        for preloaded in (False, True):
            if preloaded:
                self.feature(self.dvm, "preload-dispvm-delay", 60)
                self.feature(self.dvm, "preload-dispvm-max", 1)
                queued = self.settled(1)
            for target in ("@dispvm", "@dispvm:" + self.dvm):
                n = len(self.events.events)
                rc, out, err = self.call_dispvm(self.work, target)
                self.assertEqual(rc, 0, err + self.w.log())
                m = re.match(r"test\.Echo in (disp[0-9]+) for %s arg=x\nping$" % re.escape(self.work), out)
                self.assertTrue(m, out)
                disp = m.group(1)
                if preloaded and target == "@dispvm":
                    self.assertEqual(disp, queued[0])
                with self.events.cond:
                    added = [kw.get("vm") for s, e, kw in self.events.events[n:] if e == "domain-add"]
                if not preloaded or target != "@dispvm":
                    self.assertIn(disp, added)
                wait_for(lambda: disp not in self.w.listed(), 10, "%s removed after the call" % disp)
        # qvm-run --dispvm from dom0.
        r = self.w.tool("qvm-run", "-p", "--dispvm=" + self.dvm, "hostname")
        name = r.stdout.strip()
        self.assertRegex(name, r"^disp[0-9]+$")
        wait_for(lambda: name not in self.w.listed(), 10, "the qvm-run disposable removed")
        # Denied by policy: no disposable made.
        self.w.write_policy("test.Echo * @anyvm @anyvm deny\n")
        before = set(self.dispvms())
        rc, _, _ = self.call_dispvm(self.work)
        self.assertEqual(rc, 126)
        self.assertEqual(set(self.dispvms()), before)

    # --- no leak -----------------------------------------------------------------------------------------

    def footprint(self):
        """What exists on the host for the world: counted, not named (the
        disposables' names change)."""
        left = self.w.leftovers()
        pool = os.path.join(self.w.state, "pool")
        count = lambda d: len(os.listdir(d)) if os.path.isdir(d) else 0  # noqa: E731
        return {
            "mounts": len(left["mounts"]), "cgroups": len(left["cgroups"]), "processes": len(left["processes"]),
            "pool vm": count(os.path.join(pool, "vm")), "pool run": count(os.path.join(pool, "run")),
            "runtime qubes": count(os.path.join(self.w.runtime, "qubes")),
            "backend": count(os.path.join(self.w.runtime, "backend")),
            "qrexec sockets": count(self.w.qrexec_dir), "qubes": len(self.w.listed()),
            "fds of aeried": count("/proc/%d/fd" % self.w.daemon.pid),
        }

    def test_13_no_leak_after_500_disposable_runs(self):
        self.make_dvm()
        self.setup_echo()
        self.w.tool("qvm-start", self.work)
        self.feature(self.dvm, "preload-dispvm-delay", 0)
        self.feature(self.dvm, "preload-dispvm-max", 2)
        self.settled(2)
        time.sleep(0.5)
        before = self.footprint()
        script = ("ok=0; for i in $(seq 500); do echo x | qrexec-client-vm @dispvm test.Echo+leak >/dev/null "
                  "&& ok=$((ok+1)); done; echo $ok")
        rc, out, err = self.w.run(self.work, script, timeout=900)
        if out.strip() != "500":  # what the host saw of the refused calls
            policy_log = os.path.join(self.w.root, "policy-daemon.log")
            try:
                with open(policy_log, errors="replace") as f:
                    err += "\n--- policy daemon log:\n" + f.read()[-3000:]
            except OSError:
                pass
            err += "\n--- aeried log:\n" + self.w.log()
            err += "\n--- the caller's qrexec-daemon log:\n" + self.w.qube_log(self.work, "qrexec-daemon")
        self.assertEqual(out.strip(), "500", err)
        self.settled(2)
        def back():
            # aeried's descriptors: the pool keeps one user namespace per qid
            # it has shown volumes to (qids are reused: a few more after the
            # runs, never one per run), the rest varies with what it does.
            now = self.footprint()
            fds = now.pop("fds of aeried")
            return fds <= before["fds of aeried"] + 8 and now == {k: v for k, v in before.items()
                                                                 if k != "fds of aeried"}
        wait_for(back, GRACE * 4, "the footprint to come back: before %s, now %s" % (before, self.footprint()))
        added = len(self.events_named("domain-add"))
        deleted = len(self.events_named("domain-delete"))
        self.assertGreaterEqual(deleted, 500)
        self.assertEqual(added - deleted, 1 + 2)  # dvm and the two queued preloads


def main():
    return run_tests(sys.argv, ("qvm-unpause", "qvm-features"))


if __name__ == "__main__":
    sys.exit(main())
