#!/usr/bin/env python3
"""qubes.Filecopy across two hosts over Qubes Air: A's work copies a tree
(a subfolder, a symlink, a large file) with qvm-copy (@default, which A's
policy points at the RemoteVM of B's vault) and qvm-copy-to-vm; it arrives in
B's vault under ~/QubesIncoming/<A's work as B knows it>, compared by
checksums. Each host's policy decides its own leg: B refusing the call makes
qvm-copy fail with nothing written. Needs root (exit code 77 otherwise).
Run: python3 qfile_air_test.py BUILD_DIR"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from aerie_world import run_tests  # noqa: E402
from air_hosts import TwoHostsTest, pair_hosts  # noqa: E402

MAKE_TREE = r"""set -e
cd ~
mkdir -p src/sub
head -c 5000000 /dev/urandom > src/big
printf 'hello\n' > src/sub/small
ln -s ../big src/sub/link
chmod 0600 src/sub/small
printf 'one\n' > one
"""

LISTING = (r"cd %s && find %s ! -type l -printf '%%p %%y %%m %%s %%T@\n' | sort && "
           r"find %s -type l -printf '%%p -> %%l\n' | sort && find %s -type f -exec sha256sum {} + | sort")


class QfileAirTest(TwoHostsTest):

    def listing(self, host, qube, folder, names):
        return host.w.run(qube, LISTING % (folder, names, names, names))[1]

    def test_qvm_copy_across_hosts(self):
        a, b = self.a, self.b
        a.build(("work",), services={})
        b.build(("vault",), services={})
        pair_hosts(a, b, ("work",), ("vault",))
        work, vault = a.q("work"), b.q("vault")
        rvault, rwork = a.remote(b, "vault"), b.remote(a, "work")
        a.w.start_policy_daemon("qubes.Filecopy * {w} @default allow target={v}\n"
                                "qubes.Filecopy * {w} {v} allow\n".format(w=work, v=rvault))
        b.w.start_policy_daemon("qubes.Filecopy * {w} {v} allow\n".format(w=rwork, v=vault))
        a.w.tool("qvm-start", work)
        b.w.tool("qvm-start", vault)

        a.w.run(work, MAKE_TREE)
        sent = self.listing(a, work, "~", "src")
        self.assertIn("src/sub/link -> ../big", sent)
        rc, out, err = a.w.run(work, "cd ~ && qvm-copy --without-progress src", check=False, timeout=120)
        self.assertEqual(rc, 0, "%s\nA: %s\nB: %s" % (err, a.w.log()[-1500:], b.w.log()[-1500:]))
        self.assertEqual(self.listing(b, vault, "~/QubesIncoming/" + rwork, "src"), sent)

        rc, out, err = a.w.run(work, "cd ~ && qvm-copy-to-vm %s one" % rvault, check=False)
        self.assertEqual(rc, 0, err)
        self.assertEqual(b.w.run(vault, "cat ~/QubesIncoming/%s/one" % rwork)[1], "one\n")

        # B's policy refuses: the call fails on A, nothing more arrives on B.
        b.w.write_policy("qubes.Filecopy * {w} {v} deny\n".format(w=rwork, v=vault))
        a.w.run(work, "printf two > ~/two")
        rc, out, err = a.w.run(work, "cd ~ && qvm-copy --without-progress two", check=False)
        self.assertEqual(rc, 126, err)
        self.assertNotEqual(b.w.run(vault, "test -e ~/QubesIncoming/%s/two" % rwork, check=False)[0], 0)


def main():
    return run_tests(sys.argv, more=("aerie-logd", "qvm-air", "qvm-features", "aerie-air-relay", "aerie-air-call",
                                     "qvm-copy", "qfile-agent", "qfile-unpacker"))


if __name__ == "__main__":
    sys.exit(main())
