"""The services every qube ships (src/services), called as Qubes' tools call
them, in real qubes of a world (aerie_world.py):

  shells       qubes.VMShell and qubes.VMRootShell as qubesadmin's qvm-run
               calls them (qrexec-client -p "CMD; exit\\n", "USER:QUBESRPC
               SERVICE+ dom0"): stdout bytes, exit codes, the user (the
               call's for VMShell, root for VMRootShell whatever the call
               names), stdin after the prefix; VMShell+WaitForSession;
               qrexec-client -t / -T filter what the qube prints;
               qrexec-client --use-stdin-socket.
  vmexec       qubes.VMExec / qubes.VMRootExec with qubesadmin's encoding:
               every byte of every word arrives, empty words too, nothing
               goes through a shell; hostile encodings (bad escapes, illegal
               bytes, a '..' program, NUL, an empty argument) refused with
               exit code 1 and the reason on stderr, and nothing run.
  date         qubes.GetDate (seconds, and nanoseconds with an argument) and
               qubes.WaitForSession (at once; an argument is refused with a
               message); qrexec-client -k kills the qube after the call.
  features     a template announces vmexec and supported-rpc.* as Qubes'.
  connect-tcp  qvm-connect-tcp in one qube forwards a local port to a TCP
               server on another qube's loopback through qubes.ConnectTCP:
               1 MiB both ways with checksums, two connections at once; a
               port the policy does not allow gets a closed connection; bad
               arguments refused with Qubes' messages.
  open         qvm-open-in-vm sends a file to another qube, whose configured
               handler (~/.config/aerie/open-handler) gets it in
               /tmp/<caller>-XXXXXX and edits it: the edit comes back, the
               folder is gone; --view-only: a read-only copy, nothing back;
               a URL reaches the handler; qubes.OpenURL refuses what is not
               http/https/ftp; hostile name blocks ('/', "..", short) refused,
               odd bytes replaced; qvm-open-in-dvm from inside an open call
               refused; qvm-open-in-dvm through a real disposable.
Needs root (exit code 77 otherwise).
Run: python3 services_test.py BUILD_DIR"""

import os
import hashlib
import re
import shlex
import socket
import subprocess
import sys

from aerie_world import WorldTest, bin_path, run_tests, wait_for

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def encode_for_vmexec(words):
    """qubesadmin's encoding of a command line for qubes.VMExec."""
    out = []
    for word in words:
        part = ""
        for b in word.encode():
            c = chr(b)
            if c.isascii() and (c.isalnum() or c in "_."):
                part += c
            elif c == "-":
                part += "--"
            else:
                part += "-%02X" % b
        out.append(part)
    return "+".join(out)


