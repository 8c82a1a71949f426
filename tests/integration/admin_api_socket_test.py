"""The Admin API over aeried's real sockets, byte for byte: every method the
daemon serves (qubesd's framing of successes, Qubes exceptions and silent
closes), requests over the 64 KiB limit and garbage dropped while the daemon
goes on answering, admin.Events streams fed by changes made on other
connections, internal.GetSystemInfo on the internal socket only, and a
restart that keeps everything.
Run: python3 admin_api_socket_test.py BUILD_DIR  (or AERIE_BUILD_DIR=...)"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from admin_wire import encode, exchange

BUILD = None
MAX_REQUEST = 65536
CLOSED = b""  # what a client reads when the daemon closes without a reply
LABELS = ["red", "orange", "yellow", "green", "gray", "blue", "purple", "black"]
COLOURS = ["0xcc0000", "0xf57900", "0xedd400", "0x73d216", "0x555555", "0x3465a4", "0x75507b", "0x000000"]
SYSTEM_INFO_KEYS = {"tags", "type", "template_for_dispvms", "default_dispvm", "power_state", "uuid", "icon",
                    "label", "guivm", "internal", "relayvm", "transport_rpc"}


def exc(type_name, message):
    return b"2\0" + type_name.encode() + b"\0\0" + message.encode() + b"\0"


class EventStream:
    """An admin.Events connection, read event by event. qubesd writes the
    "1\\0" header before every event (qubes.api.QubesDaemonProtocol.send_event)."""

    def __init__(self, path, dest="dom0"):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.sock.sendall(encode("admin.Events", dest))
        self.sock.shutdown(socket.SHUT_WR)
        self.buf = b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise AssertionError("event stream closed; unread: %r" % self.buf)
        self.buf += chunk

    def _field(self, pos):
        while self.buf.find(b"\0", pos) < 0:
            self._fill()
        end = self.buf.find(b"\0", pos)
        return self.buf[pos:end], end + 1

    def next_event(self):
        """(raw bytes, subject, event, kwargs) of the next event."""
        while len(self.buf) < 2:
            self._fill()
        if self.buf[:2] != b"1\0":
            raise AssertionError("event without its 1\\0 header: %r" % self.buf[:200])
        subject, pos = self._field(2)
        event, pos = self._field(pos)
        kwargs = {}
        while True:
            key, pos = self._field(pos)
            if key == b"":
                break
            value, pos = self._field(pos)
            kwargs[key.decode()] = value.decode()
        raw, self.buf = self.buf[:pos], self.buf[pos:]
        return raw, subject.decode(), event.decode(), kwargs

    def nothing_pending(self, wait=0.3):
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return self.buf == b""
        finally:
            self.sock.settimeout(10)
        self.buf += chunk
        return False

    def close(self):
        self.sock.close()


class AdminApiSocket(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.root = tempfile.mkdtemp(prefix="aerie-api-socket-")
        cls.state = os.path.join(cls.root, "state")
        cls.socket = os.path.join(cls.root, "qubesd.sock")
        cls.internal = os.path.join(cls.root, "qubesd.internal.sock")
        cls.log = os.path.join(cls.root, "aeried.log")
        cls.proc = None
        cls.start_daemon()

    @classmethod
    def tearDownClass(cls):
        cls.stop_daemon()
        if os.environ.get("AERIE_KEEP_TEST_DIR"):
            print("logs in", cls.root)
        else:
            shutil.rmtree(cls.root, ignore_errors=True)

    @classmethod
    def start_daemon(cls):
        argv = [os.path.join(BUILD, "bin", "aeried"), "--state-dir", cls.state, "--socket", cls.socket,
                "--internal-socket", cls.internal]
        with open(cls.log, "ab") as log:
            cls.proc = subprocess.Popen(argv, stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if cls.proc.poll() is not None:
                raise AssertionError("aeried exited with %d:\n%s" % (cls.proc.returncode, cls.log_text()))
            try:
                if exchange(cls.socket, encode("admin.vm.List"), timeout=2).startswith(b"0\0"):
                    return
            except OSError:
                pass
            time.sleep(0.01)
        raise AssertionError("aeried did not answer within 15 s:\n" + cls.log_text())

    @classmethod
    def stop_daemon(cls):
        if cls.proc and cls.proc.poll() is None:
            cls.proc.send_signal(signal.SIGTERM)
            try:
                cls.proc.wait(10)
            except subprocess.TimeoutExpired:
                cls.proc.kill()
                cls.proc.wait()

    @classmethod
    def log_text(cls):
        try:
            with open(cls.log, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    # --- helpers ------------------------------------------------------------------

    def call(self, method, dest="dom0", arg="", payload=b"", source="dom0", path=None):
        return exchange(path or self.socket, encode(method, dest, arg, payload, source))

    def ok(self, method, dest="dom0", arg="", payload=b"", source="dom0"):
        reply = self.call(method, dest, arg, payload, source)
        if not reply.startswith(b"0\0"):
            self.fail("%s+%s -> %s: expected success, got %r" % (method, arg, dest, reply[:300]))
        return reply[2:]

    def assertClosed(self, method, dest="dom0", arg="", payload=b"", source="dom0"):
        self.assertEqual(self.call(method, dest, arg, payload, source), CLOSED,
                         "%s+%s -> %s with %r" % (method, arg, dest, payload[:50]))

    def assertAlive(self):
        reply = self.call("admin.vm.List")
        self.assertTrue(reply.startswith(b"0\0") and b"dom0 class=AdminVM state=Running " in reply,
                        "the daemon stopped answering:\n" + self.log_text())

    def qubes(self):
        """{name: (class, state, uuid)} from admin.vm.List."""
        out = {}
        for line in self.ok("admin.vm.List").decode().splitlines():
            name, klass, state, uuid = line.split(" ")
            self.assertTrue(klass.startswith("class=") and state.startswith("state=") and uuid.startswith("uuid="))
            out[name] = (klass[6:], state[6:], uuid[5:])
        return out

    def ensure_world(self):
        """tpl (TemplateVM), net (network), dvm (disposable template), work."""
        if "work" in self.qubes():
            return
        self.assertEqual(self.call("admin.vm.Create.TemplateVM", payload=b"name=tpl label=black"), b"0\0")
        self.assertEqual(self.call("admin.vm.Create.AppVM", arg="tpl", payload=b"name=net label=red"), b"0\0")
        self.ok("admin.vm.property.Set", "net", "provides_network", b"True")
        self.ok("admin.vm.property.Set", "net", "netvm", b"")
        self.assertEqual(self.call("admin.vm.Create.AppVM", arg="tpl", payload=b"name=dvm label=red"), b"0\0")
        self.ok("admin.vm.property.Set", "dvm", "template_for_dispvms", b"True")
        self.assertEqual(self.call("admin.vm.Create.AppVM", arg="tpl", payload=b"name=work label=blue"), b"0\0")

    # --- framing ----------------------------------------------------------------------

    def test_00_exact_framing(self):
        self.assertEqual(self.call("admin.vmclass.List"),
                         b"0\0AdminVM\nAppVM\nDispVM\nRemoteVM\nStandaloneVM\nTemplateVM\n")
        self.assertEqual(self.call("admin.vm.List", "ghost"), exc("QubesVMNotFoundError", "No such domain: 'ghost'"))
        self.assertClosed("admin.vmclass.List", arg="x")
        self.assertClosed("admin.vmclass.List", payload=b"x")
        self.assertClosed("admin.vm.NoSuchMethod")
        # "keyword adminvm" is dom0.
        self.assertEqual(exchange(self.socket, encode("admin.vm.List", "adminvm", dest_type="keyword")),
                         self.call("admin.vm.List"))
        self.assertEqual(exchange(self.socket, encode("admin.vm.List", "dom0", dest_type="keyword")), CLOSED)

    def test_01_vm_list(self):
        self.ensure_world()
        qubes = self.qubes()
        self.assertEqual(sorted(qubes), ["dom0", "dvm", "net", "tpl", "work"])
        self.assertEqual(qubes["dom0"], ("AdminVM", "Running", "00000000-0000-0000-0000-000000000000"))
        self.assertEqual(qubes["tpl"][:2], ("TemplateVM", "Halted"))
        self.assertEqual(qubes["work"][:2], ("AppVM", "Halted"))
        uuid = qubes["work"][2]
        line = b"work class=AppVM state=Halted uuid=" + uuid.encode() + b"\n"
        self.assertEqual(self.call("admin.vm.List", "work"), b"0\0" + line)
        self.assertEqual(self.call("admin.vm.List", "uuid:" + uuid), b"0\0" + line)
        self.assertEqual(self.call("admin.vm.List", "uuid:1234"), exc("QubesVMInvalidUUIDError",
                                                                      "VM UUID is not valid: '1234'"))
        self.assertClosed("admin.vm.List", arg="x")
        self.assertClosed("admin.vm.List", payload=b"x")

    # --- creating and removing ---------------------------------------------------------------

    def test_10_create_every_class(self):
        self.ensure_world()
        self.assertEqual(self.call("admin.vm.CreateInPool.StandaloneVM",
                                   payload=b"name=solo label=green pool=varlibqubes"), b"0\0")
        self.assertEqual(self.call("admin.vm.CreateInPool.AppVM", arg="tpl",
                                   payload=b"name=pooled label=green pool:private=varlibqubes"), b"0\0")
        self.assertEqual(self.call("admin.vm.Create.DispVM", arg="dvm", payload=b"name=disp1 label=red"), b"0\0")
        self.assertEqual(self.call("admin.vm.CreateInPool.DispVM", arg="dvm", payload=b"name=disp2 label=red"),
                         b"0\0")
        self.assertEqual(self.call("admin.vm.Create.RemoteVM", payload=b"name=far label=purple"), b"0\0")
        self.assertEqual(self.call("admin.vm.CreateInPool.TemplateVM", payload=b"name=tpl2 label=black"), b"0\0")
        self.assertEqual(self.call("admin.vm.CreateInPool.RemoteVM", payload=b"name=far2 label=purple"), b"0\0")
        self.assertEqual(self.call("admin.vm.Create.StandaloneVM", payload=b"name=solo2 label=gray",
                                   source="work"), b"0\0")
        qubes = self.qubes()
        self.assertEqual(qubes["solo"][:2], ("StandaloneVM", "Halted"))
        self.assertEqual(qubes["disp1"][:2], ("DispVM", "Halted"))
        self.assertEqual(qubes["far"][:2], ("RemoteVM", "Running"))
        self.assertEqual(self.ok("admin.vm.tag.List", "solo2"), b"created-by-work\n")
        self.assertEqual(self.ok("admin.vm.property.Get", "disp1", "template"), b"default=False type=vm dvm")
        self.assertEqual(self.ok("admin.vm.property.Get", "pooled", "template"), b"default=False type=vm tpl")
        # Refusals: silent closes, and the answered ones.
        for payload in (b"", b"name=x", b"label=red", b"name=x label=red bogus=1", b"name=x name=y label=red",
                        b"name=x label=1", b"name=x label=red pool=x"):
            self.assertClosed("admin.vm.Create.AppVM", arg="tpl", payload=payload)
        self.assertEqual(self.call("admin.vm.Create.AppVM", arg="tpl", payload=b"name=work label=red"),
                         exc("QubesValueError", "VM work already exists"))
        self.assertEqual(self.call("admin.vm.Create.AppVM", arg="tpl", payload=b"name=1x label=red"),
                         exc("QubesValueError", "VM name cannot start with hyphen, underscore, dot or numbers"))
        self.assertClosed("admin.vm.Create.AdminVM", payload=b"name=x label=red")
        self.assertEqual(self.call("admin.vm.Create.TemplateVM", arg="tpl", payload=b"name=x label=red"),
                         exc("QubesValueError", "TemplateVM cannot be based on template"))
        self.assertClosed("admin.vm.Create.AppVM", "work", "tpl", b"name=x label=red")
        self.assertEqual(self.call("admin.vm.Create.AppVM", arg="work", payload=b"name=x label=red"),
                         exc("QubesPropertyValueError",
                             "wrong VM class: domains['work'] is of type AppVM and not TemplateVM"))
        self.assertEqual(self.call("admin.vm.Create.DispVM", arg="work", payload=b"name=x label=red"),
                         exc("QubesValueError",
                             "template for disposable (work) needs to be an AppVM with template_for_dispvms=True"))
        self.assertClosed("admin.vm.CreateInPool.AppVM", arg="tpl",
                          payload=b"name=x label=red pool=varlibqubes pool:root=varlibqubes")
        self.assertEqual(self.call("admin.vm.Create.AppVM", arg="ghost", payload=b"name=x label=red"),
                         exc("QubesVMNotFoundError", "No such domain: 'ghost'"))
        self.assertEqual(self.call("admin.vm.Create.AppVM", arg="tpl", payload=b"name=x label=nosuch"),
                         exc("QubesLabelNotFoundError", "Label does not exist: nosuch"))
        self.assertEqual(self.call("admin.vm.CreateInPool.AppVM", arg="tpl", payload=b"name=x label=red pool=nope"),
                         exc("QubesException", "Unknown storage pool nope"))
        self.assertNotIn("x", self.qubes())

    def test_11_remove(self):
        self.ensure_world()
        self.ok("admin.vm.Create.StandaloneVM", payload=b"name=doomed label=red")
        self.assertClosed("admin.vm.Remove", "doomed", "x")
        self.assertClosed("admin.vm.Remove", "doomed", payload=b"x")
        self.assertEqual(self.call("admin.vm.Remove", "doomed"), b"0\0")
        self.assertNotIn("doomed", self.qubes())
        self.assertEqual(self.call("admin.vm.Remove", "doomed"), exc("QubesVMNotFoundError", "No such domain: 'doomed'"))
        self.assertEqual(self.call("admin.vm.Remove", "dom0"), exc("QubesVMInUseError", "'dom0' cannot be removed"))
        reply = self.call("admin.vm.Remove", "tpl")
        self.assertTrue(reply.startswith(b"2\0QubesVMInUseError\0\0Domain is in use: 'tpl'; used by: "), reply)
        self.assertIn(b"work.template", reply)
        self.assertTrue(reply.endswith(b"\0"))

    # --- properties --------------------------------------------------------------------------

    def test_20_global_properties(self):
        self.ensure_world()
        names = self.ok("admin.property.List").decode().splitlines()
        self.assertIn("default_netvm", names)
        self.assertEqual(names, sorted(names))
        self.assertEqual(self.call("admin.property.Get", arg="default_kernel"), b"0\0default=True type=str aerie-ns")
        self.assertEqual(self.call("admin.property.GetDefault", arg="default_qrexec_timeout"), b"0\0type=int 60")
        self.assertEqual(self.call("admin.property.Help", arg="default_kernel"),
                         b"0\0Which kernel to use when not overriden in VM")
        self.assertEqual(self.call("admin.property.Get", arg="nosuch"),
                         exc("QubesNoSuchPropertyError", "Invalid property 'nosuch' of Qubes"))
        all_lines = self.ok("admin.property.GetAll").decode().splitlines()
        self.assertEqual([l.split(" ")[0] for l in all_lines], names)
        self.assertIn("default_kernel default=True type=str aerie-ns", all_lines)
        self.assertEqual(self.call("admin.property.Set", arg="default_netvm", payload=b"net"), b"0\0")
        self.assertEqual(self.call("admin.property.Get", arg="default_netvm"), b"0\0default=False type=vm net")
        self.assertEqual(self.call("admin.vm.property.Get", "work", "netvm"), b"0\0default=True type=vm net")
        self.assertEqual(self.call("admin.property.Set", arg="default_qrexec_timeout", payload=b"90"), b"0\0")
        self.assertEqual(self.call("admin.property.Reset", arg="default_qrexec_timeout"), b"0\0")
        self.assertEqual(self.call("admin.property.Get", arg="default_qrexec_timeout"), b"0\0default=True type=int 60")
        self.assertEqual(self.call("admin.property.Set", arg="default_netvm", payload=b"work"),
                         exc("QubesValueError", "The work qube does not provide network"))
        self.assertEqual(self.call("admin.property.Set", arg="default_qrexec_timeout", payload=b"x"),
                         exc("QubesValueError", "Failed to parse property value as int"))
        self.assertClosed("admin.property.Get", "work", "default_kernel")  # globals live on dom0
        self.assertClosed("admin.property.List", arg="x")
        self.assertClosed("admin.property.Reset", arg="default_kernel", payload=b"x")

    def test_21_qube_properties(self):
        self.ensure_world()
        names = self.ok("admin.vm.property.List", "work").decode().splitlines()
        self.assertIn("template", names)
        self.assertEqual(self.call("admin.vm.property.Get", "work", "memory"), b"0\0default=True type=int 400")
        self.assertEqual(self.call("admin.vm.property.Get", "work", "label"), b"0\0default=False type=label blue")
        # Sized to the host: Qubes' 2, or one less than the host's CPUs (at least 1).
        vcpus = max(1, min(2, len(os.sched_getaffinity(0)) - 1))
        self.assertEqual(self.call("admin.vm.property.GetDefault", "work", "vcpus"), b"0\0type=int %d" % vcpus)
        self.assertEqual(self.call("admin.vm.property.GetDefault", "work", "label"), b"0\0")
        self.assertEqual(self.call("admin.vm.property.Help", "work", "memory"),
                         b"0\0Memory currently available for this VM.")
        self.assertEqual(self.call("admin.vm.property.Get", "work", "nosuch"),
                         exc("QubesNoSuchPropertyError", "Invalid property 'nosuch' of work"))
        self.assertEqual(self.call("admin.vm.property.Set", "work", "memory", b"512"), b"0\0")
        self.assertEqual(self.call("admin.vm.property.Get", "work", "memory"), b"0\0default=False type=int 512")
        self.assertEqual(self.call("admin.vm.property.Set", "tpl", "vcpus", b"4"), b"0\0")
        self.assertEqual(self.call("admin.vm.property.Get", "work", "vcpus"), b"0\0default=True type=int 4")
        self.assertEqual(self.call("admin.vm.property.Set", "work", "kernelopts", b"a\\b\nc"), b"0\0")
        lines = self.ok("admin.vm.property.GetAll", "work").decode().split("\n")
        self.assertEqual(lines[-1], "")
        self.assertIn("kernelopts default=False type=str a\\\\b\\nc", lines)
        self.assertIn("memory default=False type=int 512", lines)
        self.assertEqual([l.split(" ")[0] for l in lines[:-1]], names)
        self.assertEqual(self.call("admin.vm.property.Reset", "work", "memory"), b"0\0")
        self.assertEqual(self.call("admin.vm.property.Get", "work", "memory"), b"0\0default=True type=int 400")
        self.assertEqual(self.call("admin.vm.property.Set", "work", "label", b"nosuch"),
                         exc("QubesLabelNotFoundError", "Label does not exist: nosuch"))
        # Qubes R4.3 answers QubesValueError and its subclasses.
        for prop, value, error in (
                ("netvm", b"ghost", exc("QubesPropertyValueError", "Can't set netvm to non-existing qube ghost")),
                ("memory", b"abc", exc("QubesValueError", "Failed to parse property value as int")),
                ("memory", b"-1", exc("QubesPropertyValueError", "memory must be positive")),
                ("autostart", b"maybe", exc("QubesValueError", "Invalid literal for boolean property: 'maybe'")),
                ("netvm", b"tpl", exc("QubesValueError", "The tpl qube does not provide network")),
                ("template", b"net", exc("QubesPropertyValueError",
                                         "wrong VM class: domains['net'] is of type AppVM and not TemplateVM")),
                ("name", b"1x", exc("QubesPropertyValueError",
                                    "name cannot start with hyphen, underscore, dot or numbers")),
                ("kernelopts", b"\x01", exc("QubesValueError", "Invalid characters in property value"))):
            self.assertEqual(self.call("admin.vm.property.Set", "work", prop, value), error)
        self.assertClosed("admin.vm.property.Set", "work", "qid", b"9")  # write-once: not answered
        self.assertEqual(self.call("admin.vm.property.Reset", "work", "template"),
                         exc("QubesValueError", "Cannot unset template"))
        self.assertClosed("admin.vm.property.List", "work", "x")
        self.assertClosed("admin.vm.property.Get", "work", "memory", b"x")

    def test_22_rename(self):
        self.ensure_world()
        self.ok("admin.vm.Create.AppVM", arg="tpl", payload=b"name=old label=red")
        self.ok("admin.vm.property.Set", "work", "default_dispvm", b"dvm")
        self.ok("admin.vm.property.Set", "old", "netvm", b"net")
        uuid = self.qubes()["old"][2]
        self.assertEqual(self.call("admin.vm.property.Set", "old", "name", b"renamed"), b"0\0")
        self.assertEqual(self.qubes()["renamed"][2], uuid)
        self.assertNotIn("old", self.qubes())
        self.assertEqual(self.call("admin.vm.property.Get", "renamed", "netvm"), b"0\0default=False type=vm net")
        self.assertEqual(self.call("admin.vm.property.Set", "renamed", "name", b"work"),
                         exc("QubesPropertyValueError", "VM named work already exists"))
        self.assertEqual(self.call("admin.vm.property.Set", "dom0", "name", b"dom1"),
                         exc("QubesPropertyValueError", "property 'name' on AdminVM instance cannot be set"))

    # --- features, tags, notes ------------------------------------------------------------------

    def test_30_features(self):
        self.ensure_world()
        self.assertEqual(self.call("admin.vm.feature.Set", "work", "f1", b"v1"), b"0\0")
        self.assertEqual(self.call("admin.vm.feature.Set", "work", "empty", b""), b"0\0")
        self.assertEqual(self.call("admin.vm.feature.List", "work"), b"0\0empty\nf1\n")
        self.assertEqual(self.call("admin.vm.feature.Get", "work", "f1"), b"0\0v1")
        self.assertEqual(self.call("admin.vm.feature.Get", "work", "empty"), b"0\0")
        self.assertEqual(self.call("admin.vm.feature.Get", "work", "nosuch"),
                         exc("QubesFeatureNotFoundError", "Feature not set for domain work: nosuch"))
        self.ok("admin.vm.feature.Set", "tpl", "from-tpl", b"t")
        self.ok("admin.vm.feature.Set", "net", "from-net", b"n")
        self.ok("admin.vm.feature.Set", "dom0", "from-dom0", b"d")
        self.ok("admin.vm.property.Set", "work", "netvm", b"net")
        self.assertEqual(self.call("admin.vm.feature.CheckWithTemplate", "work", "from-tpl"), b"0\0t")
        self.assertEqual(self.call("admin.vm.feature.CheckWithNetvm", "work", "from-net"), b"0\0n")
        self.assertEqual(self.call("admin.vm.feature.CheckWithAdminVM", "work", "from-dom0"), b"0\0d")
        self.assertEqual(self.call("admin.vm.feature.CheckWithTemplateAndAdminVM", "work", "from-tpl"), b"0\0t")
        self.assertEqual(self.call("admin.vm.feature.CheckWithTemplateAndAdminVM", "work", "from-dom0"), b"0\0d")
        for method in ("CheckWithTemplate", "CheckWithNetvm", "CheckWithAdminVM", "CheckWithTemplateAndAdminVM"):
            self.assertEqual(self.call("admin.vm.feature." + method, "work", "nowhere"),
                             exc("QubesFeatureNotFoundError", "Feature not set for domain work: nowhere"))
            self.assertClosed("admin.vm.feature." + method, "work")
            self.assertClosed("admin.vm.feature." + method, "work", "f1", b"x")
        self.assertEqual(self.call("admin.vm.feature.Remove", "work", "f1"), b"0\0")
        self.assertEqual(self.call("admin.vm.feature.Remove", "work", "f1"),
                         exc("QubesFeatureNotFoundError", "Feature not set for domain work: f1"))
        self.assertClosed("admin.vm.feature.Set", "work", "f2", "caf\u00e9".encode())
        self.assertEqual(self.call("admin.vm.feature.Set", "work", "f2", b"a\nb"),
                         exc("QubesValueError", "f2 value contains illegal characters"))
        self.assertClosed("admin.vm.feature.Set", "work", "", b"v")
        self.assertClosed("admin.vm.feature.List", "work", "x")

    def test_31_tags(self):
        self.ensure_world()
        self.assertEqual(self.call("admin.vm.tag.List", "work"), b"0\0created-by-dom0\n")
        self.assertEqual(self.call("admin.vm.tag.Get", "work", "t1"), b"0\0" b"0")
        self.assertEqual(self.call("admin.vm.tag.Set", "work", "t1"), b"0\0")
        self.assertEqual(self.call("admin.vm.tag.Set", "work", "t1"), b"0\0")
        self.assertEqual(self.call("admin.vm.tag.Get", "work", "t1"), b"0\0" b"1")
        self.assertEqual(self.call("admin.vm.tag.List", "work"), b"0\0created-by-dom0\nt1\n")
        self.assertEqual(self.call("admin.vm.tag.Remove", "work", "t1"), b"0\0")
        self.assertEqual(self.call("admin.vm.tag.Remove", "work", "t1"),
                         exc("QubesTagNotFoundError", "Tag not set for domain work: t1"))
        for method in ("Get", "Set", "Remove"):
            self.assertClosed("admin.vm.tag." + method, "work", "a/b")
            self.assertClosed("admin.vm.tag." + method, "work", "")
            self.assertClosed("admin.vm.tag." + method, "work", "t1", b"x")
        self.assertClosed("admin.vm.tag.List", "work", "x")

    def test_32_notes(self):
        self.ensure_world()
        self.assertEqual(self.call("admin.vm.notes.Get", "work"), b"0\0")
        notes = "first line\n\tsecond \u00e9t\u00e9".encode()
        self.assertEqual(self.call("admin.vm.notes.Set", "work", payload=notes), b"0\0")
        self.assertEqual(self.call("admin.vm.notes.Get", "work"), b"0\0" + notes)
        self.assertEqual(self.call("admin.vm.notes.Set", "work", payload=b"a\x01b"), b"0\0")
        self.assertEqual(self.call("admin.vm.notes.Get", "work"), b"0\0a_b")
        self.assertClosed("admin.vm.notes.Get", "dom0")
        self.assertClosed("admin.vm.notes.Set", "work", "x", b"y")
        self.assertClosed("admin.vm.notes.Get", "work", payload=b"y")
        self.ok("admin.vm.notes.Set", "work", payload=notes)

    # --- labels -------------------------------------------------------------------------------

    def test_40_labels(self):
        self.ensure_world()
        self.assertEqual(self.call("admin.label.List"), b"0\0" + "".join(l + "\n" for l in LABELS).encode())
        for index, (name, colour) in enumerate(zip(LABELS, COLOURS), 1):
            self.assertEqual(self.call("admin.label.Get", arg=name), b"0\0" + colour.encode())
            self.assertEqual(self.call("admin.label.Index", arg=name), b"0\0" + str(index).encode())
        self.assertEqual(self.call("admin.label.Get", arg="nosuch"), exc("QubesValueError", ""))
        self.assertEqual(self.call("admin.label.Create", arg="mine", payload=b"0x123abc"), b"0\0")
        self.assertEqual(self.call("admin.label.Index", arg="mine"), b"0\0" b"9")
        self.assertEqual(self.call("admin.label.Get", arg="mine"), b"0\0" b"0x123abc")
        self.assertEqual(self.call("admin.label.Create", arg="gone", payload=b"0x000001"), b"0\0")
        self.assertEqual(self.call("admin.label.Create", arg="mine", payload=b"0x000000"),
                         exc("QubesValueError", "label already exists"))
        for name, colour in (("12", b"0x000000"), ("a:b", b"0x000000"),
                             ("x", b"0x12345"), ("x", b"123456"), ("x", b"")):
            self.assertClosed("admin.label.Create", arg=name, payload=colour)
        self.ok("admin.vm.property.Set", "work", "label", b"mine")
        reply = self.call("admin.label.Remove", arg="mine")
        self.assertTrue(reply.startswith(b"2\0") and reply.endswith(b"\0"), reply)
        self.assertClosed("admin.label.Remove", arg="red")
        self.assertEqual(self.call("admin.label.Remove", arg="nosuch"), exc("QubesValueError", ""))
        self.assertEqual(self.call("admin.label.Remove", arg="gone"), b"0\0")
        self.assertEqual(self.call("admin.label.Get", arg="gone"), exc("QubesValueError", ""))
        self.assertClosed("admin.label.List", "work")
        self.assertClosed("admin.label.List", arg="x")

    # --- events -------------------------------------------------------------------------------

    def test_50_events_stream_changes_made_elsewhere(self):
        self.ensure_world()
        vcpus = self.ok("admin.vm.property.Get", "work", "vcpus").split(b" ")[2]
        stream = EventStream(self.socket)
        one = EventStream(self.socket, "work")
        try:
            self.assertEqual(stream.next_event(), (b"1\0\0connection-established\0\0", "", "connection-established", {}))
            self.assertEqual(one.next_event()[0], b"1\0\0connection-established\0\0")
            # Changes on other connections.
            self.ok("admin.vm.tag.Set", "net", "ev-tag")
            self.ok("admin.vm.tag.Set", "work", "ev-tag")
            self.ok("admin.vm.feature.Set", "work", "ev-f", b"1")
            self.ok("admin.vm.feature.Remove", "work", "ev-f")
            self.ok("admin.vm.property.Set", "work", "vcpus", b"3")
            self.ok("admin.vm.property.Reset", "work", "vcpus")
            self.ok("admin.vm.tag.Remove", "work", "ev-tag")
            self.ok("admin.vm.Create.StandaloneVM", payload=b"name=ev-qube label=red")
            self.ok("admin.vm.Remove", "ev-qube")
            expected = [
                b"1\0net\0domain-tag-add:ev-tag\0tag\0ev-tag\0\0",
                b"1\0work\0domain-tag-add:ev-tag\0tag\0ev-tag\0\0",
                b"1\0work\0domain-feature-pre-set:ev-f\0feature\0ev-f\0value\0" b"1\0\0",
                b"1\0work\0domain-feature-set:ev-f\0feature\0ev-f\0value\0" b"1\0\0",
                b"1\0work\0domain-feature-pre-delete:ev-f\0feature\0ev-f\0\0",
                b"1\0work\0domain-feature-delete:ev-f\0feature\0ev-f\0\0",
                b"1\0work\0property-pre-set:vcpus\0name\0vcpus\0newvalue\0" b"3\0oldvalue\0" + vcpus + b"\0\0",
                b"1\0work\0property-set:vcpus\0name\0vcpus\0newvalue\0" b"3\0oldvalue\0" + vcpus + b"\0\0",
                b"1\0work\0property-pre-reset:vcpus\0name\0vcpus\0oldvalue\0" b"3\0\0",
                b"1\0work\0property-pre-del:vcpus\0name\0vcpus\0oldvalue\0" b"3\0\0",
                b"1\0work\0property-reset:vcpus\0name\0vcpus\0oldvalue\0" b"3\0\0",
                b"1\0work\0property-del:vcpus\0name\0vcpus\0oldvalue\0" b"3\0\0",
                b"1\0work\0domain-tag-delete:ev-tag\0tag\0ev-tag\0\0",
                b"1\0\0domain-add\0vm\0ev-qube\0\0",
                b"1\0ev-qube\0domain-tag-add:created-by-dom0\0tag\0created-by-dom0\0\0",
                b"1\0ev-qube\0domain-create-on-disk\0\0",
                b"1\0\0domain-pre-delete\0vm\0ev-qube\0\0",
                b"1\0\0domain-delete\0vm\0ev-qube\0\0",
            ]
            got = [stream.next_event()[0] for _ in expected]
            self.assertEqual(got, expected)
            # The stream about "work" has work's events only.
            self.assertEqual([one.next_event()[0] for _ in range(12)], [e for e in expected if e[2:6] == b"work"])
            self.assertTrue(stream.nothing_pending())
            self.assertTrue(one.nothing_pending())
            # A global property: the subject is empty.
            self.ok("admin.property.Set", arg="default_kernel", payload=b"k2")
            self.ok("admin.property.Reset", arg="default_kernel")
            for event in ("property-pre-set:default_kernel", "property-set:default_kernel"):
                self.assertEqual(stream.next_event()[1:], ("", event, {"name": "default_kernel", "newvalue": "k2",
                                                                       "oldvalue": "aerie-ns"}))
            for event in ("property-pre-reset:", "property-pre-del:", "property-reset:", "property-del:"):
                self.assertEqual(stream.next_event()[1:], ("", event + "default_kernel",
                                                            {"name": "default_kernel", "oldvalue": "k2"}))
            self.assertTrue(one.nothing_pending())
        finally:
            stream.close()
            one.close()
        self.assertClosed("admin.Events", arg="x")
        self.assertClosed("admin.Events", payload=b"x")
        self.assertAlive()

    # --- system info ----------------------------------------------------------------------------

    def test_60_system_info_on_the_internal_socket(self):
        self.ensure_world()
        reply = exchange(self.internal, encode("internal.GetSystemInfo"))
        self.assertTrue(reply.startswith(b"0\0"), reply[:200])
        info = json.loads(reply[2:].decode())
        self.assertEqual(list(info), ["domains"])
        qubes = self.qubes()
        self.assertEqual(set(info["domains"]), set(qubes))
        for name, d in info["domains"].items():
            klass, state, uuid = qubes[name]
            self.assertEqual(set(d), SYSTEM_INFO_KEYS, name)
            self.assertEqual(d["type"], klass)
            self.assertEqual(d["power_state"], state)
            self.assertEqual(d["uuid"], uuid)
            self.assertIsInstance(d["tags"], list)
            self.assertIsInstance(d["template_for_dispvms"], bool)
            self.assertIsInstance(d["internal"], bool)
            for key in ("default_dispvm", "guivm", "relayvm", "transport_rpc"):
                self.assertTrue(d[key] is None or isinstance(d[key], str), (name, key))
            label = self.ok("admin.vm.property.Get", name, "label").decode().split(" ", 2)[2]
            self.assertEqual(d["label"], label)
            icon = self.ok("admin.vm.property.Get", name, "icon").decode().split(" ", 2)[2]
            self.assertEqual(d["icon"], icon)
        self.assertEqual(info["domains"]["dom0"]["icon"], "adminvm-black")
        self.assertEqual(info["domains"]["dvm"]["template_for_dispvms"], True)
        self.assertIn("created-by-dom0", info["domains"]["work"]["tags"])
        # Only there, and only as it should be asked.
        self.assertClosed("internal.GetSystemInfo")
        self.assertEqual(exchange(self.internal, encode("internal.GetSystemInfo", arg="x")), CLOSED)
        self.assertEqual(exchange(self.internal, encode("internal.GetSystemInfo", payload=b"x")), CLOSED)
        self.assertEqual(exchange(self.internal, encode("internal.GetSystemInfo", "work")), CLOSED)
        self.assertEqual(exchange(self.internal, encode("admin.vm.List")), CLOSED)

    # --- hostile requests -----------------------------------------------------------------------

    def test_70_oversized_requests_are_dropped(self):
        self.ensure_world()
        head = encode("admin.vm.notes.Set", "work")
        exact = head + b"n" * (MAX_REQUEST - len(head))
        self.assertEqual(len(exact), MAX_REQUEST)
        self.assertEqual(exchange(self.socket, exact), b"0\0")
        self.assertEqual(len(self.ok("admin.vm.notes.Get", "work")), MAX_REQUEST - len(head))
        self.assertEqual(exchange(self.socket, exact + b"n"), CLOSED)
        self.assertEqual(exchange(self.socket, head + b"x" * 200000), CLOSED)
        self.assertEqual(len(self.ok("admin.vm.notes.Get", "work")), MAX_REQUEST - len(head))  # unchanged
        self.assertAlive()

    def test_71_garbage_is_dropped_and_the_daemon_goes_on(self):
        garbage = [
            b"", b"\0", b"garbage", b"garbage\0", b"admin.vm.List\0", b"admin.vm.List dom0\0",
            b"admin.vm.List dom0 name\0", b"admin.vm.List dom0 name dom0 extra\0", b"admin.vm.List dom0 uuid dom0\0",
            b"admin.vm.List  dom0 name dom0\0", b" admin.vm.List dom0 name dom0\0", b"admin.vm.List dom0 name dom0",
            b"+ dom0 name dom0\0", bytes(range(256)), b"\xff\xfe" * 1000, b"admin.vm.List dom0 name d\xc3\xb6m0\0",
            b"admin.vm.List \xff name dom0\0",
        ]
        for data in garbage:
            self.assertEqual(exchange(self.socket, data), CLOSED, data[:60])
            self.assertEqual(exchange(self.internal, data), CLOSED, data[:60])
        # A client that connects and leaves without a word.
        for _ in range(20):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.socket)
            s.close()
        self.assertAlive()
        self.assertEqual(self.proc.poll(), None)

    # --- restart ---------------------------------------------------------------------------------

    def snapshot(self):
        state = {"vm.List": self.ok("admin.vm.List"), "globals": self.ok("admin.property.GetAll"),
                 "labels": {}, "qubes": {}}
        for label in self.ok("admin.label.List").decode().splitlines():
            state["labels"][label] = (self.ok("admin.label.Get", arg=label), self.ok("admin.label.Index", arg=label))
        for name in self.qubes():
            q = {"properties": self.ok("admin.vm.property.GetAll", name),
                 "tags": self.ok("admin.vm.tag.List", name), "features": {}}
            for feature in self.ok("admin.vm.feature.List", name).decode().splitlines():
                q["features"][feature] = self.ok("admin.vm.feature.Get", name, feature)
            if name != "dom0":
                q["notes"] = self.ok("admin.vm.notes.Get", name)
            state["qubes"][name] = q
        state["system_info"] = exchange(self.internal, encode("internal.GetSystemInfo"))
        return state

    def test_90_restart_keeps_everything(self):
        self.ensure_world()
        self.ok("admin.label.Create", arg="kept", payload=b"0xabcdef")
        self.ok("admin.vm.Create.StandaloneVM", payload=b"name=kept-qube label=kept")
        self.ok("admin.vm.feature.Set", "kept-qube", "kept-f", b"kept value")
        self.ok("admin.vm.tag.Set", "kept-qube", "kept-t")
        self.ok("admin.vm.notes.Set", "kept-qube", payload=b"kept notes\n")
        self.ok("admin.vm.property.Set", "kept-qube", "memory", b"1234")
        self.ok("admin.property.Set", arg="default_dispvm", payload=b"dvm")
        before = self.snapshot()
        self.assertIn("kept-qube", before["qubes"])
        self.stop_daemon()
        self.assertEqual(self.proc.returncode, 0, self.log_text())
        self.assertFalse(os.path.exists(self.socket))
        self.start_daemon()
        after = self.snapshot()
        self.assertEqual(after, before)
        self.assertEqual(self.ok("admin.vm.property.Get", "kept-qube", "label"), b"default=False type=label kept")
        # And it goes on changing things.
        self.ok("admin.vm.Remove", "kept-qube")
        self.assertNotIn("kept-qube", self.qubes())


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        BUILD = sys.argv.pop(1)
    else:
        BUILD = os.environ.get("AERIE_BUILD_DIR", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                               "..", "..", "build"))
    result = unittest.main(exit=False, verbosity=2).result
    failed = len(result.failures) + len(result.errors)
    print("%d passed, %d failed" % (result.testsRun - failed, failed))
    sys.exit(1 if failed else 0)
