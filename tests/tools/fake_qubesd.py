#!/usr/bin/env python3
"""A small stand-in for the admin daemon, for testing the qvm-* tools'
requests and their reading of answers without real qubes.

    fake_qubesd.py --socket PATH --log PATH --state STATE.json [--replies REPLIES.json]

It speaks qubesd's framing ("METHOD[+ARG] SOURCE name DEST\\0PAYLOAD" in,
"0\\0BODY", "2\\0TYPE\\0\\0MESSAGE\\0" or an admin.Events stream out), writes
every request to the log as one line "DEST METHOD[+ARG][ PAYLOAD]", and
keeps a little state: qubes with a class, a power state, properties,
features and volumes; admin.vm.Create makes one (a TemplateVM with an empty
root folder), admin.vm.Remove removes it. Lifecycle calls change the power states and send
domain-* events to the open admin.Events streams, as the daemon does.
admin.vm.CreateDisposable makes a DispVM "dispN" (N from "next_dispid",
default 1000) from DEST's template_for_dispvms qube (dom0: its
default_dispvm property) and answers its name, or "uuid:UUID" for the
payload "uuid"; admin.vm.Kill of a DispVM with auto_cleanup removes it.
A DEST "uuid:UUID" names the qube with that "uuid".

STATE.json:
  {"qubes": {"NAME": {"class": "AppVM", "state": "Halted",
                      "properties": {"netvm": "vm sys-net"},  # "TYPE VALUE"
                      "features": {"internal": "1"},
                      "volumes": {"private": {"info": {...}, "revisions": [...]}}}},
   "replies": {"DEST METHOD[+ARG]": "raw reply, \\u0000 for NUL" or null},
   "shutdown_delay": 0.2,         # seconds from Shutdown to Halted
   "stuck": ["NAME"],             # qubes that ignore Shutdown
   "pool_dir": "DIR"}             # where a new TemplateVM's root folder goes
A reply of null closes the connection without an answer (a refusal).
REPLIES.json holds more of them ({"DEST METHOD[+ARG]": ...}), read again at
every request, so that a test can change them as it goes.
"""
import argparse
import json
import os
import select
import shutil
import socket
import socketserver
import threading
import time

LOCK = threading.Lock()
STREAMS = []  # sockets of open admin.Events streams
STATE = {}
LOG = None
REPLIES = None


