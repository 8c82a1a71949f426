"""Calls to disposables through qrexec: a qube calls "@dispvm" (or
"@dispvm:tpl"); its qrexec daemon asks the admin daemon for a disposable
(admin.vm.CreateDisposable, admin.vm.Start), runs the service there, and
kills it (admin.vm.Kill) once the service is over.

The admin daemon is a scripted stand-in on a Unix socket (qubesd framing) that
records every request; the "disposable" is a qube of the harness that runs
already (as a preloaded disposable does), whose daemon serves
qrexec.uuid:UUID. Run: python3 qrexec_dispvm_test.py BUILD_DIR"""

import os
import pwd
import socketserver
import statistics
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from qrexec_harness import World, wait_for  # noqa: E402

BUILD = None

TPL_UUID = "4c2b8a7e-1f3d-4b6a-9e5c-8d7f6a5b4c32"
OTHER_TPL_UUID = "5d3c9b8f-2a4e-4c7b-8f6d-9e8a7b6c5d43"

POLICY = """
test.Disp    *  work  @dispvm          allow
test.Disp    *  work  @dispvm:tpl      allow
test.Disp    *  work  @dispvm:tpl2     allow
test.AsUser  *  work  @dispvm          allow  user=%(user)s
test.Quick   *  work  @dispvm          allow
test.Plain   *  work  disp             allow
*            *  @anyvm @anyvm          deny
"""


