"""The services every qube ships, across Qubes Air (two hosts, air_hosts.py):
A's work opens a file and a URL in B's vault with qvm-open-in-vm (its
RemoteVM on A), B's handler edits the file and the edit comes back; a
qvm-connect-tcp forward from A's work reaches a TCP server on B's vault's
loopback. Each host's policy decides its own leg.
Needs root (exit code 77 otherwise).
Run: python3 services_air_test.py BUILD_DIR"""

import shlex
import sys

from air_hosts import TwoHostsTest, pair_hosts
from aerie_world import run_tests

OPEN_HANDLER = """#!/bin/sh
echo "$1" >> /tmp/opened.log
if [ -f "$1" ]; then echo "edited on $(hostname)" >> "$1"; fi
"""

ECHO_SERVER = """
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", 8080)); s.listen(4)
while True:
    c = s.accept()[0]
    data = b""
    while chunk := c.recv(65536):
        data += chunk
    c.sendall(data[::-1]); c.close()
"""

CLIENT = """
import socket
c = socket.create_connection(("127.0.0.1", 9000))
c.sendall(b"across the air"); c.shutdown(socket.SHUT_WR)
got = b""
while chunk := c.recv(65536):
    got += chunk
print(got.decode())
"""


class ServicesAirTest(TwoHostsTest):
    def test_open_and_connect_tcp_across_hosts(self):
        a, b = self.a, self.b
        a.build(("work",), services={})
        b.build(("vault",), services={})
        pair_hosts(a, b, ("work",), ("vault",))
        rvault, rwork, work, vault = a.remote(b, "vault"), b.remote(a, "work"), a.q("work"), b.q("vault")
        rules = "qubes.OpenInVM * {w} {v} allow\nqubes.OpenURL * {w} {v} allow\nqubes.ConnectTCP +8080 {w} {v} allow\n"
        a.w.start_policy_daemon(rules.format(w=work, v=rvault))
        b.w.start_policy_daemon(rules.format(w=rwork, v=vault))
        a.w.tool("qvm-start", work)
        b.w.tool("qvm-start", vault)
        b.w.run(vault, "mkdir -p ~/.config/aerie && cat > ~/.config/aerie/open-handler && "
                       "chmod 755 ~/.config/aerie/open-handler", input=OPEN_HANDLER)

        a.w.run(work, "echo 'from host a' > ~/note.txt")
        rc, out, err = a.w.run(work, "qvm-open-in-vm %s ~/note.txt" % rvault, check=False, timeout=120)
        self.assertEqual((rc, out, err), (0, "", ""), a.w.log()[-1500:] + b.w.log()[-1500:])
        self.assertEqual(a.w.run(work, "cat ~/note.txt")[1], "from host a\nedited on %s\n" % vault)
        rc, out, err = a.w.run(work, "qvm-open-in-vm %s https://example.org/x" % rvault, check=False, timeout=120)
        self.assertEqual((rc, out, err), (0, "", ""))
        log = b.w.run(vault, "cat /tmp/opened.log")[1].splitlines()
        self.assertRegex(log[0], r"^/tmp/%s-\w{6}/note.txt$" % rwork)
        self.assertEqual(log[1], "https://example.org/x")

        b.w.run(vault, "setsid python3 -c %s </dev/null >/dev/null 2>&1 &" % shlex.quote(ECHO_SERVER))
        self.assertEqual(a.w.run(work, "qvm-connect-tcp 9000:%s:8080" % rvault)[1],
                         "Binding TCP '%s:8080' to 'localhost:9000'...\n" % rvault)
        for _ in range(50):  # the server may still be starting
            rc, out, _ = a.w.run(work, "python3 -c %s" % shlex.quote(CLIENT), check=False, timeout=120)
            if out == "ria eht ssorca\n":
                break
        self.assertEqual(out, "ria eht ssorca\n")


if __name__ == "__main__":
    sys.exit(run_tests(sys.argv, more=("qvm-air", "aerie-air-relay", "aerie-air-call", "qvm-connect-tcp",
                                       "vm-file-editor", "qopen-in-vm", "aerie-open-url")))
