"""The Admin API reached from qubes through qrexec, end to end: aeried
publishes every admin.* method as a dom0 service (--rpc-dir), per-qube
qrexec daemons run dom0 services from that directory, and the policy daemon
decides every call with the shipped policy (policy.d/ of this repository)
and the system info it asks aeried for on each request (no --system-info).
Run: python3 admin_qrexec_test.py BUILD_DIR"""

import os
import shutil
import socket
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qrexec_harness import World, wait_for  # noqa: E402

BUILD = None
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHIPPED_POLICY = os.path.join(REPO, "policy.d")

# Rules of the test services; the shipped files come after this one.
TEST_POLICY = """
test.Tagged  *  work  @tag:trusted  allow
test.Tagged  *  @anyvm @anyvm       deny
test.Typed   *  work  @type:AppVM   allow
test.Typed   *  @anyvm @anyvm       deny
"""

# Grants added to the shipped include files, as a Qubes admin would:
# "mgmt" reads the system and the qubes it created, and "work"; "builder"
# creates qubes and manages what it created.
GRANTS = {
    "admin-global-ro": ["mgmt @adminvm allow target=dom0",
                        "mgmt @tag:created-by-mgmt allow target=dom0",
                        "mgmt mgmt allow target=dom0"],
    "admin-local-ro": ["mgmt work allow target=dom0"],
    "admin-global-rwx": ["builder @adminvm allow target=dom0"],
    "admin-local-rwx": ["builder @tag:created-by-builder allow target=dom0",
                        "builder builder allow target=dom0"],
}

QUBES = [("mgmt", 11), ("builder", 12), ("work", 13), ("vault", 14), ("outsider", 15), ("fresh", 16)]
CREATED_AT_START = ["mgmt", "builder", "work", "vault", "outsider"]  # "fresh" comes later


