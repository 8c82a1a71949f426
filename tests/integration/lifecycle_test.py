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

import os
import signal
import sys
import time

from aerie_world import (ECHO_SERVICE, GRACE, PREFIX, Events, WorldTest, bin_path, ended, run_tests, wait_for)


class LifecycleTest(WorldTest):
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
        self.assertEqual([e for e, _ in self.events.of(self.work)][:9],
                         ["domain-pre-start", "domain-pre-spawn", "property-reset:xid", "property-reset:stubdom_xid",
                          "property-reset:start_time", "domain-spawn", "domain-pre-unpaused", "domain-unpaused",
                          "domain-start"])
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
        self.assertEqual(kw, {})  # as qubesd: no arguments
        self.assertNotIn("%s crashed" % self.work, self.w.log())
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
        count = os.path.join(self.w.volume_dir(self.work, "private"), "count")
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
        return self.custom_bin_dir("#!/bin/sh\ncase $(hostname) in\n"
                                   "  *bad) echo 'qrexec-agent: broken on purpose' >&2; exit 1 ;;\n"
                                   "  *) exec sleep 1000 ;;\nesac\n")

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
        # As qubesd: domain-start-failed, its reason the answer's message.
        failed = [kw for e, kw in self.events.of(bad) if e == "domain-start-failed"]
        self.assertEqual(len(failed), 1, self.events.of(bad))
        self.assertIn(failed[0]["reason"], r.stderr)

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
        self.events.wait(mute, "domain-shutdown")
        names = [e for e, _ in self.events.of(mute)]
        self.assertLess(names.index("domain-start-failed"), names.index("domain-stopped"), names)
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
        private = self.w.volume_dir(self.work, "private")
        self.assertTrue(os.path.exists(os.path.join(private, "aerie-rw-marker")))
        self.assertTrue(os.path.exists(os.path.join(private, "home", "user", "aerie-home-marker")))
        self.assertFalse(os.path.exists(os.path.join(self.w.volume_dir(self.tpl, "root"), "etc",
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
        with self.w.halted_volume(self.tpl, "root") as root:
            with open(os.path.join(root, "etc", "aerie-tpl-marker")) as f:
                self.assertEqual(f.read(), "template-write\n")
        # An AppVM started afterwards sees its template's root as it now is.
        self.start(self.work)
        self.assertEqual(self.w.run(self.work, "cat /etc/aerie-tpl-marker")[1], "template-write\n")

    def test_09_appvm_cannot_write_its_template_root(self):
        self.make_world()
        with self.w.halted_volume(self.tpl, "root") as root:
            with open(os.path.join(root, "etc", "hostname"), "rb") as f:
                hostname_before = f.read()
            listing_before = sorted(os.listdir(os.path.join(root, "etc")))
        self.start(self.work)
        root = self.w.volume_dir(self.tpl, "root")  # mounted while the AppVM runs
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
    return run_tests(sys.argv, ("qvm-pause", "qvm-unpause", "qvm-check"))


if __name__ == "__main__":
    sys.exit(main())
