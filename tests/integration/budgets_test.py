"""Host-wide budgets (docs/security.md, "Host-wide budgets"): every qube's cgroup sits
under one parent whose limits keep a reserve for the host, one qube gets a
share of the qubes' tasks, and the size defaults fit the host.

  fork bomb    two qubes fork until the kernel says EAGAIN, at once: each
               stops at its own share (pids.max of its cgroup, an eighth of
               the parent's), and meanwhile the host starts a process and
               aeried answers admin.vm.List. The bomb is capped twice: by the
               parent limit this test gives aeried (asserted before anything
               forks) and by a count in the bomb itself.
  parent       with the host's own budget: a qube's cgroup is under the
               parent, whose tasks, memory and CPU limits leave the host a
               reserve (tasks <= min(pid_max, threads-max) - 4096, memory <=
               MemTotal - 1 GiB, CPU below the host's weight and quota);
               still so after aeried is restarted and adopts the qube.
  defaults     vcpus below this host's CPUs (one CPU: 1); memory and maxmem
               times six qubes fit in the qubes' memory.
Needs root (exit code 77 otherwise).
Run: python3 budgets_test.py BUILD_DIR"""

import json
import os
import select
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from aerie_world import WorldTest, bin_path, run_tests  # noqa: E402

BOMB_PARENT_PIDS = 1024  # the qubes' tasks in the fork-bomb test
BOMB_CAP = 400           # forks a bomb tries at most, whatever the cgroups say
TYPICAL_QUBES = 6

# Forks sleeping children until fork fails (or BOMB_CAP); prints the count
# and the errno, then holds its children until killed.
BOMB = r"""
import os, sys, time
n, err = 0, 0
for _ in range(%d):
    try:
        pid = os.fork()
    except OSError as e:
        err = e.errno
        break
    if pid == 0:
        time.sleep(120)
        os._exit(0)
    n += 1
print("forked %%d errno %%d" %% (n, err), flush=True)
time.sleep(120)
""" % BOMB_CAP


def read_int(path):
    with open(path) as f:
        text = f.read().strip()
    return None if text == "max" else int(text.split()[0])


def meminfo_total():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


