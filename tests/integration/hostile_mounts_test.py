"""What the host mounts for a qube, against the qube's root. Every test fails
when the protection it names is taken out.

  home link    root in an AppVM replaces /rw/home by a symbolic link (to
               ../.lower, i.e. its template's root as the pool shows it; to
               "/"; to another qube's private volume) and the qube is
               restarted: the start fails with a message naming the qube and
               the link, nothing of the target is mounted (the template's
               root and the other qube's volume stay untouched), nothing is
               left; put back, the qube starts with its home as it was.
  disposables  the same link in a disposable template: neither it nor a
               disposable made from it starts.
  missing home a /rw/home the qube removed is made again (owned by the qube's
               root) at the next start.
  locked       inside a running qube, root cannot remount what the host gave
               it (Aerie's binaries, QubesDB, the uplink folder, the host's
               /usr, /rw) writable or without nosuid/nodev, neither with
               mount -o remount nor with mount_setattr, nor unmount it; its
               own mounts stay its to change.
  mountinfo    /proc/self/mountinfo inside names no host folder of Aerie's
               (the build or install folder, the state or runtime folders)
               for what the host mounted read-only, nor for the vchan folder
               (a small tmpfs of the qube's own, which also bounds what the
               qube can write there).
Needs root (exit code 77 otherwise).
Run: python3 hostile_mounts_test.py BUILD_DIR"""

import json
import os
import subprocess
import tempfile
import sys

from aerie_world import PREFIX, WorldTest, bin_path, mount_image_aside, run_tests

# Run as root inside a qube: tries to loosen the host's mounts; one JSON line.
LOOSEN = r'''
import ctypes, errno, json, os, struct
libc = ctypes.CDLL(None, use_errno=True)
MS_REMOUNT, MS_BIND, MS_RDONLY, MS_NOSUID, MS_NODEV = 32, 4096, 1, 2, 4
ATTR_RDONLY, ATTR_NOSUID, ATTR_NODEV = 1, 2, 4

def res(rc):
    return "ok" if rc == 0 else errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))

def remount(path, flags):
    return res(libc.mount(None, path.encode(), None, ctypes.c_ulong(MS_REMOUNT | MS_BIND | flags), None))

def setattr_clear(path, attr):
    ma = ctypes.create_string_buffer(struct.pack("QQQQ", 0, attr, 0, 0))  # attr_set, attr_clr, propagation, userns_fd
    return res(libc.syscall(442, -100, path.encode(), 0, ma, 32))      # mount_setattr(AT_FDCWD, path, 0, ...)

def umount(path):
    return res(libc.umount2(path.encode(), 2))                         # MNT_DETACH

out = {}
for path in ("/run/aerie/bin", "/run/qubes-db", "/run/aerie-air", "/usr"):
    out[path] = {"remount_rw": remount(path, MS_NOSUID | MS_NODEV),
                 "clear_rdonly": setattr_clear(path, ATTR_RDONLY),
                 "umount": umount(path)}
for path in ("/rw", "/home"):
    out[path] = {"remount_suid": remount(path, MS_NODEV),
                 "clear_nosuid": setattr_clear(path, ATTR_NOSUID),
                 "clear_nodev": setattr_clear(path, ATTR_NODEV),
                 "umount": umount(path)}
# Its own mounts stay its own.
os.makedirs("/mnt/own", exist_ok=True)
own = {"mount": res(libc.mount(b"own", b"/mnt/own", b"tmpfs", 0, None))}
own["remount_ro"] = remount("/mnt/own", MS_RDONLY)
own["remount_rw"] = remount("/mnt/own", 0)
own["umount"] = umount("/mnt/own")
out["own"] = own
print(json.dumps(out))
'''


