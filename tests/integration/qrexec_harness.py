"""A test world of qubes on one host: per qube its own vchan socket directory,
domain number, service directory, qrexec-agent and qrexec-daemon, plus one
qrexec-policy-daemon. Also raw qrexec message helpers for hostile-peer tests."""

import os
import shutil
import socket
import struct
import subprocess
import tempfile
import time

MSG = {
    "DATA_STDIN": 0x190, "DATA_STDOUT": 0x191, "DATA_STDERR": 0x192, "DATA_EXIT_CODE": 0x193,
    "EXEC_CMDLINE": 0x200, "JUST_EXEC": 0x201, "SERVICE_CONNECT": 0x202, "SERVICE_REFUSED": 0x203,
    "TRIGGER_SERVICE": 0x210, "CONNECTION_TERMINATED": 0x211, "TRIGGER_SERVICE3": 0x212,
    "TRIGGER_SERVICE4": 0x213, "HELLO": 0x300,
}


def msg(type_, payload=b""):
    return struct.pack("<II", MSG.get(type_, type_) if isinstance(type_, str) else type_, len(payload)) + payload


def hello(version=4):
    return msg("HELLO", struct.pack("<I", version))


def fixed(s, n):
    b = s.encode() if isinstance(s, str) else s
    return b + b"\0" * (n - len(b))


def trigger4(source, target, ident, service):
    return msg("TRIGGER_SERVICE4", fixed(source, 64) + fixed(target, 64) + fixed(ident, 32) + service.encode() + b"\0")


def recv_exact(sock, n, timeout=10):
    sock.settimeout(timeout)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("connection closed after %d of %d bytes" % (len(data), n))
        data += chunk
    return data


def recv_msg(sock, timeout=10):
    t, n = struct.unpack("<II", recv_exact(sock, 8, timeout))
    return t, recv_exact(sock, n, timeout) if n else b""


class Qube:
    def __init__(self, world, name, domid):
        self.world, self.name, self.domid = world, name, domid
        self.dir = os.path.join(world.root, name)
        self.vchan_dir = os.path.join(self.dir, "vchan")
        self.rpc_dir = os.path.join(self.dir, "rpc")
        self.rpc_config_dir = os.path.join(self.dir, "rpc-config")
        self.agent_socket = os.path.join(self.dir, "agent.sock")
        for d in (self.vchan_dir, self.rpc_dir, self.rpc_config_dir):
            os.makedirs(d, exist_ok=True)
        self.agent = None
        self.daemon = None
        self.daemon_env = {}  # extra environment of the daemon (e.g. dom0's service path)
        self.uuid = "00000000-0000-0000-0000-%012d" % domid

    def env(self):
        env = dict(os.environ)
        env.update(VCHAN_SOCKET_DIR=self.vchan_dir, VCHAN_DOMAIN=str(self.domid),
                   QREXEC_SERVICE_PATH=self.rpc_dir, QUBES_RPC_CONFIG_PATH=self.rpc_config_dir)
        return env

    def add_service(self, name, script, mode=0o755):
        path = os.path.join(self.rpc_dir, name)
        with open(path, "w") as f:
            f.write(script)
        os.chmod(path, mode)
        return path

    def start_agent(self, as_uid=None, extra_env=None):
        """Starts the agent; as_uid runs it unprivileged (its directories are given to that user)."""
        cmd = [self.world.bin("qrexec-agent"), "--agent-socket=" + self.agent_socket]
        if as_uid is not None:
            os.chmod(self.world.root, 0o755)
            for d in (self.dir, self.vchan_dir):
                os.chown(d, as_uid, as_uid)
            cmd = ["setpriv", "--reuid=%d" % as_uid, "--regid=%d" % as_uid, "--clear-groups"] + cmd
        self.agent = subprocess.Popen(cmd, env={**self.env(), **(extra_env or {})},
                                      stderr=self.world.log("agent-" + self.name))
        wait_for(lambda: os.path.exists(self.agent_socket))

    def start_daemon(self, wait=True, default_user=None, policy_socket=None, policy_program=None):
        self.daemon = subprocess.Popen(
            [self.world.bin("qrexec-daemon"), "--direct", "--socket-dir=" + self.world.socket_dir,
             "--policy-socket=" + (policy_socket or self.world.policy_socket),
             "--policy-program=" + (policy_program or self.world.bin("qrexec-policy-exec")),
             "--uuid=" + self.uuid, str(self.domid), self.name, default_user or self.world.user],
            env={**self.env(), **self.daemon_env}, stderr=self.world.log("daemon-" + self.name))
        if wait:
            wait_for(lambda: os.path.exists(os.path.join(self.world.socket_dir, "qrexec." + self.name)))

    def call(self, target, service, input_=b"", args=(), timeout=60, extra=()):
        """qrexec-client-vm from this qube; returns CompletedProcess."""
        cmd = [self.world.bin("qrexec-client-vm"), "--agent-socket=" + self.agent_socket, *extra,
               target, service, *args]
        return subprocess.run(cmd, input=input_, capture_output=True, timeout=timeout, env=self.env())

    def stop(self):
        for p in (self.daemon, self.agent):
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()


