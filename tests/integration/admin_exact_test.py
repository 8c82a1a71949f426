"""The Admin API methods Qubes R4.3's qubesd has and the upstream qubesadmin
tools use, answered byte for byte as qubesd answers them, each error case
included, by an aeried with real volumes and running qubes:

  pools       admin.pool.{List,ListDrivers,Info,UsageDetails,volume.List,
              Add,Remove,Set.revisions_to_keep,Set.ephemeral_volatile} for
              Aerie's one `file` pool
  volumes     admin.vm.volume.{CloneFrom,CloneTo,Clear,Set.rw,Set.ephemeral};
              qvm-clone copies the private volume's data through them
  lifecycle   QubesVMNotStartedError for a halted qube's shutdown and kill,
              admin.vm.{Suspend,Resume}, the start_time property
  firewall    admin.vm.firewall.{Get,Set,Reload} (the default accept-all
              rule list) and admin.deviceclass.List
  events      a start, pauses and a shutdown: every event qubesd fires, in
              its order, with its arguments
  import      admin.vm.volume.Import and ImportWithSize (the rpc folder's
              program, as qubesadmin runs it in dom0): the data, its size,
              too little, too much, no ext4, refusals, a kill -9 between
              the halves; Resize rounding up; an import from a management
              qube through qrexec, granted for one qube and not another
Needs root (skipped otherwise)."""
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from admin_wire import encode, exchange  # noqa: E402
from aerie_world import PREFIX, Events, WorldTest, run_tests  # noqa: E402

CLOSED = b""  # qubesd closes without a reply (ProtocolError, PermissionDenied)


def ok(body=b""):
    return b"0\0" + body


def exc(type_name, message):
    return b"2\0" + type_name.encode() + b"\0\0" + message.encode() + b"\0"


class StatsStream(Events):
    """An admin.vm.Stats stream, read as an admin.Events one."""

    def __init__(self, socket_path, dest):  # pylint: disable=super-init-not-called
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(socket_path)
        self.sock.sendall(encode("admin.vm.Stats", dest))
        self.sock.shutdown(socket.SHUT_WR)
        self.events = []
        self.cond = threading.Condition()
        self.error = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def count(self, subject, event):
        with self.cond:
            return sum(1 for s, e, _ in self.events if (s, e) == (subject, event))