def log(line):
    with open(LOG, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def success(body=""):
    return b"0\0" + body.encode()


def exception(exc_type, message):
    return b"2\0" + exc_type.encode() + b"\0\0" + message.encode() + b"\0"


def event_bytes(subject, event, **kwargs):
    out = b"1\0" + subject.encode() + b"\0" + event.encode() + b"\0"
    for key, value in kwargs.items():
        out += key.encode() + b"\0" + value.encode() + b"\0"
    return out + b"\0"


def send_event(subject, event, **kwargs):
    data = event_bytes(subject, event, **kwargs)
    with LOCK:
        for s in list(STREAMS):
            try:
                s.sendall(data)
            except OSError:
                STREAMS.remove(s)


def qube(name):
    return STATE["qubes"].get(name)


def resolve(dest):
    """A qube name for DEST (a name, or "uuid:UUID")."""
    if dest.startswith("uuid:"):
        for name, q in STATE["qubes"].items():
            if q.get("uuid") == dest[len("uuid:"):]:
                return name
    return dest


def create_disposable(dest, payload):
    q = qube(dest)
    tpl = dest
    if q["class"] == "AdminVM":
        tpl = q.get("properties", {}).get("default_dispvm", "vm ").partition(" ")[2]
        if not tpl:
            return exception("QubesException", "No default DispVM template")
    base = qube(tpl)
    if base is None or base.get("properties", {}).get("template_for_dispvms") != "bool True":
        return exception("QubesException", "Refusing to create DispVM out of this AppVM, "
                                           "because template_for_dispvms=False")
    with LOCK:
        n = STATE.get("next_dispid", 1000)
        STATE["next_dispid"] = n + 1
        name = "disp{}".format(n)
        uuid = "00000000-0000-4000-8000-{:012d}".format(n)
        STATE["qubes"][name] = {"class": "DispVM", "state": "Halted", "uuid": uuid, "features": {},
                                "volumes": {}, "properties": {"template": "vm " + tpl,
                                                              "auto_cleanup": "bool True"}}
    return success("uuid:" + uuid if payload == "uuid" else name)


def set_state(name, state):
    with LOCK:
        qube(name)["state"] = state


def halt_later(name, delay):
    def halt():
        time.sleep(delay)
        q = qube(name)
        if q and q["state"] in ("Halting", "Running", "Paused"):
            set_state(name, "Halted")
            send_event(name, "domain-shutdown", reason="shutdown")
    threading.Thread(target=halt, daemon=True).start()


LIFECYCLE = {"admin.vm.Start": "start", "admin.vm.Shutdown": "shutdown", "admin.vm.Kill": "kill",
             "admin.vm.Pause": "pause", "admin.vm.Unpause": "unpause"}


def answer(method, arg, dest, payload):
    dest = resolve(dest)
    q = qube(dest)
    if method.startswith("admin.vm.Create.") and dest == "dom0":
        fields = dict(f.split("=", 1) for f in payload.split(" ") if "=" in f)
        name = fields.get("name", "")
        if not name or name in STATE["qubes"]:
            return None
        new = {"class": method[len("admin.vm.Create."):], "state": "Halted", "features": {}, "volumes": {}}
        if new["class"] in ("TemplateVM", "StandaloneVM") and STATE.get("pool_dir"):
            path = os.path.join(STATE["pool_dir"], name, "root")
            os.makedirs(path)
            new["volumes"]["root"] = {"info": {"pool": "varlibqubes", "vid": name + "/root", "path": path}}
        with LOCK:
            STATE["qubes"][name] = new
        return success()
    if method == "admin.vm.List" and dest == "dom0":
        return success("".join(
            "{} class={} state={}\n".format(n, v["class"], v["state"])
            for n, v in sorted(STATE["qubes"].items())))
    if q is None:
        return exception("QubesVMNotFoundError", "No such domain: '{}'".format(dest))
    state = q["state"]
    if method == "admin.vm.CreateDisposable":
        return create_disposable(dest, payload)
    if method == "admin.vm.CurrentState":
        return success("mem=0 mem_static_max=0 cputime=0 power_state=" + state)
    if q["class"] == "AdminVM" and method in LIFECYCLE:
        return exception("QubesVMError", "Cannot {} Dom0 fake domain!".format(LIFECYCLE[method]))
    if method == "admin.vm.Start":
        if state == "Halted":
            set_state(dest, "Running")
            send_event(dest, "domain-start")
        return success()
    if method == "admin.vm.Shutdown":
        if state == "Halted":
            return exception("QubesVMNotStartedError", "Domain is powered off: '{}'".format(dest))
        if dest not in STATE.get("stuck", []):
            set_state(dest, "Halting")
            halt_later(dest, STATE.get("shutdown_delay", 0.2))
        return success()
    if method == "admin.vm.Kill":
        if state == "Halted":
            return exception("QubesVMNotRunningError",
                             "Domain not running (either powered off or paused): '{}'".format(dest))
        set_state(dest, "Halted")
        send_event(dest, "domain-shutdown", reason="shutdown")
        if q["class"] == "DispVM" and q.get("properties", {}).get("auto_cleanup") == "bool True":
            with LOCK:
                del STATE["qubes"][dest]
        return success()
    if method == "admin.vm.Pause":
        if state != "Running":
            return exception("QubesVMNotRunningError",
                             "Domain not running (either powered off or paused): '{}'".format(dest))
        set_state(dest, "Paused")
        send_event(dest, "domain-paused")
        return success()
    if method == "admin.vm.Unpause":
        if state != "Paused":
            return exception("QubesVMNotPausedError", "Domain is not paused: '{}'".format(dest))
        set_state(dest, "Running")
        send_event(dest, "domain-unpaused")
        return success()
    if method == "admin.vm.Remove":
        with LOCK:
            del STATE["qubes"][dest]
        if STATE.get("pool_dir"):
            shutil.rmtree(os.path.join(STATE["pool_dir"], dest), ignore_errors=True)
        return success()
    if method == "admin.vm.feature.Set":
        q.setdefault("features", {})[arg] = payload
        return success()
    if method == "admin.vm.feature.Get":
        if arg in q.get("features", {}):
            return success(q["features"][arg])
        return exception("QubesFeatureNotFoundError", "'{}'".format(arg))
    if method == "admin.vm.property.Get":
        if arg in q.get("properties", {}):
            kind, _, value = q["properties"][arg].partition(" ")
            return success("default=False type={} {}".format(kind, value))
        return exception("QubesNoSuchPropertyError", "Invalid property '{}' of {}".format(arg, dest))
    volumes = q.get("volumes", {})
    if method == "admin.vm.volume.List":
        return success("".join(v + "\n" for v in volumes))
    if method.startswith("admin.vm.volume."):
        vol = volumes.get(arg)
        if vol is None:
            return None
        if method == "admin.vm.volume.Info":
            return success("".join("{}={}\n".format(k, v) for k, v in vol["info"].items()))
        if method == "admin.vm.volume.ListSnapshots":
            return success("".join(r + "\n" for r in vol.get("revisions", [])))
        if method == "admin.vm.volume.Revert":
            if payload not in vol.get("revisions", []):
                return None
            return success()
        if method == "admin.vm.volume.Set.revisions_to_keep":
            vol["info"]["revisions_to_keep"] = payload
            return success()
        if method == "admin.vm.volume.Set.rw":
            vol["info"]["rw"] = payload
            return success()
        if method == "admin.vm.volume.Resize":
            vol["info"]["size"] = payload
            return success()
    return None


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
        if len(fields) != 4:
            return
        method, _, arg = fields[0].partition("+")
        dest = fields[3]
        payload = payload.decode()
        log("{} {}{}".format(dest, fields[0], " " + payload if payload else ""))
        key = "{} {}".format(dest, fields[0])
        replies = dict(STATE.get("replies", {}))
        if REPLIES and os.path.exists(REPLIES):
            with open(REPLIES, encoding="utf-8") as f:
                replies.update(json.load(f))
        if key in replies:
            reply = replies[key]
            if reply is not None:
                self.request.sendall(reply.encode())
            return
        if method == "admin.Events":
            self.request.sendall(event_bytes("", "connection-established"))
            with LOCK:
                STREAMS.append(self.request)
            # until the client hangs up (it has already shut down its
            # writing side: only a full close shows as POLLHUP)
            poller = select.poll()
            poller.register(self.request, select.POLLHUP | select.POLLERR)
            while self.request in STREAMS:
                if any(ev & (select.POLLHUP | select.POLLERR) for _, ev in poller.poll(100)):
                    break
            with LOCK:
                if self.request in STREAMS:
                    STREAMS.remove(self.request)
            return
        reply = answer(method, arg, dest, payload)
        if reply is not None:
            self.request.sendall(reply)


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def main():
    global LOG, REPLIES
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--replies", help="more canned replies, read again at every request")
    args = parser.parse_args()
    LOG = args.log
    REPLIES = args.replies
    with open(args.state, encoding="utf-8") as f:
        STATE.update(json.load(f))
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    with Server(args.socket, Handler) as server:
        server.serve_forever()


if __name__ == "__main__":
    main()