class World:
    def __init__(self, build_dir, policy_text, qubes):
        self.build_dir = os.path.abspath(build_dir)
        self.root = tempfile.mkdtemp(prefix="aerie-qrexec-")
        self.socket_dir = os.path.join(self.root, "qubes")
        self.policy_dir = os.path.join(self.root, "policy.d")
        self.policy_socket = os.path.join(self.root, "policy.sock")
        self.log_dir = os.path.join(self.root, "logs")
        for d in (self.socket_dir, self.policy_dir, self.log_dir):
            os.makedirs(d)
        import pwd
        self.user = pwd.getpwuid(os.geteuid()).pw_name
        with open(os.path.join(self.policy_dir, "50-test.policy"), "w") as f:
            f.write(policy_text)
        self.qubes = {name: Qube(self, name, domid) for name, domid in qubes}
        self.system_info = os.path.join(self.root, "system-info.json")
        self.write_system_info()
        self.policy_daemon = None
        self._logs = []

    def bin(self, name):
        return os.path.join(self.build_dir, "bin", name)

    def log(self, name):
        f = open(os.path.join(self.log_dir, name + ".log"), "wb")
        self._logs.append(f)
        return f

    def write_system_info(self, extra=None):
        import json
        domains = {"dom0": {"type": "AdminVM", "tags": [], "uuid": "00000000-0000-0000-0000-000000000000",
                            "power_state": "Running", "default_dispvm": None, "template_for_dispvms": False,
                            "icon": "adminvm-black", "label": "black"}}
        for name, q in self.qubes.items():
            domains[name] = {"type": "AppVM", "tags": [], "uuid": q.uuid,
                             "power_state": "Running", "default_dispvm": None, "template_for_dispvms": False,
                             "icon": "appvm-red", "label": "red"}
        domains.update(extra or {})
        with open(self.system_info, "w") as f:
            json.dump({"domains": domains}, f)

    def start(self, names=None):
        """Starts the policy daemon, then agent and daemon of the named qubes (all by default)."""
        self.policy_daemon = subprocess.Popen(
            [self.bin("qrexec-policy-daemon"), "--socket", self.policy_socket, "--path", self.policy_dir,
             "--system-info", self.system_info], stderr=self.log("policy-daemon"))
        wait_for(lambda: os.path.exists(self.policy_socket))
        names = list(self.qubes) if names is None else names
        for n in names:
            self.qubes[n].start_agent()
        for n in names:
            self.qubes[n].start_daemon()

    def stop(self):
        for q in self.qubes.values():
            q.stop()
        if self.policy_daemon and self.policy_daemon.poll() is None:
            self.policy_daemon.terminate()
            self.policy_daemon.wait(5)
        for f in self._logs:
            f.close()

    def logs(self):
        out = []
        for name in sorted(os.listdir(self.log_dir)):
            with open(os.path.join(self.log_dir, name), "rb") as f:
                out.append("--- %s\n%s" % (name, f.read().decode(errors="replace")[-3000:]))
        return "\n".join(out)

    def cleanup(self):
        shutil.rmtree(self.root, ignore_errors=True)


def wait_for(predicate, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise TimeoutError("condition not met in %ss" % timeout)


def unix_connect(path, timeout=10):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s