class FakeAdminDaemon:
    """Answers Admin API requests as scripted: self.script maps a method to a
    function (dest, payload) -> reply bytes, or None to close with no reply."""

    def __init__(self, path):
        self.path = path
        self.requests = []  # (time, method, source, dest, payload)
        self.lock = threading.Lock()
        self.script = {}
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                data = b""
                while True:
                    chunk = self.request.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                header, _, payload = data.partition(b"\0")
                fields = header.decode().split(" ")
                if len(fields) != 4 or fields[2] != "name":
                    return
                method, source, _, dest = fields
                with fake.lock:
                    fake.requests.append((time.time(), method, source, dest, payload.decode()))
                    answer = fake.script.get(method, lambda d, p: b"0\0")
                reply = answer(dest, payload.decode())
                if reply is not None:
                    self.request.sendall(reply)

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True

        self.server = Server(path, Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def calls(self):
        with self.lock:
            return [(m, s, d, p) for _, m, s, d, p in self.requests]

    def reset(self, script=None):
        with self.lock:
            self.requests = []
            self.script = script or {}

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class QrexecDispVM(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.user = pwd.getpwuid(os.geteuid()).pw_name
        cls.world = World(BUILD, POLICY % {"user": cls.user}, [("work", 1), ("disp", 7)])
        w = cls.world
        cls.disp_uuid = w.qubes["disp"].uuid
        work_info = {"type": "AppVM", "tags": [], "uuid": w.qubes["work"].uuid, "power_state": "Running",
                     "default_dispvm": "tpl", "template_for_dispvms": False, "icon": "appvm-red",
                     "label": "red"}
        tpl = {"type": "AppVM", "tags": [], "uuid": TPL_UUID, "power_state": "Halted", "default_dispvm": None,
               "template_for_dispvms": True, "icon": "appvm-red", "label": "red"}
        w.write_system_info({"work": work_info, "tpl": tpl,
                             "tpl2": dict(tpl, uuid=OTHER_TPL_UUID)})
        cls.admin = FakeAdminDaemon(os.path.join(w.root, "qubesd.sock"))
        w.qubes["work"].daemon_env = {"QUBESD_SOCKET": cls.admin.path}
        disp = w.qubes["disp"]
        cls.end_file = os.path.join(w.root, "service-end")
        disp.add_service("test.Disp", '#!/bin/sh\necho "in-disp src=$QREXEC_REMOTE_DOMAIN '
                                      'svc=$QREXEC_SERVICE_FULL_NAME"\ncat\nsleep 0.2\n'
                                      'date +%%s.%%N > %s\n' % cls.end_file)
        disp.add_service("test.AsUser", "#!/bin/sh\nid -un\n")
        disp.add_service("test.Quick", "#!/bin/sh\necho quick\n")
        disp.add_service("test.Plain", "#!/bin/sh\necho plain\n")
        w.start()

    @classmethod
    def tearDownClass(cls):
        cls.world.stop()
        cls.admin.stop()
        if os.environ.get("AERIE_KEEP_TEST_DIR"):
            print("logs in", cls.world.root)
        else:
            cls.world.cleanup()

    def setUp(self):
        self.admin.reset()

    def created(self, uuid=None):
        reply = ("0\0uuid:" + (uuid or self.disp_uuid)).encode()
        return lambda dest, payload: reply

    def call(self, target, service, input_=b"", **kw):
        return self.world.qubes["work"].call(target, service, input_, **kw)

    def assertCall(self, result, code, stdout=None):
        self.assertEqual(result.returncode, code, "stderr: %r\n%s" % (result.stderr, self.world.logs()))
        if stdout is not None:
            self.assertEqual(result.stdout, stdout)

    def wait_for_kill(self, uuid=None):
        want = ("admin.vm.Kill", "dom0", "uuid:" + (uuid or self.disp_uuid), "")
        wait_for(lambda: want in self.admin.calls())
        return want

    # --- the call goes through ----------------------------------------------

    def test_default_dispvm_runs_the_service_then_kills_the_disposable(self):
        self.admin.reset({"admin.vm.CreateDisposable": self.created()})
        r = self.call("@dispvm", "test.Disp+x", b"hello\n")
        self.assertCall(r, 0, b"in-disp src=work svc=test.Disp+x\nhello\n")
        kill = self.wait_for_kill()
        self.assertEqual(self.admin.calls(), [
            ("admin.vm.CreateDisposable", "dom0", "uuid:" + TPL_UUID, "uuid"),
            ("admin.vm.Start", "dom0", "uuid:" + self.disp_uuid, ""),
            kill])
        # Killed only once the service was over.
        with open(self.end_file) as f:
            ended = float(f.read())
        killed = [t for t, m, *_ in self.admin.requests if m == "admin.vm.Kill"][0]
        self.assertGreaterEqual(killed, ended)

    def test_named_template(self):
        self.admin.reset({"admin.vm.CreateDisposable": self.created()})
        self.assertCall(self.call("@dispvm:tpl2", "test.Disp", b""), 0, b"in-disp src=work svc=test.Disp+\n")
        self.wait_for_kill()
        self.assertEqual(self.admin.calls()[0], ("admin.vm.CreateDisposable", "dom0", "uuid:" + OTHER_TPL_UUID,
                                                 "uuid"))

    def test_user_from_the_policy(self):
        self.admin.reset({"admin.vm.CreateDisposable": self.created()})
        self.assertCall(self.call("@dispvm", "test.AsUser"), 0, self.user.encode() + b"\n")
        self.wait_for_kill()

    def test_disposable_named_by_name(self):
        # An admin daemon that answers a name rather than uuid:UUID.
        self.admin.reset({"admin.vm.CreateDisposable": lambda d, p: b"0\0disp"})
        self.assertCall(self.call("@dispvm", "test.Disp", b"by name\n"), 0,
                        b"in-disp src=work svc=test.Disp+\nby name\n")
        wait_for(lambda: ("admin.vm.Kill", "dom0", "disp", "") in self.admin.calls())

    def test_calls_in_parallel(self):
        self.admin.reset({"admin.vm.CreateDisposable": self.created()})
        results = [None] * 8

        def one(i):
            results[i] = self.call("@dispvm", "test.Disp", b"n%d\n" % i)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(results))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for i, r in enumerate(results):
            self.assertCall(r, 0, b"in-disp src=work svc=test.Disp+\nn%d\n" % i)
        wait_for(lambda: sum(1 for c in self.admin.calls() if c[0] == "admin.vm.Kill") == len(results))

    # --- failures -------------------------------------------------------------

    def test_create_exception_refuses_the_call(self):
        self.admin.reset({"admin.vm.CreateDisposable":
                          lambda d, p: b"2\0QubesException\0\0Refusing to create DispVM\0"})
        r = self.call("@dispvm", "test.Disp")
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(r.stdout, b"")
        time.sleep(0.2)
        self.assertEqual([c[0] for c in self.admin.calls()], ["admin.vm.CreateDisposable"])

    def test_create_refused_without_reply(self):
        self.admin.reset({"admin.vm.CreateDisposable": lambda d, p: None})
        self.assertNotEqual(self.call("@dispvm", "test.Disp").returncode, 0)
        time.sleep(0.2)
        self.assertEqual([c[0] for c in self.admin.calls()], ["admin.vm.CreateDisposable"])

    def test_create_with_a_malformed_answer(self):
        for bad in (b"0\0../../etc", b"0\0uuid:../x", b"0\0", b"garbage", b"0\0dom0"):
            self.admin.reset({"admin.vm.CreateDisposable": lambda d, p, bad=bad: bad})
            self.assertNotEqual(self.call("@dispvm", "test.Disp").returncode, 0, bad)
            time.sleep(0.1)
            self.assertEqual([c[0] for c in self.admin.calls()], ["admin.vm.CreateDisposable"], bad)

    def test_start_failure_refuses_and_kills(self):
        self.admin.reset({"admin.vm.CreateDisposable": self.created(),
                          "admin.vm.Start": lambda d, p: b"2\0QubesVMError\0\0Not enough memory\0"})
        self.assertNotEqual(self.call("@dispvm", "test.Disp").returncode, 0)
        kill = self.wait_for_kill()
        self.assertEqual([c[0] for c in self.admin.calls()],
                         ["admin.vm.CreateDisposable", "admin.vm.Start", "admin.vm.Kill"])
        self.assertEqual(self.admin.calls()[-1], kill)

    def test_disposable_without_a_daemon_refuses_and_kills(self):
        ghost = "deadbeef-0000-4000-8000-000000000000"
        self.admin.reset({"admin.vm.CreateDisposable": self.created(ghost)})
        self.assertNotEqual(self.call("@dispvm", "test.Disp").returncode, 0)
        self.wait_for_kill(ghost)

    def test_no_admin_daemon(self):
        os.rename(self.admin.path, self.admin.path + ".away")
        try:
            self.assertNotEqual(self.call("@dispvm", "test.Disp").returncode, 0)
        finally:
            os.rename(self.admin.path + ".away", self.admin.path)
        self.assertEqual(self.admin.calls(), [])

    def test_slow_admin_daemon_blocks_no_other_call(self):
        release = threading.Event()

        def slow(dest, payload):
            release.wait(20)
            return ("0\0uuid:" + self.disp_uuid).encode()
        self.admin.reset({"admin.vm.CreateDisposable": slow})
        result = []
        t = threading.Thread(target=lambda: result.append(self.call("@dispvm", "test.Disp", b"late\n")))
        t.start()
        wait_for(lambda: self.admin.calls())
        start = time.time()
        self.assertCall(self.call("disp", "test.Plain"), 0, b"plain\n")
        self.assertLess(time.time() - start, 5)
        self.assertTrue(t.is_alive())
        release.set()
        t.join(30)
        self.assertCall(result[0], 0, b"in-disp src=work svc=test.Disp+\nlate\n")
        self.wait_for_kill()

    # --- latency (informative) --------------------------------------------------

    def test_latency_with_a_running_disposable(self):
        self.admin.reset({"admin.vm.CreateDisposable": self.created()})
        times = []
        for _ in range(10):
            start = time.perf_counter()
            self.assertCall(self.call("@dispvm", "test.Quick"), 0, b"quick\n")
            times.append(time.perf_counter() - start)
        plain = []
        for _ in range(10):
            start = time.perf_counter()
            self.assertCall(self.call("disp", "test.Plain"), 0, b"plain\n")
            plain.append(time.perf_counter() - start)
        print("\n  whole call (qrexec-client-vm included): @dispvm median %.1f ms, plain median %.1f ms"
              % (statistics.median(times) * 1000, statistics.median(plain) * 1000), file=sys.stderr)
        wait_for(lambda: sum(1 for c in self.admin.calls() if c[0] == "admin.vm.Kill") == 10)


if __name__ == "__main__":
    BUILD = sys.argv.pop(1)
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print("%d passed, %d failed" % (result.testsRun - failed, failed))
    sys.exit(1 if failed else 0)
