#!/usr/bin/env python3
"""qubes.Filecopy between real qubes: qvm-copy (target @default, decided by
the policy), qvm-copy-to-vm and qvm-move from one qube into
~/QubesIncoming/<source> of another, compared by checksums (a tree with a
subfolder, a symlink, an empty file, a large file, times and modes); names
that need allow-all-names; a refused call; an existing name refused with
Qubes' message and a move that then keeps its source; qvm-copy-to-vm and
qvm-move-to-vm from dom0 (into ~/QubesIncoming/dom0). Needs root."""

import hashlib
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aerie_world import PREFIX, WorldTest, bin_path, run_tests  # noqa: E402

# The files in the sending qube, made in its home.
MAKE_TREE = r"""set -e
cd ~
rm -rf src one move
mkdir -p src/sub/deeper
head -c 3000000 /dev/urandom > src/big
printf 'hello\n' > src/sub/small
: > src/sub/empty
ln -s ../big src/sub/link
chmod 0640 src/sub/small
chmod 0500 src/sub/deeper
touch -d '2001-02-03 04:05:06.123456789' src/sub/small
printf 'one\n' > one
printf 'moved\n' > move
"""

# What is compared on both sides: every file's and folder's type, mode, size
# and mtime, every file's checksum, every link's target (a link's own times
# are not sent, as in Qubes).
LISTING = (r"cd %s && find %s ! -type l -printf '%%p %%y %%m %%s %%T@\n' | sort && "
           r"find %s -type l -printf '%%p -> %%l\n' | sort && find %s -type f -exec sha256sum {} + | sort")