class BudgetsTest(WorldTest):

    def cgroups_of(self, qube):
        with open(os.path.join(self.w.runtime, "backend", qube, "qube.json")) as f:
            return json.load(f)["cgroups"]

    def controller_dir(self, qube, controller):
        dirs = self.cgroups_of(qube)
        return dirs.get(controller) or dirs.get("unified")

    def start(self, *names):
        for name in names:
            self.w.tool("qvm-start", name)

    def test_fork_bomb_in_two_qubes_leaves_the_host_answering(self):
        self.w.daemon_args = ["--qubes-pids-max", str(BOMB_PARENT_PIDS)]
        self.make_world(appvms=("work", "vault"))
        self.start(self.work, self.vault)
        share = BOMB_PARENT_PIDS // 8
        for q in (self.work, self.vault):
            d = self.controller_dir(q, "pids")
            # Asserted before anything forks: without these limits the bomb
            # would only be held by its own count.
            self.assertEqual(read_int(os.path.join(os.path.dirname(d), "pids.max")), BOMB_PARENT_PIDS, d)
            self.assertEqual(read_int(os.path.join(d, "pids.max")), share, d)

        bombs = [subprocess.Popen([bin_path("qvm-run"), "-p",
                                   "--no-filter-escape-chars", q, "python3 -c '%s'" % BOMB.replace("'", "'\\''")],
                                  env=self.w.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE) for q in (self.work, self.vault)]
        try:
            results = []
            for b in bombs:
                ready, _, _ = select.select([b.stdout], [], [], 60)
                self.assertTrue(ready, "the bomb did not report")
                results.append(b.stdout.readline().decode().split())
            # While both qubes are at their limit: the host and aeried answer.
            self.assertEqual(subprocess.run(["/bin/true"]).returncode, 0)
            self.assertIn(self.work, self.w.listed())
            for q, r in zip((self.work, self.vault), results):
                self.assertEqual(r[0], "forked", r)
                self.assertLess(int(r[1]), BOMB_CAP, "%s: fork never failed: %r" % (q, r))
                self.assertEqual(int(r[3]), 11, "%s: fork failed with errno %s, not EAGAIN" % (q, r[3]))
                d = self.controller_dir(q, "pids")
                self.assertLessEqual(read_int(os.path.join(d, "pids.current")), share)
            parent = os.path.dirname(self.controller_dir(self.work, "pids"))
            self.assertLessEqual(read_int(os.path.join(parent, "pids.current")), BOMB_PARENT_PIDS)
        finally:
            for q in (self.work, self.vault):
                self.w.tool("qvm-kill", q, check=False)
            for b in bombs:
                try:
                    b.wait(30)
                except subprocess.TimeoutExpired:
                    b.kill()
                    b.wait()
                b.stdout.close()
                b.stderr.close()

    def test_parent_cgroup_keeps_a_reserve_for_the_host(self):
        self.make_world(appvms=("work", "vault"))
        self.start(self.work)
        self.check_parent(self.work)
        # Adopted after a restart, and the next qube joins the same parent.
        self.w.stop_daemon(signal.SIGKILL)
        self.w.start_daemon()
        self.assertEqual(self.w.listed()[self.work]["state"], "Running")
        self.start(self.vault)
        self.check_parent(self.vault)
        for c in self.cgroups_of(self.work):
            self.assertEqual(os.path.dirname(self.cgroups_of(self.work)[c]),
                             os.path.dirname(self.cgroups_of(self.vault)[c]))

    def check_parent(self, qube):
        tasks = min(read_int("/proc/sys/kernel/pid_max"), read_int("/proc/sys/kernel/threads-max"))
        mem_total = meminfo_total()
        cpus = len(os.sched_getaffinity(0))
        dirs = self.cgroups_of(qube)
        for controller, d in dirs.items():
            self.assertEqual(os.path.basename(d), qube)
            self.assertRegex(os.path.basename(os.path.dirname(d)), r"^aerie(-[0-9a-f]+)?$")
        v2 = "unified" in dirs
        pids = self.controller_dir(qube, "pids")
        parent_pids = read_int(os.path.join(os.path.dirname(pids), "pids.max"))
        self.assertIsNotNone(parent_pids, "the qubes' tasks are not limited")
        self.assertLessEqual(parent_pids, tasks - 4096)
        self.assertLessEqual(read_int(os.path.join(pids, "pids.max")) * 8, parent_pids)
        mem = os.path.dirname(self.controller_dir(qube, "memory"))
        limit = read_int(os.path.join(mem, "memory.max" if v2 else "memory.limit_in_bytes"))
        self.assertLessEqual(limit, mem_total - (1 << 30))
        cpu = os.path.dirname(self.controller_dir(qube, "cpu"))
        if v2:
            if os.path.exists(os.path.join(cpu, "cpu.weight")):
                self.assertLess(read_int(os.path.join(cpu, "cpu.weight")), 100)
                quota, period = open(os.path.join(cpu, "cpu.max")).read().split()
                self.assertLess(int(quota), cpus * int(period))
        else:
            self.assertLess(read_int(os.path.join(cpu, "cpu.shares")), 1024)
            quota = read_int(os.path.join(cpu, "cpu.cfs_quota_us"))
            self.assertGreater(quota, 0)
            self.assertLess(quota, cpus * read_int(os.path.join(cpu, "cpu.cfs_period_us")))

    def test_size_defaults_fit_the_host(self):
        self.make_world()
        cpus = len(os.sched_getaffinity(0))

        def default(prop):
            reply = self.w.ok("admin.vm.property.Get", self.work, prop)
            self.assertTrue(reply.startswith("default=True type=int "), reply)
            return int(reply.split()[-1])
        vcpus = default("vcpus")
        # One CPU: a qube needs one, the parent's quota still leaves the host half.
        self.assertTrue(vcpus < cpus or vcpus == 1, "vcpus %d on a host with %d CPUs" % (vcpus, cpus))
        qubes_memory = meminfo_total() - (1 << 30)
        self.assertLessEqual(default("memory") * TYPICAL_QUBES << 20, qubes_memory)
        self.assertLessEqual(default("maxmem") * TYPICAL_QUBES << 20, qubes_memory)
        self.assertLessEqual(default("maxmem") << 20, meminfo_total() // 2)


def main():
    return run_tests(sys.argv, ("qvm-kill",))


if __name__ == "__main__":
    sys.exit(main())
