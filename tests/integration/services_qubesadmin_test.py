"""Upstream qubesadmin's qvm-run against aeried, end to end: the Python
client of Qubes (QubesOS/qubes-core-admin-client, not part of Aerie) pointed
at a world's aeried, running Aerie's qrexec-client and the services every
qube ships. Skipped (exit code 77) unless QUBESADMIN_SOURCE names a checkout
of that client (its folder holding the qubesadmin package); nothing of it is
kept here.

  forms   plain (no output, the command ran), -p (stdout, exit code, stdin),
          --filter-escape-chars (qrexec-client -t),
          -u root (qubes.VMRootShell, and qubes.VMShell as root without the
          template's supported-rpc.qubes.VMRootExec), --no-shell and
          arguments (qubes.VMExec: words kept, no shell), -u root --no-shell
          (qubes.VMRootExec), --service with and without -p, --localcmd,
          --dispvm=APPVM and --dispvm (default_dispvm), --no-autostart.
  mgmt    the same client inside a management qube (qubesadmin's
          QubesRemote: the Admin API and the services through
          qrexec-client-vm, decided by the policy): -p with autostart,
          --no-shell, --service, stdin and exit code, -u root
          (qubes.VMRootShell where the policy allows it), and a qube the
          policy gives no service: refused (exit code 126).
Run: QUBESADMIN_SOURCE=/path/to/qubes-core-admin-client python3 services_qubesadmin_test.py BUILD_DIR"""

import io
import os
import subprocess
import sys
import tarfile

from aerie_world import PREFIX, WorldTest, bin_path, run_tests

SOURCE = os.environ.get("QUBESADMIN_SOURCE", "")

# Loads the tool from SOURCE with the socket and qrexec-client given in the
# environment (qubesadmin reads its package version from installed metadata,
# which a plain checkout lacks).
DRIVER = r"""
import importlib, importlib.metadata, os, sys
real_version, real_metadata = importlib.metadata.version, importlib.metadata.metadata
importlib.metadata.version = lambda n: "4.4.0" if n == "qubesadmin" else real_version(n)
importlib.metadata.metadata = lambda n: ({"summary": "", "version": "4.4.0", "license": "", "author": "",
                                          "Author-email": ""} if n == "qubesadmin" else real_metadata(n))
sys.path.insert(0, os.environ["QUBESADMIN_SOURCE"])
import qubesadmin.config
qubesadmin.config.QUBESD_SOCKET = os.environ["QUBESD_SOCKET"]
qubesadmin.config.QREXEC_CLIENT = os.environ["QREXEC_CLIENT"]
import qubesadmin.app
tool = importlib.import_module("qubesadmin.tools." + sys.argv[1].replace("-", "_"))
sys.exit(tool.main(sys.argv[2:], app=qubesadmin.app.QubesLocal()))
"""


