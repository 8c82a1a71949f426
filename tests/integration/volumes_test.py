"""Volumes that are real (sized, snapshotted, worked on off the loop), with real qubes:

  busy start    a qube with 300,000 files in /rw starts (after a stop whose
                revision is kept in the background) while admin.vm.List
                keeps answering on aeried's socket, each answer within 100 ms:
                the storage work of a start runs off aeried's event loop.
  sized         /rw inside an AppVM is its 2 GiB private volume: writing
                beyond it fails with ENOSPC inside the qube, and the host's
                disk pays at most the volume's size.
  resize        admin.vm.volume.Resize (qvm-volume extend) grows a running
                qube's private volume; shrinking is refused with Qubes'
                StoragePoolException.
Needs root (skipped otherwise)."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from aerie_world import WorldTest, run_tests  # noqa: E402

GIB = 1 << 30


class VolumesTest(WorldTest):

    def volume_info(self, qube, volume):
        return dict(line.split("=", 1) for line in self.w.ok("admin.vm.volume.Info", qube, volume).splitlines())

    def test_01_busy_start_leaves_the_admin_api_answering(self):
        self.make_world()
        self.w.tool("qvm-start", self.work)
        self.w.run(self.work, "python3 -c 'import os\n"
                              "for d in range(300):\n"
                              "    p = \"/rw/many/%d\" % d\n"
                              "    os.makedirs(p)\n"
                              "    for f in range(1000): open(\"%s/%d\" % (p, f), \"w\").close()'",
                   user="root", timeout=600)
        self.w.tool("qvm-shutdown", "--wait", self.work, timeout=300)
        self.w.tool("qvm-start", self.work)  # a revision of 300,000 files is kept at this stop
        self.w.tool("qvm-shutdown", "--wait", self.work, timeout=300)

        latencies = []
        done = threading.Event()

        def start():
            try:
                self.w.tool("qvm-start", self.work, timeout=300)
            finally:
                done.set()
        starter = threading.Thread(target=start)
        starter.start()
        while not done.is_set():
            t0 = time.monotonic()
            listed = self.w.ok("admin.vm.List")
            latencies.append(time.monotonic() - t0)
            self.assertIn(self.tpl, listed)
            time.sleep(0.005)
        starter.join()
        self.assertEqual(self.w.run(self.work, "ls /rw/many/299 | wc -l")[1], "1000\n")
        self.assertGreater(len(latencies), 0)
        # Answered within 100 ms (nine in ten: on a loaded 2-core machine the
        # scheduler alone may hold one answer back), and none held for long:
        # a loop blocked by the storage work shows as seconds (3.3 s before).
        ordered = sorted(latencies)
        p90 = ordered[int(len(ordered) * 0.9) - 1 if len(ordered) >= 10 else -1]
        self.assertLess(p90, 0.100, "admin.vm.List during the start: 90th percentile %.0f ms of %d" % (
            p90 * 1000, len(latencies)))
        self.assertLess(max(latencies), 0.500, "admin.vm.List during the start: slowest %.0f ms of %d" % (
            max(latencies) * 1000, len(latencies)))

    def test_02_private_is_sized(self):
        self.make_world()
        self.w.tool("qvm-start", self.work)
        # Reserved without writing, then written until full; at most 3 GiB in all.
        rc, out, err = self.w.run(
            self.work,
            "python3 -c 'import os, errno\n"
            "st = os.statvfs(\"/rw\")\n"
            "fd = os.open(\"/rw/reserved\", os.O_WRONLY | os.O_CREAT)\n"
            "os.posix_fallocate(fd, 0, max(1, min(st.f_bavail * st.f_frsize - (100 << 20), 2 << 30)))\n"
            "fd = os.open(\"/rw/data\", os.O_WRONLY | os.O_CREAT)\n"
            "try:\n"
            "    for i in range(1024): os.write(fd, b\"x\" * (1 << 20))\n"
            "    os.fsync(fd)\n"
            "    print(\"no limit\")\n"
            "except OSError as e:\n"
            "    print(errno.errorcode[e.errno])'", user="root", check=False, timeout=300)
        self.assertEqual(out.strip(), "ENOSPC", err)
        image = self.w.volume_path(self.work, "private")
        self.assertLess(os.stat(image).st_blocks * 512, 2 * GIB + (64 << 20))
        info = self.volume_info(self.work, "private")
        self.assertEqual(info["size"], str(2 * GIB))
        self.assertLess(int(info["usage"]), 2 * GIB + (64 << 20))
        self.assertGreater(int(info["usage"]), 50 << 20)  # what was written; the reserved part costs nothing

    def test_03_resize_grows_running_and_refuses_to_shrink(self):
        self.make_world()
        self.w.tool("qvm-start", self.work)
        self.w.run(self.work, "echo kept > /rw/kept", user="root")
        self.w.tool("qvm-volume", "extend", self.work + ":private", "3GiB")
        self.assertEqual(self.volume_info(self.work, "private")["size"], str(3 * GIB))
        reply = self.w.call("admin.vm.volume.Resize", self.work, "private", str(GIB).encode())
        self.assertEqual(reply, b"2\0StoragePoolException\0\0For your own safety, shrinking of private is disabled. "
                         b"If you really know what you are doing, use `truncate` on vm/%s/private manually.\0"
                         % self.w.uuid(self.work).encode())
        reply = self.w.call("admin.vm.volume.Resize", self.work, "root", str(20 * GIB).encode())
        self.assertTrue(reply.startswith(b"2\0StoragePoolException\0"), reply)
        # Seen inside at once where the host allows online resizing, else from the next start.
        self.w.tool("qvm-shutdown", "--wait", self.work)
        self.w.tool("qvm-start", self.work)
        rc, out, _ = self.w.run(self.work, "python3 -c 'import os; s = os.statvfs(\"/rw\"); "
                                           "print(s.f_blocks * s.f_frsize)'; cat /rw/kept")
        size, kept = out.split()
        self.assertGreater(int(size), 3 * GIB - GIB // 2)
        self.assertEqual(kept, "kept")


def main():
    return run_tests(sys.argv, ("qvm-volume",))


if __name__ == "__main__":
    sys.exit(main())