class ServicesTest(WorldTest):
    def call(self, qube, service, input=b"", user="DEFAULT", prefix=None, timeout=60, flags=()):
        """A service called as qubesadmin calls it from dom0: (exit code, stdout, stderr) as bytes."""
        argv = [bin_path("qrexec-client"), "--socket-dir=" + self.w.qrexec_dir, "-d", qube] + list(flags)
        if prefix is not None:
            argv += ["-p", prefix]
        argv.append("%s:QUBESRPC %s%s dom0" % (user, service, "" if "+" in service else "+"))
        r = subprocess.run(argv, input=input, capture_output=True, timeout=timeout, env=self.w.env)
        return r.returncode, r.stdout, r.stderr

    def shell(self, qube, command, **kw):
        return self.call(qube, "qubes.VMShell", prefix=command + "; exit\n", **kw)

    def start_work(self):
        self.make_world()
        self.w.tool("qvm-start", self.work)

    # --- qubes.VMShell, qubes.VMRootShell ------------------------------------------------------------

    def test_01_shells(self):
        self.start_work()
        w = self.work
        self.assertEqual(self.shell(w, "echo hi; id -un; printf 'a\\0b'"), (0, b"hi\nuser\na\0b", b""))
        self.assertEqual(self.shell(w, "echo oops >&2; exit 7"), (7, b"", b"oops\n"))
        # stdin after the prefix reaches the command.
        self.assertEqual(self.shell(w, "cat; echo end", input=b"in\x01put\n"), (0, b"in\x01put\nend\n", b""))
        # -t / -T (qubesadmin's on a terminal): escape sequences and other
        # unprintable bytes from the qube become '_'; without, they pass.
        noisy = "printf 'a\\033[2Jb\\007\\t\\303\\274\\n'; printf '\\033]0;x\\007\\r\\n' >&2; exit\n"
        self.assertEqual(self.call(w, "qubes.VMShell", prefix=noisy, flags=("-t", "-T")),
                         (0, b"a_[2Jb\x07\t__\n", b"_]0;x\x07\r\n"))
        self.assertEqual(self.call(w, "qubes.VMShell", prefix=noisy, flags=("-T",)),
                         (0, b"a\x1b[2Jb\x07\t\xc3\xbc\n", b"_]0;x\x07\r\n"))
        # --use-stdin-socket: one socket both ways, its end a shutdown.
        ours, theirs = socket.socketpair()
        client = subprocess.Popen([bin_path("qrexec-client"), "--socket-dir=" + self.w.qrexec_dir, "-d", w,
                                   "--use-stdin-socket", "DEFAULT:QUBESRPC qubes.VMShell+ dom0"],
                                  stdin=theirs, stdout=subprocess.DEVNULL, env=self.w.env)
        theirs.close()
        ours.sendall(b"cat; echo after\n" + b"through the socket\n")
        ours.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := ours.recv(65536):
            got += chunk
        ours.close()
        self.assertEqual((client.wait(60), got), (0, b"through the socket\nafter\n"))
        r = subprocess.run([bin_path("qrexec-client"), "-d", w, "--use-stdin-socket", "DEFAULT:true"],
                           stdin=subprocess.DEVNULL, capture_output=True)
        self.assertEqual((r.returncode, r.stderr), (2, b"qrexec-client: --use-stdin-socket passed, but stdin not a socket\n"))
        # The user comes from the call (qvm-run -u root) ...
        self.assertEqual(self.shell(w, "id -u", user="root"), (0, b"0\n", b""))
        # ... and qubes.VMRootShell forces root whatever the call names.
        for user in ("DEFAULT", "user"):
            self.assertEqual(self.call(w, "qubes.VMRootShell", prefix="id -u; exit\n", user=user), (0, b"0\n", b""))
        # The service names as Qubes' agent finds them; a shell as the service's stdin.
        self.assertEqual(self.call(w, "qubes.VMShell", input=b"echo $QREXEC_SERVICE_FULL_NAME\n"),
                         (0, b"qubes.VMShell+\n", b""))
        # With wait-for-session (rpc-config of qubes.VMShell+WaitForSession):
        # Aerie's qubes.WaitForSession ends at once, and every call goes on.
        for i in range(5):
            self.assertEqual(self.call(w, "qubes.VMShell+WaitForSession", prefix="echo waited %d; exit %d\n" % (i, i)),
                             (i, b"waited %d\n" % i, b""))

    # --- qubes.VMExec ----------------------------------------------------------------------------------

    def test_02_vmexec(self):
        self.start_work()
        w = self.work
        words = ["printf", "[%s]", "a b", "", "-x", "$HOME;`id`", "\u00fc\n", "*"]
        self.assertEqual(self.call(w, "qubes.VMExec+" + encode_for_vmexec(words)),
                         (0, "[a b][][-x][$HOME;`id`][\u00fc\n][*]".encode(), b""))
        self.assertEqual(self.call(w, "qubes.VMExec+" + encode_for_vmexec(["id", "-un"])), (0, b"user\n", b""))
        self.assertEqual(self.call(w, "qubes.VMRootExec+" + encode_for_vmexec(["id", "-un"])), (0, b"root\n", b""))
        self.assertEqual(self.call(w, "qubes.VMExec+" + encode_for_vmexec(["sh", "-c", "exit 5"])), (5, b"", b""))
        self.assertEqual(self.call(w, "qubes.VMExec+" + encode_for_vmexec(["cat"]), input=b"x\0y"), (0, b"x\0y", b""))
        rc, out, err = self.call(w, "qubes.VMExec+nosuchprogram")
        self.assertEqual((rc, out, err), (127, b"", b"qubes.VMExec: cannot run nosuchprogram: No such file or directory\n"))

        # Hostile encodings: refused with the reason, and nothing runs (each
        # would create /tmp/pwned if it did).
        touch = encode_for_vmexec(["touch", "/tmp/pwned"])
        hostile = {
            touch + "-": b"decode error: bad escape at offset 20: '-' can be used only in '-HH' (upper-case hex) or '--'",
            touch + "-2f": b"decode error: bad escape at offset 20: '-' can be used only in '-HH' (upper-case hex) or '--'",
            touch + "-G0": b"decode error: bad escape at offset 20: '-' can be used only in '-HH' (upper-case hex) or '--'",
            "touch+-2Ftmp-2Fpwned%": b"decode error: illegal character '%' at offset 20 (allowed: A-Z a-z 0-9 _ . - +)",
            encode_for_vmexec(["../../usr/bin/touch", "/tmp/pwned"]): b"the program path has a '..' component",
            encode_for_vmexec(["/usr/bin/../bin/touch", "/tmp/pwned"]): b"the program path has a '..' component",
            "+" + touch: b"the program name is empty",
            touch + "-00": b"word 1 contains a NUL byte",
            "": None,
        }
        for argument, reason in hostile.items():
            rc, out, err = self.call(w, "qubes.VMExec+" + argument)
            expected = (b"qubes.VMExec: refused: " + reason + b"\n" if reason
                        else b"This service requires exactly one argument\n")
            self.assertEqual((rc, out, err), (1, b"", expected), argument)
        self.assertEqual(self.call(w, "qubes.VMExec"), (1, b"", b"This service requires exactly one argument\n"))
        # A '/' never reaches the service: the agent refuses such a service name.
        self.assertEqual(self.call(w, "qubes.VMExec+touch+/tmp/pwned"), (125, b"", b""))
        self.assertEqual(self.shell(w, "ls /tmp/pwned 2>/dev/null; echo checked"), (0, b"checked\n", b""))
        # The control: the same command well encoded does run.
        self.assertEqual(self.call(w, "qubes.VMExec+" + touch), (0, b"", b""))
        self.assertEqual(self.shell(w, "ls /tmp/pwned"), (0, b"/tmp/pwned\n", b""))

    # --- qubes.GetDate, qubes.WaitForSession, features ---------------------------------------------------

    def test_03_date_session_features(self):
        self.start_work()
        w = self.work
        rc, out, err = self.call(w, "qubes.GetDate")
        self.assertEqual((rc, err), (0, b""))
        self.assertRegex(out, rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00\n$")
        rc, out, err = self.call(w, "qubes.GetDate+nanoseconds")
        self.assertEqual((rc, err), (0, b""))
        self.assertRegex(out, rb"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d,\d{9}\+00:00\n$")
        self.assertEqual(self.call(w, "qubes.WaitForSession"), (0, b"", b""))
        self.assertEqual(self.call(w, "qubes.WaitForSession+x"), (0, b"", b"No argument is allowed\n"))
        # qrexec-client -k: the qube is killed once the call ended.
        rc, out, err = self.call(w, "qubes.GetDate", flags=("-k",))
        self.assertEqual((rc, err), (0, b""))
        self.assertRegex(out, rb"^\d{4}-")
        wait_for(lambda: self.w.current_state(w)["power_state"] == "Halted", 30, "the qube to be killed")
        features = self.w.tool("qvm-features", self.tpl).stdout
        for line in ("vmexec  1", "os  Linux", "supported-rpc.qubes.VMExec  1", "supported-rpc.qubes.VMRootExec  1"):
            self.assertRegex(features, re.escape(line.split("  ")[0]) + r"\s+" + re.escape(line.split("  ")[1]))

    # --- qubes.ConnectTCP, qvm-connect-tcp ------------------------------------------------------------------

    def test_04_connect_tcp(self):
        self.make_world(appvms=("work", "vault"))
        work, vault = self.work, self.vault
        self.w.start_policy_daemon("qubes.ConnectTCP +8080 %s %s allow\n"
                                   "qubes.ConnectTCP * @anyvm @anyvm deny\n" % (work, vault))
        self.w.tool("qvm-start", work)
        self.w.tool("qvm-start", vault)
        # An echo server on vault's loopback (8080) and another port (8081) the policy does not allow.
        self.w.run(vault, "setsid python3 -c %s </dev/null >/dev/null 2>&1 &" % shlex.quote(ECHO_SERVER))
        rc, out, err = self.w.run(work, "qvm-connect-tcp 9000:%s:8080; qvm-connect-tcp 9001:%s:8081" % (vault, vault))
        self.assertEqual((rc, err), (0, ""))
        self.assertEqual(out, "Binding TCP '%s:8080' to 'localhost:9000'...\n"
                              "Binding TCP '%s:8081' to 'localhost:9001'...\n" % (vault, vault))
        rc, out, err = self.w.run(work, "python3 -c %s" % shlex.quote(ECHO_CLIENT), timeout=120)
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, "two connections: 1048576 bytes each way, checksums equal\n")
        rc, out, err = self.w.run(work, "python3 -c %s" % shlex.quote(REFUSED_CLIENT))
        self.assertEqual((rc, out), (0, "closed without data\n"), err)
        # The port is taken now: reported at once.
        rc, out, err = self.w.run(work, "qvm-connect-tcp 9000:%s:8080" % vault, check=False)
        self.assertEqual((rc, err), (1, "qvm-connect-tcp: cannot listen on localhost:9000: Address already in use\n"))
        # Bad arguments, with Qubes' messages.
        usage = ("Usage: /run/aerie/bin/qvm-connect-tcp [localport]:[vmname]:[port]\n"
                 "Bind localport to another VM port using the qubes.ConnectTCP RPC service.\n")
        for arg, expected_out, expected_err in (
                ("", "", usage), ("9000:%s:" % vault, "Please provide PORT\n", ""),
                ("9000:%s:65536" % vault, "Invalid port provided\n", usage),
                ("x:%s:80" % vault, "Invalid port provided\n", usage),
                (":%s:080" % vault, "Invalid port provided\n", usage)):
            rc, out, err = self.w.run(work, "/run/aerie/bin/qvm-connect-tcp %s" % arg, check=False)
            self.assertEqual((rc, out, err), (1, expected_out, expected_err), arg)

    # --- qubes.OpenInVM, qubes.OpenURL, qvm-open-in-vm ---------------------------------------------------------

    def test_05_open(self):
        self.make_world(appvms=("work", "vault"))
        work, vault = self.work, self.vault
        self.w.start_policy_daemon("qubes.OpenInVM * %s %s allow\n"
                                   "qubes.OpenURL * %s %s allow\n" % (work, vault, work, vault))
        self.w.tool("qvm-start", work)
        self.w.tool("qvm-start", vault)
        self.w.run(vault, "mkdir -p ~/.config/aerie && cat > ~/.config/aerie/open-handler && "
                          "chmod 755 ~/.config/aerie/open-handler", input=OPEN_HANDLER)
        content = "line one\n" + "x" * 100000 + "\n"
        self.w.run(work, "cat > ~/report.txt", input=content)

        # Opened and edited: the edit comes back into the same file.
        rc, out, err = self.w.run(work, "qvm-open-in-vm %s ~/report.txt" % vault)
        self.assertEqual((rc, out, err), (0, "", ""))
        self.assertEqual(self.w.run(work, "cat ~/report.txt")[1], content + "edited\n")
        log = self.w.run(vault, "cat /tmp/opened.log")[1].splitlines()
        self.assertRegex(log[0], r"^/tmp/%s-\w{6}/report.txt writable$" % re.escape(work))
        self.assertEqual(log[1], hashlib.sha256(content.encode()).hexdigest())
        self.assertEqual(self.w.run(vault, "ls -d /tmp/%s-* 2>/dev/null; echo end" % work)[1], "end\n")

        # View-only: read-only there, nothing comes back.
        self.w.run(vault, "rm /tmp/opened.log")
        self.w.run(work, "qvm-open-in-vm --view-only %s ~/report.txt" % vault)
        self.assertEqual(self.w.run(work, "cat ~/report.txt")[1], content + "edited\n")
        self.assertRegex(self.w.run(vault, "cat /tmp/opened.log")[1], r"^/tmp/%s-\w{6}/report.txt read-only\n" % re.escape(work))

        # A URL.
        self.w.run(vault, "rm /tmp/opened.log")
        rc, out, err = self.w.run(work, "qvm-open-in-vm %s 'https://example.org/a?b=1&c'" % vault)
        self.assertEqual((rc, out, err), (0, "", ""))
        self.assertEqual(self.w.run(vault, "cat /tmp/opened.log")[1], "https://example.org/a?b=1&c url\n")
        # Neither a file nor a URL; a directory.
        rc, out, err = self.w.run(work, "qvm-open-in-vm %s nosuchfile" % vault, check=False)
        self.assertEqual((rc, err), (2, "Error! \"nosuchfile\" is not a valid file or URL.\n"
                                        "Usage: /run/aerie/bin/qvm-open-in-vm [--view-only] [--] vmname filename\n"))
        rc, out, err = self.w.run(work, "qvm-open-in-vm %s /tmp" % vault, check=False)
        self.assertEqual(rc, 2)
        self.assertTrue(err.startswith("Error! \"/tmp\" is a directory.\n"), err)
        # A disposable asked from inside an open call: refused (no dialog to ask).
        rc, out, err = self.w.run(work, "QREXEC_SERVICE_FULL_NAME=qubes.OpenURL+ qvm-open-in-dvm https://x.org",
                                  check=False)
        self.assertEqual((rc, err), (1, "Cannot prompt user, exiting to avoid possible infinite VM creation loop.\n"))

        # qubes.OpenURL itself: only http, https and ftp.
        self.w.run(vault, "rm /tmp/opened.log")
        for line, reason in ((b"file:///etc/passwd\n", b"only http://, https:// and ftp:// URLs are opened"),
                             (b"javascript:alert(1)", b"only http://, https:// and ftp:// URLs are opened"),
                             (b"http://a\x1b[2J\n", b"it contains a control character"),
                             (b"http://" + b"a" * 70000 + b"\n", b"longer than 65536 bytes")):
            self.assertEqual(self.call(vault, "qubes.OpenURL", input=line), (1, b"", b"Invalid URL: " + reason + b"\n"))
        self.assertEqual(self.call(vault, "qubes.OpenURL", input=b"  ftp://h/x  \nrest"), (0, b"", b""))
        self.assertEqual(self.w.run(vault, "cat /tmp/opened.log")[1], "ftp://h/x url\n")

        # qubes.OpenInVM with hostile name blocks: refused, nothing written.
        def block(name):
            return name + b"\0" * (256 - len(name))
        for sent, reason in ((block(b"../../home/user/.bashrc") + b"x", b"the file name contains '/'"),
                             (block(b"..") + b"x", b"the file name is '.' or '..'"),
                             (block(b"view-only-") + b"x", b"the file name is empty"),
                             (b"short", b"the file name did not come (5 of 256 bytes)")):
            self.assertEqual(self.call(vault, "qubes.OpenInVM", input=sent), (1, b"", b"qubes.OpenInVM: " + reason + b"\n"))
        self.assertEqual(self.w.run(vault, "ls -d /tmp/dom0-* 2>/dev/null; echo end")[1], "end\n")
        # Odd bytes become '_'; the block's last byte is always the end.
        self.w.run(vault, "rm /tmp/opened.log")
        rc, out, err = self.call(vault, "qubes.OpenInVM", input=b"a b\xff$(x)" + b"y" * 248 + b"data")
        self.assertEqual((rc, err), (0, b""))
        self.assertEqual(out, b"data" + b"edited\n")
        self.assertRegex(self.w.run(vault, "cat /tmp/opened.log")[1], r"^/tmp/dom0-\w{6}/a_b___x_y{247} writable\n")

        # qvm-open-in-dvm: a new disposable of vault (its handler from vault's
        # home) edits the file, which comes back; the disposable is gone.
        self.w.tool("qvm-shutdown", "--wait", vault)
        self.w.tool("qvm-prefs", vault, "template_for_dispvms", "True")
        self.w.tool("qvm-prefs", work, "default_dispvm", vault)
        self.w.write_policy("qubes.OpenInVM * %s @dispvm allow\n" % work)
        self.w.run(work, "echo second > ~/second.txt")
        rc, out, err = self.w.run(work, "qvm-open-in-dvm ~/second.txt", timeout=120)
        self.assertEqual((rc, out, err), (0, "", ""))
        self.assertEqual(self.w.run(work, "cat ~/second.txt")[1], "second\nedited\n")
        wait_for(lambda: not [q for q in self.w.listed() if q.startswith("disp")], 30, "the disposable to go")