class AdminExactTest(WorldTest):

    def raw(self, method, dest="dom0", arg="", payload=b""):
        return self.w.call(method, dest, arg, payload)

    def info(self, qube, volume):
        body = self.raw("admin.vm.volume.Info", qube, volume)
        self.assertTrue(body.startswith(b"0\0"), body)
        return dict(line.split("=", 1) for line in body[2:].decode().splitlines())

    def test_01_pools(self):
        self.make_world()
        pool_dir = os.path.join(self.w.state, "pool")
        self.assertEqual(self.raw("admin.pool.List"), ok(b"varlibqubes\n"))
        self.assertEqual(self.raw("admin.pool.ListDrivers"), ok(b"file revisions_to_keep dir_path ephemeral_volatile\n"))
        st = os.statvfs(pool_dir)
        reply = self.raw("admin.pool.Info", arg="varlibqubes").decode()
        self.assertRegex(reply, r"\A0\0dir_path=%s\ndriver=file\nephemeral_volatile=False\nname=varlibqubes\n"
                                r"revisions_to_keep=1\nsize=%d\nusage=\d+\n\Z" % (re.escape(pool_dir),
                                                                                  st.f_frsize * st.f_blocks))
        self.assertRegex(self.raw("admin.pool.UsageDetails", arg="varlibqubes").decode(),
                         r"\A0\0data_size=%d\ndata_usage=\d+\n\Z" % (st.f_frsize * st.f_blocks))
        # Every volume of every qube: the vids admin.vm.volume.Info reports.
        listed = self.raw("admin.pool.volume.List", arg="varlibqubes")
        want = b"".join(("vm/%s/%s\n" % (self.w.uuid(q), v)).encode()
                        for q in sorted([self.tpl, self.work]) for v in ("root", "private", "volatile"))
        self.assertEqual(listed, ok(want))
        self.assertEqual(self.info(self.work, "private")["vid"], "vm/%s/private" % self.w.uuid(self.work))
        # Unknown pools, a qube as destination, arguments: closed.
        for method in ("admin.pool.Info", "admin.pool.UsageDetails", "admin.pool.volume.List", "admin.pool.Remove"):
            self.assertEqual(self.raw(method, arg="nosuch"), CLOSED, method)
            self.assertEqual(self.raw(method, arg=""), CLOSED, method)
            self.assertEqual(self.raw(method, self.work, "varlibqubes"), CLOSED, method)
        self.assertEqual(self.raw("admin.pool.List", arg="x"), CLOSED)
        self.assertEqual(self.raw("admin.pool.ListDrivers", payload=b"x"), CLOSED)
        # Adding: Qubes' checks and errors, then Aerie's refusal.
        self.assertEqual(self.raw("admin.pool.Add", arg="lvm_thin", payload=b"name=p2\nvolume_group=x\n"),
                         exc("QubesException", "unexpected driver name: lvm_thin"))
        self.assertEqual(self.raw("admin.pool.Add", arg="file", payload=b"name=p2\nbogus=1\nother=2\n"),
                         exc("QubesException", "unexpected driver options: bogus other"))
        self.assertEqual(self.raw("admin.pool.Add", arg="file", payload=b"name=p2\nrevisions_to_keep=2\n"),
                         exc("QubesException", "missing required driver options: dir_path"))
        self.assertEqual(self.raw("admin.pool.Add", arg="file", payload=b"name=p2\ndir_path=/var/p2\n"),
                         exc("QubesNotImplementedError", "Aerie keeps every volume in its one storage pool "
                                                         "(varlibqubes): pool p2 cannot be added"))
        for payload in (b"dir_path=/x\n", b"name=p2\nname=p3\ndir_path=/x\n", b"name=p2\nnoequals\n",
                        b"name=p:2\ndir_path=/x\n", b"name=varlibqubes\ndir_path=/x\n", b"name=caf\xc3\xa9\n"):
            self.assertEqual(self.raw("admin.pool.Add", arg="file", payload=payload), CLOSED, payload)
        # Removing: in use by the qubes' volumes.
        self.assertEqual(self.raw("admin.pool.Remove", arg="varlibqubes"),
                         exc("QubesPoolInUseError", "Storage pool is in use: 'varlibqubes'"))
        # Settings.
        self.assertEqual(self.raw("admin.pool.Set.revisions_to_keep", arg="varlibqubes", payload=b"2"), ok())
        self.assertIn("\nrevisions_to_keep=2\n", self.raw("admin.pool.Info", arg="varlibqubes").decode())
        self.assertEqual(self.info(self.work, "private")["revisions_to_keep"], "2")
        for bad in (b"", b"-2", b"x", b"01", b"1" * 20):
            self.assertEqual(self.raw("admin.pool.Set.revisions_to_keep", arg="varlibqubes", payload=bad), CLOSED)
        self.assertEqual(self.raw("admin.pool.Set.ephemeral_volatile", arg="varlibqubes", payload=b"False"), ok())
        self.assertEqual(self.raw("admin.pool.Set.ephemeral_volatile", arg="varlibqubes", payload=b"True"),
                         exc("QubesNotImplementedError",
                             "Aerie's volatile volumes are not encrypted: ephemeral_volatile stays False"))
        self.assertEqual(self.raw("admin.pool.Set.ephemeral_volatile", arg="varlibqubes", payload=b"maybe"), CLOSED)
        # The pool's setting outlives the daemon.
        self.w.stop_daemon()
        self.w.start_daemon()
        self.assertIn("\nrevisions_to_keep=2\n", self.raw("admin.pool.Info", arg="varlibqubes").decode())

    def test_02_volumes_clone_and_clear(self):
        self.make_world()
        work, copy = self.work, self.work + "-copy"
        # An AppVM's root is rw, as Qubes reports it.
        root = self.info(work, "root")
        self.assertEqual((root["rw"], root["snap_on_start"], root["save_on_stop"]), ("True", "True", "False"))
        self.w.tool("qvm-start", work)
        self.w.run(work, "echo cloned-data > /rw/marker && sync", user="root")
        self.assertEqual(self.raw("admin.vm.volume.Set.rw", work, "private", b"True"),
                         exc("QubesVMNotHaltedError", "Domain is not powered off: '%s'" % work))
        self.w.tool("qvm-shutdown", "--wait", work, timeout=120)

        self.assertEqual(self.raw("admin.vm.Create.AppVM", "dom0", self.tpl, b"name=%s label=red" % copy.encode()),
                         ok())
        token = self.raw("admin.vm.volume.CloneFrom", work, "private")
        self.assertRegex(token.decode(), r"\A0\0[A-Za-z0-9]{32}\Z")
        # The token serves once.
        self.assertEqual(self.raw("admin.vm.volume.CloneTo", copy, "private", token[2:] + b"\n"), ok())
        self.assertEqual(self.raw("admin.vm.volume.CloneTo", copy, "private", token[2:]), CLOSED)
        with self.w.halted_volume(copy, "private") as view:
            with open(os.path.join(view, "marker")) as f:
                self.assertEqual(f.read(), "cloned-data\n")
        for bad in (b"", b"nosuchtoken"):
            self.assertEqual(self.raw("admin.vm.volume.CloneTo", copy, "private", bad), CLOSED)
        self.assertEqual(self.raw("admin.vm.volume.CloneFrom", work, "nosuch"), CLOSED)
        self.assertEqual(self.raw("admin.vm.volume.CloneFrom", work, "private", b"x"), CLOSED)
        # A snapshot volume cannot be a source; one that keeps no data takes none.
        token = self.raw("admin.vm.volume.CloneFrom", work, "root")[2:]
        self.assertEqual(self.raw("admin.vm.volume.CloneTo", copy, "root", token),
                         exc("StoragePoolException", "Can not import snapshot volume vm/%s/root in to pool "
                                                     "varlibqubes " % self.w.uuid(work)))
        token = self.raw("admin.vm.volume.CloneFrom", work, "volatile")[2:]
        self.assertEqual(self.raw("admin.vm.volume.CloneTo", copy, "volatile", token), ok())

        # Clear: the data is gone, the size stays.
        size = self.info(copy, "private")["size"]
        self.assertEqual(self.raw("admin.vm.volume.Clear", copy, "private"), ok())
        self.assertEqual(self.info(copy, "private")["size"], size)
        with self.w.halted_volume(copy, "private") as view:
            self.assertFalse(os.path.exists(os.path.join(view, "marker")))
            self.assertTrue(os.path.isdir(os.path.join(view, "home")))
        self.assertEqual(self.raw("admin.vm.volume.Clear", copy, "root"),
                         exc("StoragePoolException", "Can not import into save_on_stop=False volume vm/%s/root"
                             % self.w.uuid(copy)))
        self.assertEqual(self.raw("admin.vm.volume.Clear", copy, "private", b"x"), CLOSED)
        self.assertEqual(self.raw("admin.vm.volume.Clear", copy, "nosuch"), CLOSED)

        # rw and ephemeral: what Aerie's volumes have is accepted, the rest refused.
        self.assertEqual(self.raw("admin.vm.volume.Set.rw", copy, "root", b"True"), ok())
        self.assertEqual(self.raw("admin.vm.volume.Set.rw", copy, "root", b"no"),
                         exc("QubesNotImplementedError",
                             "The volume root of %s is writable in Aerie: its rw cannot change" % copy))
        self.assertEqual(self.raw("admin.vm.volume.Set.ephemeral", copy, "volatile", b"False"), ok())
        self.assertEqual(self.raw("admin.vm.volume.Set.ephemeral", copy, "volatile", b"1"),
                         exc("QubesNotImplementedError",
                             "Aerie's volumes are not encrypted with an ephemeral key: ephemeral stays False"))
        for method in ("admin.vm.volume.Set.rw", "admin.vm.volume.Set.ephemeral"):
            self.assertEqual(self.raw(method, copy, "root", b"maybe"), CLOSED)
            self.assertEqual(self.raw(method, copy, "nosuch", b"True"), CLOSED)
        self.w.tool("qvm-remove", "-f", copy)

        # qvm-clone copies the data through CloneFrom / CloneTo.
        self.w.tool("qvm-clone", work, copy)
        with self.w.halted_volume(copy, "private") as view:
            with open(os.path.join(view, "marker")) as f:
                self.assertEqual(f.read(), "cloned-data\n")
        self.w.tool("qvm-remove", "-f", copy)

    def test_03_lifecycle_errors_suspend_and_start_time(self):
        self.make_world()
        work = self.work
        powered_off = exc("QubesVMNotStartedError", "Domain is powered off: '%s'" % work)
        self.assertEqual(self.raw("admin.vm.Kill", work), powered_off)
        self.assertEqual(self.raw("admin.vm.Shutdown", work), powered_off)
        self.assertEqual(self.raw("admin.vm.Shutdown", work, "force+wait"), powered_off)
        self.assertEqual(self.raw("admin.vm.Suspend", work),
                         exc("QubesVMNotRunningError", "Domain not running (either powered off or paused): '%s'"
                             % work))
        self.assertEqual(self.raw("admin.vm.Resume", work),
                         exc("QubesVMNotPausedError", "Domain is not paused: '%s'" % work))
        self.assertEqual(self.raw("admin.vm.Suspend", work, "x"), CLOSED)
        self.assertEqual(self.raw("admin.vm.Resume", work, payload=b"x"), CLOSED)
        self.assertEqual(self.raw("admin.vm.property.Get", work, "start_time"), ok(b"default=True type=str "))
        self.assertEqual(self.raw("admin.vm.property.Set", work, "start_time", b"1"),
                         exc("QubesPropertyValueError", "property 'start_time' on AppVM instance cannot be set"))
        before = time.time()
        self.w.tool("qvm-start", work)
        after = time.time()
        reply = self.raw("admin.vm.property.Get", work, "start_time").decode()
        m = re.match(r"\A0\0default=True type=str (\d+\.\d+)\Z", reply)
        self.assertTrue(m, reply)
        self.assertTrue(before - 1 <= float(m.group(1)) <= after + 1, (before, m.group(1), after))
        self.assertEqual(self.raw("admin.vm.Suspend", work), ok())
        self.assertEqual(self.w.current_state(work)["power_state"], "Paused")
        self.assertEqual(self.raw("admin.vm.Suspend", work), ok())
        self.assertEqual(self.raw("admin.vm.Resume", work), ok())
        self.assertEqual(self.w.current_state(work)["power_state"], "Running")
        self.w.tool("qvm-shutdown", "--wait", work, timeout=120)
        self.assertEqual(self.raw("admin.vm.property.Get", work, "start_time"), ok(b"default=True type=str "))

    def test_04_firewall_and_device_classes(self):
        self.make_world()
        work = self.work
        self.assertEqual(self.raw("admin.deviceclass.List"), ok(b"block\npci\n"))
        self.assertEqual(self.raw("admin.deviceclass.List", work), CLOSED)
        self.assertEqual(self.raw("admin.deviceclass.List", arg="x"), CLOSED)
        # No qube exposes, has assigned or has attached a device.
        for devclass in ("block", "pci"):
            for kind in ("Available", "Assigned", "Attached"):
                method = "admin.vm.device.%s.%s" % (devclass, kind)
                self.assertEqual(self.raw(method, work), ok(), method)
                self.assertEqual(self.raw(method, "dom0", "dom0+sda"), ok(), method)
                self.assertEqual(self.raw(method, work, payload=b"x"), CLOSED, method)
            for kind in ("Assigned", "Attached"):
                self.assertEqual(self.raw("admin.vm.device.%s.%s" % (devclass, kind), work, "sda"), CLOSED)
        self.assertEqual(self.raw("admin.vm.device.denied.List", work), ok())
        self.assertEqual(self.raw("admin.vm.device.usb.Available", work), CLOSED)
        self.assertEqual(self.raw("admin.vm.firewall.Get", work), ok(b"action=accept\n"))
        self.assertEqual(self.raw("admin.vm.firewall.Set", work, payload=b"action=accept\n"), ok())
        self.assertEqual(self.raw("admin.vm.firewall.Set", work, payload=b"action=drop\n"),
                         exc("QubesNotImplementedError", "Aerie has no firewall for qubes yet: only the default "
                                                         "rule (action=accept) can be set"))
        self.assertEqual(self.raw("admin.vm.firewall.Reload", work), ok())
        self.events.wait(work, "firewall-changed")
        for method in ("admin.vm.firewall.Get", "admin.vm.firewall.Reload"):
            self.assertEqual(self.raw(method, "dom0"), CLOSED, method)
            self.assertEqual(self.raw(method, work, "x"), CLOSED, method)
        self.assertEqual(self.raw("admin.vm.firewall.Get", work, payload=b"x"), CLOSED)


    def test_05_stats(self):
        self.make_world()
        work = self.work
        self.assertEqual(self.raw("admin.property.Set", arg="stats_interval", payload=b"1"), ok())
        self.w.tool("qvm-start", work)
        every = StatsStream(self.w.socket, "dom0")
        only = StatsStream(self.w.socket, work)
        try:
            for stream in (every, only):
                stream.wait("", "connection-established")
                self.assertEqual(stream.events[0], ("", "connection-established", {}))
            # Two rounds: the second has a CPU usage measured since the first.
            deadline = time.monotonic() + 20
            while only.count(work, "vm-stats") < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            stats = [kw for s, e, kw in list(only.events) if e == "vm-stats"]
            self.assertGreaterEqual(len(stats), 2, only.events)
            self.assertEqual({s for s, e, _ in list(only.events)[1:]}, {work})
            for kw in stats:
                self.assertEqual(list(kw), ["memory_kb", "cpu_time", "cpu_usage", "cpu_usage_raw"])
                self.assertTrue(all(re.fullmatch(r"\d+", v) for v in kw.values()), kw)
            self.assertGreater(int(stats[0]["memory_kb"]), 0)
            every.wait(work, "vm-stats")
            every.wait("dom0", "vm-stats")
            # admin.Events streams do not carry them.
            self.assertEqual([e for e, _ in self.events.of(work) if e == "vm-stats"], [])
        finally:
            every.close()
            only.close()
        self.assertEqual(self.raw("admin.vm.Stats", arg="x"), CLOSED)
        self.assertEqual(self.raw("admin.vm.Stats", payload=b"x"), CLOSED)
        self.w.tool("qvm-shutdown", "--wait", work, timeout=120)


    def test_06_management_qube_sees_what_policy_grants(self):
        self.make_world(appvms=("work", "vault", "mgmt"))
        work, vault, mgmt = self.work, self.vault, PREFIX + "mgmt"
        os.makedirs(self.w.policy_dir, exist_ok=True)
        self.w.write_policy("admin.vm.List * {m} {w} allow\n"
                            "admin.vm.List * {m} @adminvm allow\n"
                            "admin.vm.List * {m} {v} ask default_target={v}\n"
                            "admin.Events * {m} {w} allow\n"
                            "admin.Events +property-set_default_qrexec_timeout {m} @adminvm allow\n"
                            .format(m=mgmt, w=work, v=vault))
        def as_mgmt(method, dest="dom0", arg="", payload=b""):
            return exchange(self.w.socket, encode(method, dest, arg, payload, source=mgmt))
        uuid = {q: self.w.uuid(q) for q in (work, vault, mgmt)}
        dom0 = [l for l in self.raw("admin.vm.List")[2:].decode().splitlines() if l.startswith("dom0 ")][0]
        # Granted work (an "ask" for vault is no): dom0 and work only.
        self.assertEqual(as_mgmt("admin.vm.List"),
                         ok(("%s\n%s class=AppVM state=Halted uuid=%s\n" % (dom0, work, uuid[work])).encode()))
        self.assertEqual(as_mgmt("admin.vm.List", work),
                         ok(("%s class=AppVM state=Halted uuid=%s\n" % (work, uuid[work])).encode()))
        self.assertEqual(as_mgmt("admin.vm.List", vault), ok())
        # dom0 still sees every qube.
        self.assertEqual(self.raw("admin.vm.List").count(b"\n"), 5)
        # Events: work's and the one of the system granted; not vault's, nor
        # the new qube's domain-add (judged on its "vm").
        stream = MgmtEvents(self.w.socket, mgmt)
        try:
            stream.wait("", "connection-established")
            self.assertEqual(self.raw("admin.vm.feature.Set", vault, "secret", b"1"), ok())
            self.assertEqual(self.raw("admin.vm.feature.Set", work, "seen", b"1"), ok())
            self.assertEqual(self.raw("admin.vm.Create.AppVM", "dom0", self.tpl,
                                      ("name=%s-new label=red" % PREFIX).encode()), ok())
            self.assertEqual(self.raw("admin.property.Set", arg="default_qrexec_timeout", payload=b"61"), ok())
            self.assertEqual(self.raw("admin.vm.feature.Set", work, "last", b"1"), ok())
            stream.wait(work, "domain-feature-set:last")
            seen = [(s, e) for s, e, _ in list(stream.events)]
            self.assertEqual(seen, [("", "connection-established"), (work, "domain-feature-pre-set:seen"),
                                    (work, "domain-feature-set:seen"), ("", "property-set:default_qrexec_timeout"),
                                    (work, "domain-feature-pre-set:last"), (work, "domain-feature-set:last")])
        finally:
            stream.close()
        self.w.tool("qvm-remove", "-f", PREFIX + "-new")

    def test_07_lifecycle_events_as_qubesd_fires_them(self):
        self.make_world()
        work = self.work
        mark = len(self.events.events)
        self.w.tool("qvm-start", work)
        self.assertEqual(self.raw("admin.vm.Pause", work), ok())
        self.assertEqual(self.raw("admin.vm.Unpause", work), ok())
        self.assertEqual(self.raw("admin.vm.Pause", work), ok())
        # A paused qube's shutdown: qubesd refuses it without force.
        self.assertEqual(self.raw("admin.vm.Shutdown", work), exc("QubesVMNotRunningError",
                         "Domain not running (either powered off or paused): '%s'" % work))
        self.assertEqual(self.raw("admin.vm.Unpause", work), ok())
        self.w.tool("qvm-shutdown", "--wait", work, timeout=120)
        self.events.wait(work, "domain-shutdown")
        guid = [("start_guid", "True")]
        resets = [("property-reset:" + p, [("name", p)]) for p in ("xid", "stubdom_xid", "start_time")]
        want = ([("domain-pre-start", guid + [("mem_required", "None")]), ("domain-pre-spawn", guid)] + resets +
                [("domain-spawn", guid), ("domain-pre-unpaused", []), ("domain-unpaused", []),
                 ("domain-start", guid),
                 ("domain-pre-paused", []), ("domain-paused", []), ("domain-pre-unpaused", []), ("domain-unpaused", []),
                 ("domain-pre-paused", []), ("domain-paused", []),
                 ("domain-pre-shutdown", [("force", "False")]),
                 ("domain-shutdown-failed", [("reason", "Domain not running (either powered off or paused): '%s'"
                                              % work)]),
                 ("domain-pre-unpaused", []), ("domain-unpaused", []),
                 ("domain-pre-shutdown", [("force", "False")]), ("domain-stopped", [])] + resets +
                [("domain-shutdown", [])])
        got = [(e, list(kw.items())) for s, e, kw in list(self.events.events)[mark:] if s == work]
        self.assertEqual(got, want)
        # A halted qube cannot pause.
        self.assertEqual(self.raw("admin.vm.Pause", work),
                         exc("QubesVMNotRunningError", "Domain not running (either powered off or paused): '%s'"
                             % work))
        self.assertEqual(self.raw("admin.vm.Unpause", work),
                         exc("QubesVMNotPausedError", "Domain is not paused: '%s'" % work))

    def import_program(self, method, qube, volume, data, size_line=None):
        """Runs the rpc folder's admin.vm.volume.Import[WithSize] as qubesadmin's
        QubesLocal does (QREXEC_REMOTE_DOMAIN=dom0): (exit code, answer)."""
        env = dict(os.environ, QREXEC_REMOTE_DOMAIN="dom0", QREXEC_REQUESTED_TARGET=qube,
                   QUBESD_INTERNAL_SOCKET=self.w.internal)
        stdin = (size_line if size_line is not None else b"") + data
        r = subprocess.run([os.path.join(self.w.root, "rpc", method), volume], input=stdin, env=env,
                           capture_output=True, timeout=120)
        return r.returncode, r.stdout

    def test_08_volume_import(self):
        self.w.daemon_args = ["--rpc-dir", os.path.join(self.w.root, "rpc")]
        self.make_world()
        work = self.work
        uuid = self.w.uuid(work)
        size = 32 << 20
        image = os.path.join(self.w.root, "data.img")
        subprocess.run(["truncate", "-s", str(size), image], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
        view = os.path.join(self.w.root, "data-view")
        os.mkdir(view)
        subprocess.run(["mount", "-o", "loop", image, view], check=True)
        with open(os.path.join(view, "marker"), "w") as f:
            f.write("imported\n")
        subprocess.run(["umount", view], check=True)
        with open(image, "rb") as f:
            data = f.read()
        old_size = int(self.info(work, "private")["size"])
        mark = len(self.events.events)

        # ImportWithSize: the volume takes the data and its size.
        self.assertEqual(self.import_program("admin.vm.volume.ImportWithSize", work, "private", data,
                                             b"%d\n" % size), (0, ok()))
        self.assertEqual(self.info(work, "private")["size"], str(size))
        with self.w.halted_volume(work, "private") as v:
            with open(os.path.join(v, "marker")) as f:
                self.assertEqual(f.read(), "imported\n")
        got = [(e, list(kw.items())) for s, e, kw in list(self.events.events)[mark:] if s == work]
        self.assertEqual(got, [("domain-volume-import-begin", [("volume", "private"), ("size", str(size))]),
                               ("domain-volume-import-end", [("volume", "private"), ("success", "True")])])
        # Import: the volume's size of data, no more, no less; the volume is
        # replaced only when all of it came.
        self.assertEqual(self.import_program("admin.vm.volume.Import", work, "private", data), (0, ok()))
        self.assertEqual(self.import_program("admin.vm.volume.Import", work, "private", data[:1000]),
                         (0, exc("QubesException", "Data import failed: not enough data (copied 1000 bytes, "
                                                   "expected %d bytes)" % size)))
        self.assertEqual(self.import_program("admin.vm.volume.Import", work, "private", data + b"x"),
                         (0, exc("QubesException", "Data import failed: too much data (expected %d bytes)" % size)))
        # Data that is no clean ext4 file system never reaches the host's mounts.
        self.assertEqual(self.import_program("admin.vm.volume.ImportWithSize", work, "private", b"\1" * 8192,
                                             b"8192\n"),
                         (0, exc("StoragePoolException", "the data is not an ext4 file system without errors "
                                                         "(e2fsck -fn found problems)")))
        with self.w.halted_volume(work, "private") as v:
            self.assertTrue(os.path.exists(os.path.join(v, "marker")))
        self.assertEqual(self.info(work, "private")["size"], str(size))
        self.assertFalse(os.path.exists(os.path.join(self.w.state, "pool", "vm", uuid, "private-import.img")))
        # Refusals of the first half are the caller's answer (exit code 1).
        self.assertEqual(self.import_program("admin.vm.volume.Import", work, "root", data),
                         (1, exc("StoragePoolException",
                                 "Can not import into save_on_stop=False volume vm/%s/root" % uuid)))
        for line in (b"12x\n", b"012\n", b"1" * 20 + b"\n"):
            self.assertEqual(self.import_program("admin.vm.volume.ImportWithSize", work, "private", data, line),
                             (1, CLOSED), line)
        self.assertEqual(self.import_program("admin.vm.volume.Import", work, "nosuch", data), (1, CLOSED))
        self.assertEqual(self.import_program("admin.vm.volume.ImportWithSize", work, "private", data, b"1" * 30)[0],
                         1)  # no newline in the first 21 bytes
        self.w.tool("qvm-start", work)
        self.assertEqual(self.import_program("admin.vm.volume.Import", work, "private", data),
                         (1, exc("QubesVMNotHaltedError", "Domain is not powered off: '%s'" % work)))
        self.w.tool("qvm-shutdown", "--wait", work, timeout=120)
        # The internal halves take their arguments as qubesd's.
        internal = lambda method, arg, payload=b"": exchange(self.w.internal, encode(method, work, arg, payload))
        self.assertEqual(internal("internal.vm.volume.ImportBegin", "nosuch"), CLOSED)
        self.assertEqual(internal("internal.vm.volume.ImportEnd", "private"), CLOSED)  # no status
        # A kill -9 between the halves: the volume is the old one.
        begun = internal("internal.vm.volume.ImportBegin", "private", b"8192")
        self.assertRegex(begun, rb"\A0\x008192 /\S+/private-import\.img\Z")
        self.w.stop_daemon(signal.SIGKILL)
        self.w.start_daemon()
        self.assertEqual(self.info(work, "private")["size"], str(size))
        self.assertEqual(internal("internal.vm.volume.ImportEnd", "private", b"fail\nthe caller gave up"),
                         exc("QubesException", "Data import failed: the caller gave up"))
        self.assertEqual(self.info(work, "private")["size"], str(size))
        # Resize: whole 4 KiB blocks (rounded up), never smaller.
        self.assertEqual(self.raw("admin.vm.volume.Resize", work, "private", b"%d" % (size + 1)), ok())
        self.assertEqual(self.info(work, "private")["size"], str(size + 4096))
        self.assertEqual(self.raw("admin.vm.volume.Resize", work, "private", b"%d" % old_size), ok())
        self.assertEqual(self.raw("admin.vm.volume.Resize", work, "private", b"4096"),
                         exc("StoragePoolException", "For your own safety, shrinking of private is disabled. If you "
                             "really know what you are doing, use `truncate` on vm/%s/private manually." % uuid))

    def test_09_volume_import_from_a_management_qube(self):
        """Through qrexec, as a management qube's qubesadmin sends it: the
        policy redirects the call to dom0, whose service is the rpc folder's
        program; a qube the policy does not grant keeps its volume."""
        self.w.daemon_args = ["--rpc-dir", os.path.join(self.w.root, "rpc")]
        self.make_world(appvms=("work", "vault", "mgmt"))
        work, vault, mgmt = self.work, self.vault, PREFIX + "mgmt"
        self.w.start_policy_daemon("admin.vm.volume.ImportWithSize +private {m} {w} allow target=dom0\n"
                                   "admin.vm.volume.ImportWithSize * @anyvm @anyvm deny\n".format(m=mgmt, w=work))
        size = 16 << 20
        image = os.path.join(self.w.root, "data.img")
        subprocess.run(["truncate", "-s", str(size), image], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-d", self.marker_tree("from-mgmt"), image], check=True)
        with open(image, "rb") as f:
            data = f.read()
        self.w.tool("qvm-start", mgmt)
        self.w.run(mgmt, "cat > /tmp/data.img", input=data)
        send = "{{ echo {size}; cat /tmp/data.img; }} | qrexec-client-vm {target} admin.vm.volume.ImportWithSize+private"
        rc, out, _ = self.w.run(mgmt, send.format(size=size, target=work), input=b"", check=False, timeout=120)
        self.assertEqual((rc, out), (0, ok()))
        rc, out, _ = self.w.run(mgmt, send.format(size=size, target=vault), input=b"", check=False, timeout=120)
        self.assertNotEqual(rc, 0)
        self.assertEqual(out, b"")
        self.assertEqual(self.info(work, "private")["size"], str(size))
        self.assertNotEqual(self.info(vault, "private")["size"], str(size))
        with self.w.halted_volume(work, "private") as v:
            with open(os.path.join(v, "marker")) as f:
                self.assertEqual(f.read(), "from-mgmt\n")
        self.w.tool("qvm-shutdown", "--wait", mgmt, timeout=120)

    def marker_tree(self, text):
        """A folder holding only `marker` with `text` (for mkfs.ext4 -d)."""
        tree = os.path.join(self.w.root, "tree-" + text)
        os.makedirs(tree)
        with open(os.path.join(tree, "marker"), "w") as f:
            f.write(text + "\n")
        return tree


class MgmtEvents(StatsStream):
    """An admin.Events stream of a management qube (the socket trusts SOURCE)."""

    def __init__(self, socket_path, source):  # pylint: disable=super-init-not-called
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(socket_path)
        self.sock.sendall(encode("admin.Events", "dom0", source=source))
        self.sock.shutdown(socket.SHUT_WR)
        self.events = []
        self.cond = threading.Condition()
        self.error = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()


if __name__ == "__main__":
    sys.exit(run_tests(sys.argv, more=("qvm-clone", "aerie-volume-import")))