class QfileTest(WorldTest):

    def start(self, qube):
        self.w.tool("qvm-start", qube)

    def setUp(self):
        super().setUp()
        self.other = PREFIX + "other"
        self.make_world(appvms=("work", "vault", "other"))
        w, v, o = self.work, self.vault, self.other
        self.w.start_policy_daemon(
            "qubes.Filecopy * %s @default allow target=%s\n"
            "qubes.Filecopy * %s %s allow\n"
            "qubes.Filecopy * @anyvm @anyvm deny\n" % (w, v, w, v))
        for q in (w, v, o):
            self.start(q)

    def listing(self, qube, folder, names):
        return self.w.run(qube, LISTING % (folder, names, names, names))[1]

    def test_01_qvm_copy_to_the_policys_default_target(self):
        w, v = self.work, self.vault
        self.w.run(w, MAKE_TREE)
        sent = self.listing(w, "~", "src")
        self.assertIn("src/big f 644 3000000", sent)
        self.assertIn("src/sub/link -> ../big", sent)
        self.assertIn("src/sub/small f 640 6 981173106.1234567890", sent)
        rc, out, err = self.w.run(w, "cd ~ && qvm-copy --without-progress src/")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.listing(v, "~/QubesIncoming/" + w, "src"), sent)
        # Owned by the receiving user, in a folder only it can read.
        self.assertEqual(self.w.run(v, "stat -c '%U %a' ~/QubesIncoming ~/QubesIncoming/" + w)[1],
                         "user 700\nuser 700\n")

    def test_02_qvm_copy_to_vm_and_qvm_move(self):
        w, v = self.work, self.vault
        self.w.run(w, MAKE_TREE)
        rc, out, err = self.w.run(w, "cd ~ && qvm-copy-to-vm %s one" % v)
        self.assertEqual(rc, 0, err)
        self.assertIn("use qvm-copy/qvm-move instead of qvm-copy-to-vm", err)
        self.assertEqual(self.w.run(v, "cat ~/QubesIncoming/%s/one" % w)[1], "one\n")
        # With progress (the default): the byte count on stderr.
        rc, out, err = self.w.run(w, "cd ~ && qvm-move move")
        self.assertEqual(rc, 0, err)
        self.assertIn("sent 1/1 KB", err)
        self.assertEqual(self.w.run(v, "cat ~/QubesIncoming/%s/move" % w)[1], "moved\n")
        self.assertNotEqual(self.w.run(w, "test -e ~/move", check=False)[0], 0, "the moved file is gone")

    def test_03_refusals(self):
        w, v, o = self.work, self.vault, self.other
        self.w.run(w, MAKE_TREE)
        self.w.run(w, "cd ~ && qvm-copy --without-progress one")
        # The same name again: refused by the receiver, with Qubes' message;
        # a move keeps its source.
        rc, out, err = self.w.run(w, "cd ~ && qvm-move --without-progress one", check=False)
        self.assertNotEqual(rc, 0)
        self.assertIn('A file named "one" already exists in QubesIncoming dir', err)
        self.assertEqual(self.w.run(w, "cat ~/one")[1], "one\n")
        # Denied by the policy: nothing arrives.
        rc, out, err = self.w.run(w, "cd ~ && qvm-copy-to-vm %s one" % o, check=False)
        self.assertEqual(rc, 126, err)
        self.assertIn("Request refused", err)
        self.assertNotEqual(self.w.run(o, "test -e ~/QubesIncoming", check=False)[0], 0)
        # The sender's own checks: a top-level symlink, "..".
        rc, out, err = self.w.run(w, "cd ~/src/sub && qvm-copy link", check=False)
        self.assertEqual((rc, err), (1, 'qvm-copy: Refusing to copy unsafe symbolic link "link"\n'))
        rc, out, err = self.w.run(w, "cd ~/src && qvm-copy ..", check=False)
        self.assertEqual(rc, 1)
        self.assertIn("which is not allowed", err)

    def test_04_names_that_need_allow_all_names(self):
        w, v = self.work, self.vault
        # A right-to-left override and a newline: sent as
        # qubes.Filecopy+allow-all-names, received as they are.
        self.w.run(w, "cd ~ && mkdir odd && printf x > \"odd/a$(printf '\\342\\200\\256')b\" && "
                      "printf y > \"odd/c$(printf '\\nd')\" && printf z > odd/caf\u00e9")
        rc, out, err = self.w.run(w, "cd ~ && qvm-copy --without-progress odd")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.listing(v, "~/QubesIncoming/" + w, "odd"), self.listing(w, "~", "odd"))
        self.assertIn("caf\u00e9", self.w.run(v, "ls ~/QubesIncoming/%s/odd" % w)[1])

    def test_05_from_dom0(self):
        v = self.vault
        src = os.path.join(self.w.root, "dom0-files")
        os.makedirs(os.path.join(src, "tree", "sub"))
        with open(os.path.join(src, "tree", "sub", "data"), "wb") as f:
            f.write(os.urandom(200000))
        with open(os.path.join(src, "moved"), "w") as f:
            f.write("moved\n")
        r = subprocess.run([bin_path("qvm-copy-to-vm"), v, "tree"], cwd=src, env=self.w.env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, "", ""))
        with open(os.path.join(src, "tree", "sub", "data"), "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
        self.assertEqual(self.w.run(v, "sha256sum ~/QubesIncoming/dom0/tree/sub/data")[1].split()[0], digest)
        r = subprocess.run([bin_path("qvm-move-to-vm"), v, "moved"], cwd=src, env=self.w.env,
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertFalse(os.path.exists(os.path.join(src, "moved")))
        self.assertEqual(self.w.run(v, "cat ~/QubesIncoming/dom0/moved")[1], "moved\n")
        # qvm-copy needs a target in dom0, as Qubes' dom0 tool says.
        r = subprocess.run([bin_path("qvm-copy"), "tree"], cwd=src, env=self.w.env, capture_output=True, text=True)
        self.assertEqual((r.returncode, r.stdout), (1, "qvm-copy is not supported in dom0; use qvm-copy-to-vm instead.\n"))


def main():
    return run_tests(sys.argv, ("aerie-logd", "qvm-copy", "qfile-agent", "qfile-unpacker"))


if __name__ == "__main__":
    sys.exit(main())