OPEN_HANDLER = """#!/bin/sh
# Records what it was given; edits files it may write.
if [ -f "$1" ]; then
    if [ -w "$1" ]; then state=writable; else state=read-only; fi
    echo "$1 $state" >> /tmp/opened.log
    sha256sum < "$1" | cut -d' ' -f1 >> /tmp/opened.log
    [ -w "$1" ] && echo edited >> "$1"
else
    echo "$1 url" >> /tmp/opened.log
fi
exit 0
"""


ECHO_SERVER = """
import socket, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 8080)); s.listen(8)
def echo(c):
    while True:
        data = c.recv(65536)
        if not data: break
        c.sendall(data)
    c.close()
while True:
    threading.Thread(target=echo, args=(s.accept()[0],)).start()
"""

ECHO_CLIENT = """
import hashlib, os, socket, threading, time
def one(results, i):
    data = os.urandom(1 << 20)
    for attempt in range(100):  # the server may still be starting
        c = socket.create_connection(("127.0.0.1", 9000))
        c.sendall(data[:1])
        first = c.recv(1)
        if first: break
        c.close(); time.sleep(0.1)
    def send():
        c.sendall(data[1:]); c.shutdown(socket.SHUT_WR)
    t = threading.Thread(target=send); t.start()
    got = first
    while True:
        chunk = c.recv(65536)
        if not chunk: break
        got += chunk
    t.join()
    results[i] = (len(got), hashlib.sha256(got).digest() == hashlib.sha256(data).digest())
results = {}
threads = [threading.Thread(target=one, args=(results, i)) for i in range(2)]
for t in threads: t.start()
for t in threads: t.join()
assert results == {0: (1 << 20, True), 1: (1 << 20, True)}, results
print("two connections: 1048576 bytes each way, checksums equal")
"""

REFUSED_CLIENT = """
import socket
c = socket.create_connection(("127.0.0.1", 9001))
try:
    c.sendall(b"x")
    got = c.recv(1)
except ConnectionResetError:  # closed with our byte unread
    got = b""
print("closed without data" if got == b"" else "data came")
"""


if __name__ == "__main__":
    sys.exit(run_tests(sys.argv, more=("qvm-features", "qubes-vmexec", "qvm-connect-tcp", "aerie-open-url", "vm-file-editor", "qopen-in-vm")))
