"""The Admin API's framing as the integration tests speak it: a request
"METHOD[+ARG] SOURCE TYPE DEST\0PAYLOAD" on a fresh connection, the write
side shut, the reply read to EOF."""

import socket


def encode(method, dest="dom0", arg="", payload=b"", source="dom0", dest_type="name"):
    head = method + ("+" + arg if arg else "")
    return ("%s %s %s %s" % (head, source, dest_type, dest)).encode() + b"\0" + payload


def exchange(path, data, timeout=10):
    """Sends one request, shuts down the write side and reads to EOF. A reset
    counts as the end: the daemon may drop a connection it reads no further."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)