class HostileMountsTest(WorldTest):

    def setUp(self):
        super().setUp()
        self.other = PREFIX + "other"
        self.dvm = PREFIX + "dvm"

    # --- helpers ------------------------------------------------------------------------------------

    def plant(self, qube, command):
        """Runs `command` as root in `qube`, then shuts it down."""
        self.w.tool("qvm-start", qube)
        self.w.run(qube, command, user="root")
        self.w.tool("qvm-shutdown", "--wait", qube)

    def assertStartRefused(self, qube, *words):
        uuid = self.w.uuid(qube)
        r = self.w.tool("qvm-start", qube, check=False)
        if r.returncode == 0:
            # What the qube got instead: the proof of the escape.
            _, out, _ = self.w.run(qube, "ls -a /home | head -20; grep ' /home ' /proc/self/mountinfo",
                                   user="root", check=False)
            self.fail("%s started with /rw/home a symbolic link; its /home:\n%s" % (qube, out))
        message = r.stderr + r.stdout
        for word in (qube, "home") + words:
            self.assertIn(word, message)
        # Halted (a disposable: removed, as after any failed start).
        self.assertIn(self.w.listed().get(qube, {"state": "Halted"})["state"], ("Halted",))
        self.assertEqual(self.w.wait_clean({qube: uuid}), {}, "left after the refused start")

    def template_root_listing(self):
        mounted = self.w.volume_dir(self.tpl, "root")
        if os.path.ismount(mounted):  # held by a running qube of the template
            return sorted(os.listdir(mounted)), sorted(os.listdir(os.path.join(mounted, "etc")))
        with self.w.halted_volume(self.tpl, "root") as root:
            return sorted(os.listdir(root)), sorted(os.listdir(os.path.join(root, "etc")))

    def put_home_back(self, qube):
        """What an administrator does on the host to repair the halted
        qube's volume: its image mounted aside, the link replaced."""
        view = tempfile.mkdtemp(prefix="repair-", dir=self.w.root)
        mount_image_aside(self.w.volume_path(qube, "private"), view, "loop,nodev,nosuid")
        try:
            os.unlink(os.path.join(view, "home"))
            os.rename(os.path.join(view, "home.orig"), os.path.join(view, "home"))
        finally:
            subprocess.run(["umount", view], check=True, capture_output=True)
            os.rmdir(view)

    def link_home_and_restart(self, target, *words):
        self.make_world(("work", "other"))
        before = self.template_root_listing()
        self.plant(self.work, "echo mine > /home/user/aerie-home-marker && mv /rw/home /rw/home.orig &&"
                              " ln -s %s /rw/home" % target)
        self.assertStartRefused(self.work, *words)
        self.assertEqual(self.template_root_listing(), before)
        # Other qubes of the template start and see their own home, and the
        # template as it was.
        self.w.tool("qvm-start", self.other)
        self.assertEqual(self.w.run(self.other, "ls /home")[1], "user\n")
        self.w.tool("qvm-shutdown", "--wait", self.other)
        # Repaired on the host, the qube starts with its home as it was.
        self.put_home_back(self.work)
        self.w.tool("qvm-start", self.work)
        self.assertEqual(self.w.run(self.work, "cat /home/user/aerie-home-marker")[1], "mine\n")

    # --- the /rw/home link ----------------------------------------------------------------------------

    def test_01_home_linked_to_the_template_root_is_refused(self):
        self.link_home_and_restart("../.lower", "symbolic link")

    def test_02_home_linked_to_the_host_root_is_refused(self):
        self.link_home_and_restart("/", "symbolic link")

    def test_03_home_linked_to_another_qubes_private_volume_is_refused(self):
        self.make_world(("work", "other"))
        self.w.tool("qvm-start", self.other)
        self.w.run(self.other, "echo secret > /home/user/aerie-other-secret")
        other_private = self.w.volume_path(self.other, "private")
        self.w.tool("qvm-shutdown", "--wait", self.other)
        stored = os.path.join(self.w.state, "pool", "vm", self.w.uuid(self.other), "private")
        for target in (other_private, stored, os.path.join(stored, "home")):
            self.plant(self.work, "rm -f /rw/home; [ -d /rw/home.orig ] || mv /rw/home /rw/home.orig;"
                                  " ln -s %s /rw/home" % target)
            self.assertStartRefused(self.work, "symbolic link")
            self.put_home_back(self.work)
        self.w.tool("qvm-start", self.other)
        self.assertEqual(self.w.run(self.other, "cat /home/user/aerie-other-secret")[1], "secret\n")

    def test_04_home_replaced_by_a_file_is_refused(self):
        self.make_world()
        self.plant(self.work, "mv /rw/home /rw/home.orig && echo x > /rw/home")
        self.assertStartRefused(self.work, "not a directory")

    def test_05_disposable_template_with_a_home_link(self):
        self.make_world()
        self.w.tool("qvm-create", "--template", self.tpl, "--label", "green", self.dvm)
        self.w.tool("qvm-prefs", self.dvm, "template_for_dispvms", "True")
        before = self.template_root_listing()
        self.plant(self.dvm, "mv /rw/home /rw/home.orig && ln -s ../.lower /rw/home")
        self.assertStartRefused(self.dvm, "symbolic link")
        reply = self.w.call("admin.vm.CreateDisposable", self.dvm)
        self.assertTrue(reply.startswith(b"0\0"), reply)
        disp = reply[2:].decode()
        self.assertStartRefused(disp, "symbolic link")
        r = self.w.tool("qvm-run", "-p", "--dispvm=" + self.dvm, "ls /home", check=False)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        self.assertNotIn("etc", r.stdout)
        self.assertEqual(self.template_root_listing(), before)
        if disp in self.w.listed():
            self.w.tool("qvm-remove", "-f", disp, check=False)

    def test_06_missing_home_is_made_again(self):
        self.make_world()
        self.plant(self.work, "rm -rf /rw/home")
        self.w.tool("qvm-start", self.work)
        self.assertEqual(self.w.run(self.work, "stat -c '%u %F' /home", user="root")[1], "0 directory\n")
        self.w.run(self.work, "touch /home/aerie-new", user="root")

    # --- locked mounts --------------------------------------------------------------------------------

    def test_07_host_mounts_are_locked_inside(self):
        self.make_world()
        self.w.tool("qvm-start", self.work)
        _, out, _ = self.w.run(self.work, "python3 -", user="root", input=LOOSEN)
        got = json.loads(out.strip().splitlines()[-1])
        for path in ("/run/aerie/bin", "/run/qubes-db", "/run/aerie-air", "/usr"):
            self.assertEqual(got[path], {"remount_rw": "EPERM", "clear_rdonly": "EPERM", "umount": "EINVAL"}, path)
        for path in ("/rw", "/home"):
            self.assertEqual(got[path], {"remount_suid": "EPERM", "clear_nosuid": "EPERM", "clear_nodev": "EPERM",
                                         "umount": "EINVAL"}, path)
        self.assertEqual(got["own"], {"mount": "ok", "remount_ro": "ok", "remount_rw": "ok", "umount": "ok"})
        # The mount(8) way, too.
        for path in ("/run/aerie/bin", "/run/qubes-db", "/usr"):
            rc, _, _ = self.w.run(self.work, "mount -o remount,bind,rw %s" % path, user="root", check=False)
            self.assertNotEqual(rc, 0, path)
            rc, _, _ = self.w.run(self.work, "touch %s/aerie-evil" % path, user="root", check=False)
            self.assertNotEqual(rc, 0, path)
        self.assertFalse(os.path.exists(bin_path("aerie-evil")))

    def test_08_mountinfo_shows_no_host_folders(self):
        self.make_world()
        self.w.tool("qvm-start", self.work)
        _, out, _ = self.w.run(self.work, "cat /proc/self/mountinfo")
        build = os.path.dirname(bin_path("aeried"))
        seen = {}
        for line in out.splitlines():
            fields = line.split()
            seen[fields[4]] = line
        for target in ("/run/aerie/bin", "/run/qubes-db", "/run/aerie-air", "/usr", "/run/qubes-vchan"):
            self.assertIn(target, seen)
            line = seen[target]
            self.assertEqual(line.split()[3], "/", line)  # the root of what is mounted there
            for host in (build, self.w.root, os.path.realpath(build)):
                self.assertNotIn(host, line)
        self.assertNotIn(build, out)
        # What the qube writes into its vchan folder is bounded (not the host's /run).
        rc, _, _ = self.w.run(self.work, "dd if=/dev/zero of=/run/qubes-vchan/fill bs=1M count=8", user="root",
                              check=False)
        self.assertNotEqual(rc, 0)
        self.w.run(self.work, "rm -f /run/qubes-vchan/fill", user="root")
        # The pool's too: / (an AppVM's overlay of its template's root), /rw
        # and /home name no host folder, in their root or their options.
        for line in out.splitlines():
            self.assertNotIn(self.w.root, line)
            self.assertNotIn(self.w.state, line)

if __name__ == "__main__":
    sys.exit(run_tests(sys.argv))