class QubesadminQvmRunTest(WorldTest):
    def upstream(self, tool, *args, input=b""):
        env = dict(self.w.env, QUBESADMIN_SOURCE=SOURCE, QREXEC_CLIENT=self.client)
        r = subprocess.run([sys.executable, "-c", DRIVER, tool] + list(args), input=input, env=env,
                           capture_output=True, timeout=120)
        return r.returncode, r.stdout, r.stderr

    def qvm_run(self, *args, input=b""):
        return self.upstream("qvm-run", *args, input=input)

    def test_qvm_run_forms(self):
        self.make_world()
        w = self.work
        # Aerie's qrexec-client with this world's socket folder (a real host has /var/run/qubes).
        self.client = os.path.join(self.w.root, "qrexec-client")
        with open(self.client, "w") as f:
            f.write('#!/bin/sh\nexec %s --socket-dir=%s "$@"\n' % (bin_path("qrexec-client"), self.w.qrexec_dir))
        os.chmod(self.client, 0o755)

        # Plain: started (autostart), nothing shown but the notice.
        rc, out, err = self.qvm_run(w, "touch /tmp/plain-ran")
        self.assertEqual((rc, out, err), (0, b"", b"Running 'touch /tmp/plain-ran' on %s\n" % w.encode()))
        self.assertEqual(self.qvm_run("-p", w, "ls /tmp/plain-ran"), (0, b"/tmp/plain-ran\n", b""))
        self.assertEqual(self.qvm_run("-p", w, "echo hi; id -un; exit 3"), (3, b"hi\nuser\n", b""))
        self.assertEqual(self.qvm_run("-p", w, "cat; echo end", input=b"stdin-data\n"),
                         (0, b"stdin-data\nend\n", b""))
        # --filter-escape-chars (the default on a terminal): qrexec-client -t,
        # the qube's escape sequence arrives defused (inside qvm-run's colour).
        rc, out, err = self.qvm_run("-p", "--filter-escape-chars", w, "printf 'a\\033[2Jb\\n'")
        self.assertEqual((rc, out, err), (0, b"\x1b[0;31ma_[2Jb\n\x1b[0m", b""))
        # -u root: qubes.VMRootShell (the template announces qubes.VMRootExec) ...
        self.assertEqual(self.qvm_run("-p", "-u", "root", w, "id -un"), (0, b"root\n", b""))
        # --no-shell / arguments: qubes.VMExec, every word as given.
        self.assertEqual(self.qvm_run("-p", "--no-shell", w, "printf", "[%s]", "a b", "", "$(id)"),
                         (0, b"[a b][][$(id)]", b""))
        self.assertEqual(self.qvm_run("-p", w, "printf", "[%s]", "-x", "\u00fc"), (0, "[-x][\u00fc]".encode(), b""))
        self.assertEqual(self.qvm_run("-p", "-u", "root", "--no-shell", w, "id", "-un"), (0, b"root\n", b""))
        rc, out, err = self.qvm_run("-p", "--no-shell", w, "nosuchcommand")
        self.assertEqual((rc, err), (127, b"qubes.VMExec: cannot run nosuchcommand: No such file or directory\n"))
        # ... and qubes.VMShell as root where the template does not announce it.
        self.w.tool("qvm-features", "--unset", self.tpl, "supported-rpc.qubes.VMRootExec")
        self.w.tool("qvm-features", "--unset", self.tpl, "vmexec")
        self.assertEqual(self.qvm_run("-p", "-u", "root", w, "id -un"), (0, b"root\n", b""))
        self.assertEqual(self.qvm_run("-p", "--no-shell", w, "printf", "[%s]", "a b", "$(id)"), (0, b"[a b][$(id)]", b""))
        # --service.
        rc, out, err = self.qvm_run("-p", "--service", w, "qubes.GetDate")
        self.assertEqual((rc, err), (0, b""))
        self.assertRegex(out, rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\n$")
        self.assertEqual(self.qvm_run("--service", w, "qubes.GetDate"), (0, b"", b"Running 'qubes.GetDate' on %s\n" % w.encode()))
        # --localcmd: the local command's stdio is the service's.
        out_file = os.path.join(self.w.root, "localcmd.out")
        self.assertEqual(self.qvm_run("-p", "--localcmd", "cat > " + out_file, w, "echo via-localcmd"), (0, b"", b""))
        with open(out_file, "rb") as f:
            self.assertEqual(f.read(), b"via-localcmd\n")
        # --dispvm: a disposable made, used and removed.
        self.w.tool("qvm-prefs", w, "template_for_dispvms", "True")
        rc, out, err = self.qvm_run("--dispvm=" + w, "-p", "hostname")
        self.assertEqual((rc, err), (0, b""))
        self.assertRegex(out, rb"^disp\d+\n$")
        self.assertEqual(self.upstream("qubes-prefs", "default_dispvm", w), (0, b"", b""))
        self.assertEqual(self.qvm_run("--dispvm", "-p", "--service", "qubes.VMShell", input=b"echo in disp; exit 4\n"),
                         (4, b"in disp\n", b""))
        self.assertNotIn("disp", self.w.tool("qvm-ls", "--raw-list").stdout)
        # --no-autostart on a halted qube: refused, nothing started.
        self.w.tool("qvm-shutdown", "--wait", w)
        rc, out, err = self.qvm_run("--no-autostart", "-p", w, "true")
        self.assertNotEqual(rc, 0)
        self.assertEqual(self.w.current_state(w)["power_state"], "Halted")

    def test_qvm_run_from_a_management_qube(self):
        rpc = os.path.join(self.w.root, "rpc")
        os.makedirs(rpc)
        self.w.daemon_args = ["--rpc-dir", rpc]
        self.make_world(appvms=("work", "mgmt", "other"))
        work, mgmt = self.work, PREFIX + "mgmt"
        grants = ["admin.vm.List * {m} @adminvm allow target=dom0", "admin.vm.List * {m} {w} allow target=dom0",
                  "admin.vm.List * {m} {m} allow target=dom0", "admin.vm.property.Get * {m} {w} allow target=dom0",
                  "admin.vm.feature.CheckWithTemplate * {m} {w} allow target=dom0",
                  "admin.vm.Start * {m} {w} allow target=dom0"]
        grants += ["%s * {m} {w} allow" % s for s in ("qubes.VMShell", "qubes.VMRootShell", "qubes.VMExec",
                                                      "qubes.VMRootExec", "qubes.GetDate")]
        self.w.start_policy_daemon("".join(g.format(m=mgmt, w=work) + "\n" for g in grants))
        self.w.tool("qvm-start", mgmt)
        # The client and a driver into the management qube's home.
        archive = io.BytesIO()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            tar.add(os.path.join(SOURCE, "qubesadmin"), arcname="qubesadmin")
        r = subprocess.run([bin_path("qvm-run"), "-p", mgmt, "mkdir -p ~/qac && tar -C ~/qac -xf -"],
                           input=archive.getvalue(), env=self.w.env, capture_output=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.w.run(mgmt, "cat > ~/driver.py", input=REMOTE_DRIVER)

        def remote(command, input=None):
            return self.w.run(mgmt, "python3 ~/driver.py qvm-run " + command, input=input, check=False, timeout=120)
        self.assertEqual(remote("-p %s 'echo hi from $(hostname); id -un'" % work), (0, "hi from %s\nuser\n" % work, ""))
        self.assertEqual(remote("-p --no-shell %s printf '[%%s]' 'a b' '' '$(id)'" % work), (0, "[a b][][$(id)]", ""))
        rc, out, err = remote("-p --service %s qubes.GetDate" % work)
        self.assertEqual((rc, err), (0, ""))
        self.assertRegex(out, r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\n$")
        self.assertEqual(remote("-p %s 'cat; exit 5'" % work, input="in-data\n"), (5, "in-data\n", ""))
        self.assertEqual(remote("-p -u root %s 'id -un'" % work), (0, "root\n", ""))
        self.assertEqual(remote("-p -u root --no-shell %s id -un" % work), (0, "root\n", ""))
        # No grant for this qube: the client cannot even see it.
        rc, out, err = remote("-p %s 'echo no'" % (PREFIX + "other"))
        self.assertNotEqual(rc, 0)
        self.assertEqual(out, "")


# qubesadmin in a qube: QubesRemote, Aerie's qrexec-client-vm.
REMOTE_DRIVER = """
import importlib, importlib.metadata, os, sys
real_version, real_metadata = importlib.metadata.version, importlib.metadata.metadata
importlib.metadata.version = lambda n: "4.4.0" if n == "qubesadmin" else real_version(n)
importlib.metadata.metadata = lambda n: ({"summary": "", "version": "4.4.0", "license": "", "author": "",
                                          "Author-email": ""} if n == "qubesadmin" else real_metadata(n))
sys.path.insert(0, os.path.expanduser("~/qac"))
import qubesadmin.config
qubesadmin.config.QREXEC_CLIENT_VM = "/run/aerie/bin/qrexec-client-vm"
import qubesadmin.app
tool = importlib.import_module("qubesadmin.tools." + sys.argv[1].replace("-", "_"))
sys.exit(tool.main(sys.argv[2:], app=qubesadmin.app.QubesRemote()))
"""


if __name__ == "__main__":
    if not os.path.isdir(os.path.join(SOURCE, "qubesadmin")):
        print("QUBESADMIN_SOURCE does not name a qubes-core-admin-client checkout; skipped")
        sys.exit(77)
    sys.exit(run_tests(sys.argv, more=("qvm-features", "qubes-vmexec")))