def admin_call(path, method, dest="dom0", payload=b"", source="dom0", timeout=10):
    """One qubesd-framed request on the admin socket; the raw reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(("%s %s name %s\0" % (method, source, dest)).encode() + payload)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def policy_daemon_ask(path, source, target, service_and_arg):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(("source=%s\nintended_target=%s\nservice_and_arg=%s\n\n"
                   % (source, target, service_and_arg)).encode())
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


class AdminThroughQrexec(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        w = cls.world = World(BUILD, TEST_POLICY, QUBES)
        # The shipped policy, with the grants appended to its include files.
        for name in os.listdir(SHIPPED_POLICY):
            src = os.path.join(SHIPPED_POLICY, name)
            if name.endswith(".policy"):
                shutil.copy(src, w.policy_dir)
        shutil.copytree(os.path.join(SHIPPED_POLICY, "include"), os.path.join(w.policy_dir, "include"))
        for name, lines in GRANTS.items():
            with open(os.path.join(w.policy_dir, "include", name), "a") as f:
                f.write("\n" + "\n".join(lines) + "\n")

        # The admin daemon, publishing admin.* as dom0 services.
        cls.state_dir = os.path.join(w.root, "aeried")
        cls.admin_socket = os.path.join(w.root, "qubesd.sock")
        cls.internal_socket = os.path.join(w.root, "qubesd.internal.sock")
        cls.rpc_dir = os.path.join(w.root, "dom0-rpc")
        cls.aeried = None
        cls.start_aeried()
        cls.ok(admin_call(cls.admin_socket, "admin.vm.Create.TemplateVM", payload=b"name=tpl label=black"))
        for name in CREATED_AT_START:
            cls.ok(admin_call(cls.admin_socket, "admin.vm.Create.AppVM+tpl",
                              payload=("name=%s label=red" % name).encode()))

        # The policy daemon in live mode, and a policy program for fallbacks.
        w.policy_daemon = subprocess.Popen(
            [w.bin("qrexec-policy-daemon"), "--socket", w.policy_socket, "--path", w.policy_dir,
             "--internal-socket", cls.internal_socket], stderr=w.log("policy-daemon"))
        wait_for(lambda: os.path.exists(w.policy_socket))
        program = os.path.join(w.root, "policy-program")
        with open(program, "w") as f:
            f.write('#!/bin/sh\nexec %s --internal-socket %s --path %s "$@"\n'
                    % (w.bin("qrexec-policy-exec"), cls.internal_socket, w.policy_dir))
        os.chmod(program, 0o755)

        vault = w.qubes["vault"]
        vault.add_service("test.Tagged", '#!/bin/sh\necho "tagged call from $QREXEC_REMOTE_DOMAIN"\n')
        w.qubes["fresh"].add_service("test.Typed", '#!/bin/sh\necho "typed call from $QREXEC_REMOTE_DOMAIN"\n')
        for q in w.qubes.values():
            q.daemon_env = {"QREXEC_SERVICE_PATH": cls.rpc_dir}
            q.start_agent()
        for q in w.qubes.values():
            q.start_daemon(policy_program=program)

    @classmethod
    def start_aeried(cls):
        w = cls.world
        cls.aeried = subprocess.Popen(
            [w.bin("aeried"), "--state-dir", cls.state_dir, "--socket", cls.admin_socket,
             "--internal-socket", cls.internal_socket, "--rpc-dir", cls.rpc_dir, "--policy-dir", w.policy_dir],
            stderr=w.log("aeried"))

        def up():
            if cls.aeried.poll() is not None:
                raise AssertionError("aeried exited with %d\n%s" % (cls.aeried.returncode, w.logs()))
            try:
                return admin_call(cls.admin_socket, "admin.vm.List", timeout=2).startswith(b"0\0")
            except OSError:
                return False
        wait_for(up, timeout=15)

    @classmethod
    def stop_aeried(cls):
        if cls.aeried and cls.aeried.poll() is None:
            cls.aeried.terminate()
            cls.aeried.wait(10)

    @classmethod
    def tearDownClass(cls):
        cls.world.stop()
        cls.stop_aeried()
        if os.environ.get("AERIE_KEEP_TEST_DIR"):
            print("logs in", cls.world.root)
        else:
            cls.world.cleanup()

    @staticmethod
    def ok(reply):
        if not reply.startswith(b"0\0"):
            raise AssertionError("expected a success reply, got %r" % reply[:300])
        return reply[2:]

    # --- helpers -------------------------------------------------------------

    def call(self, source, target, service, input_=b""):
        return self.world.qubes[source].call(target, service, input_)

    def assertCall(self, result, code, stdout=None):
        self.assertEqual(result.returncode, code, "stderr: %r\n%s" % (result.stderr, self.world.logs()))
        if stdout is not None:
            self.assertEqual(result.stdout, stdout)

    def admin(self, method, dest="dom0", payload=b""):
        return admin_call(self.admin_socket, method, dest, payload)

    def qube_names(self):
        listing = self.ok(self.admin("admin.vm.List")).decode()
        return [line.split(" ", 1)[0] for line in listing.splitlines()]

    def tags(self, qube):
        return self.ok(self.admin("admin.vm.tag.List", qube)).decode().split()

    def policy_exec(self, source, target, service_and_arg, internal_socket=None):
        w = self.world
        return subprocess.run(
            [w.bin("qrexec-policy-exec"), "--path", w.policy_dir,
             "--internal-socket", internal_socket or self.internal_socket, source, target, service_and_arg],
            capture_output=True, timeout=30)

    # --- the shipped files ------------------------------------------------------

    def test_shipped_policy_passes_lint(self):
        lint = self.world.bin("qubes-policy-lint")
        top = sorted(os.path.join(SHIPPED_POLICY, n) for n in os.listdir(SHIPPED_POLICY) if n.endswith(".policy"))
        include_dir = os.path.join(SHIPPED_POLICY, "include")
        includes = sorted(os.path.join(include_dir, n) for n in os.listdir(include_dir))
        for argv in ([lint] + top, [lint, "-i"] + includes):
            r = subprocess.run(argv, capture_output=True, timeout=30)
            self.assertEqual((r.returncode, r.stdout), (0, b""), argv)

    def test_every_published_method_has_a_default_rule(self):
        with open(os.path.join(SHIPPED_POLICY, "90-admin-default.policy")) as f:
            listed = {line.split()[1] for line in f if line.startswith("!include-service ")}
        published = set(os.listdir(self.rpc_dir))
        # As upstream, creating an AdminVM has no rule (the daemon refuses it anyway).
        self.assertEqual(published - listed, {"admin.vm.Create.AdminVM", "admin.vm.CreateInPool.AdminVM"})

    # --- a. allowed qubes get qubesd's raw replies ------------------------------

    def test_allowed_qube_lists_qubes_with_the_raw_reply(self):
        r = self.call("mgmt", "dom0", "admin.vm.List")
        self.assertCall(r, 0)
        # dom0's own lines, of the qubes the policy lets mgmt list (R4.3's
        # qubes.ext.admin): admin.vm.List is a global read, granted on dom0,
        # on mgmt and on what mgmt created; work is only local-ro.
        full = self.admin("admin.vm.List")
        granted = [line for line in full[2:].split(b"\n")[:-1]
                   if line.split(b" ")[0] in (b"dom0", b"mgmt")
                   or self.admin("admin.vm.tag.Get+created-by-mgmt", line.split(b" ")[0].decode()) == b"0\0" b"1"]
        self.assertEqual(r.stdout, b"0\0" + b"".join(line + b"\n" for line in granted))
        self.assertIn(b"0\0dom0 class=AdminVM state=Running uuid=00000000-0000-0000-0000-000000000000\n", r.stdout)
        self.assertRegex(r.stdout, rb"\nmgmt class=AppVM state=Halted uuid=[0-9a-f-]{36}\n")
        self.assertNotIn(b"\nwork ", r.stdout)

    def test_allowed_qube_reads_a_property_of_the_qube_it_names(self):
        # The call names "work" as target; the policy sends it to dom0, and
        # the Admin API sees "work" as DEST (not dom0).
        r = self.call("mgmt", "work", "admin.vm.property.Get+label")
        self.assertCall(r, 0, b"0\0default=False type=label red")
        self.assertEqual(r.stdout, self.admin("admin.vm.property.Get+label", "work"))

    def test_creating_through_qrexec_tags_the_new_qube_with_its_creator(self):
        r = self.call("builder", "dom0", "admin.vm.Create.AppVM+tpl", b"name=built label=green")
        self.assertCall(r, 0, b"0\0")
        self.assertIn("built", self.qube_names())
        self.assertIn("created-by-builder", self.tags("built"))
        # The creator may now manage it (local-rwx for @tag:created-by-builder),
        # which also shows the policy saw the new tag at once.
        self.assertCall(self.call("builder", "built", "admin.vm.property.Set+label", b"blue"), 0, b"0\0")
        self.assertEqual(self.ok(self.admin("admin.vm.property.Get+label", "built")),
                         b"default=False type=label blue")

    def test_grants_follow_the_include_file_of_each_method(self):
        # admin.vm.tag.List is a local read: "mgmt work" in admin-local-ro
        # allows it; "mgmt mgmt" in admin-global-ro does not.
        self.assertCall(self.call("mgmt", "work", "admin.vm.tag.List"), 0, b"0\0created-by-dom0\n")
        self.assertCall(self.call("mgmt", "mgmt", "admin.vm.tag.List"), 126, b"")
        # admin.vm.List is a global read: "mgmt mgmt" allows it about itself.
        r = self.call("mgmt", "mgmt", "admin.vm.List")
        self.assertCall(r, 0)
        self.assertRegex(r.stdout, rb"^0\0mgmt class=AppVM state=Halted uuid=[0-9a-f-]{36}\n$")

    # --- b. qubes not allowed are refused and nothing changes -------------------

    def test_qube_without_grants_is_refused(self):
        before = self.admin("admin.vm.List")
        self.assertCall(self.call("outsider", "dom0", "admin.vm.List"), 126, b"")
        self.assertCall(self.call("outsider", "dom0", "admin.vm.Create.AppVM+tpl", b"name=evil label=red"),
                        126, b"")
        self.assertCall(self.call("outsider", "work", "admin.vm.tag.Set+owned"), 126, b"")
        self.assertCall(self.call("outsider", "work", "admin.vm.property.Get+label"), 126, b"")
        self.assertEqual(self.admin("admin.vm.List"), before)
        self.assertNotIn("owned", self.tags("work"))

    def test_grants_do_not_reach_beyond_their_targets_and_methods(self):
        before = self.admin("admin.vm.property.Get+label", "work")
        # mgmt may read "work" but not change it, nor create qubes.
        self.assertCall(self.call("mgmt", "work", "admin.vm.property.Set+label", b"purple"), 126, b"")
        self.assertCall(self.call("mgmt", "dom0", "admin.vm.Create.AppVM+tpl", b"name=sneaky label=red"), 126, b"")
        # builder manages only what it created.
        self.assertCall(self.call("builder", "work", "admin.vm.property.Set+label", b"purple"), 126, b"")
        self.assertCall(self.call("builder", "vault", "admin.vm.Remove"), 126, b"")
        # mgmt reads only the qubes its rules name.
        self.assertCall(self.call("mgmt", "vault", "admin.vm.property.Get+label"), 126, b"")
        self.assertEqual(self.admin("admin.vm.property.Get+label", "work"), before)
        self.assertNotIn("sneaky", self.qube_names())
        self.assertIn("vault", self.qube_names())

    def test_getall_is_denied_by_the_shipped_default(self):
        self.assertCall(self.call("outsider", "work", "admin.vm.property.GetAll"), 126, b"")

    # --- c. the policy sees the live system -----------------------------------

    def test_tag_changes_apply_to_the_very_next_call(self):
        self.assertCall(self.call("work", "vault", "test.Tagged"), 126, b"")
        self.ok(self.admin("admin.vm.tag.Set+trusted", "vault"))
        try:
            self.assertCall(self.call("work", "vault", "test.Tagged"), 0, b"tagged call from work\n")
        finally:
            self.ok(self.admin("admin.vm.tag.Remove+trusted", "vault"))
        self.assertCall(self.call("work", "vault", "test.Tagged"), 126, b"")

    def test_created_qube_is_at_once_a_target(self):
        # "fresh" runs (agent and daemon) but the admin daemon does not know it.
        self.assertNotIn("fresh", self.qube_names())
        self.assertCall(self.call("work", "fresh", "test.Typed"), 126, b"")
        self.assertCall(self.call("builder", "dom0", "admin.vm.Create.AppVM+tpl", b"name=fresh label=orange"),
                        0, b"0\0")
        self.assertCall(self.call("work", "fresh", "test.Typed"), 0, b"typed call from work\n")

    # --- d. qrexec-policy-exec asks the admin daemon too ----------------------

    def test_policy_exec_decides_as_the_policy_daemon(self):
        w = self.world
        requests = [("mgmt", "dom0", "admin.vm.List+"), ("outsider", "dom0", "admin.vm.List+"),
                    ("mgmt", "work", "admin.vm.property.Get+label"), ("builder", "dom0", "admin.vm.Create.AppVM+tpl"),
                    ("work", "vault", "test.Tagged+")]

        def compare():
            for source, target, service in requests:
                r = self.policy_exec(source, target, service)
                daemon = policy_daemon_ask(w.policy_socket, source, target, service)
                # The daemon sends the program's text without its last newline (as Qubes').
                self.assertEqual(r.stdout, daemon + b"\n", (source, target, service, r.stderr))
                self.assertEqual(r.returncode, 0 if b"\nresult=allow\n" in r.stdout else 1)

        compare()
        allowed = self.policy_exec("mgmt", "dom0", "admin.vm.List+")
        self.assertIn(b"target=dom0\n", allowed.stdout)
        self.assertEqual(self.policy_exec("work", "vault", "test.Tagged+").returncode, 1)
        self.ok(self.admin("admin.vm.tag.Set+trusted", "vault"))
        try:
            self.assertEqual(self.policy_exec("work", "vault", "test.Tagged+").returncode, 0)
            compare()
        finally:
            self.ok(self.admin("admin.vm.tag.Remove+trusted", "vault"))

    def test_without_the_admin_daemon_everything_is_denied(self):
        # Stops aeried for this test only; it comes back over the same store.
        self.stop_aeried()
        try:
            r = self.policy_exec("mgmt", "dom0", "admin.vm.List+")
            self.assertEqual(r.returncode, 1)
            self.assertEqual(r.stdout, b"result=deny\n")
            self.assertIn(b"error getting system info", r.stderr)
            self.assertIn(self.internal_socket.encode(), r.stderr)
            self.assertEqual(policy_daemon_ask(self.world.policy_socket, "mgmt", "dom0", "admin.vm.List+"),
                             b"result=deny")
            self.assertCall(self.call("mgmt", "dom0", "admin.vm.List"), 126, b"")
        finally:
            self.start_aeried()
        self.assertCall(self.call("mgmt", "dom0", "admin.vm.List"), 0)


if __name__ == "__main__":
    BUILD = sys.argv.pop(1)
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print("%d passed, %d failed" % (result.testsRun - failed, failed))
    sys.exit(1 if failed else 0)
