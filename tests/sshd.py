"""A real OpenSSH sshd for tests: 127.0.0.1, a free port, its own host key and
authorized_keys in a temp dir. Needs root (sshd's privilege separation) and
/usr/sbin/sshd (Debian: ``apt-get install openssh-server``).

Where it cannot run, ``unavailable()`` gives the reason: tests skip with it,
except under CI (``CI`` set in the environment), where they fail.
"""

from __future__ import annotations

import functools
import os
import pwd
import re
import shutil
import socket
import tempfile
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from twisted.conch.ssh.keys import Key
from twisted.internet import defer, reactor
from twisted.internet.protocol import ProcessProtocol

from .support import eventually

from . import needs

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def unavailable() -> str | None:
    """Why no test sshd can run here (None: it can)."""
    if not os.path.exists(SSHD):
        return f"{SSHD} not found: apt-get install openssh-server"
    if os.geteuid() != 0:
        return "the test sshd needs root (privilege separation, logging in as any user)"
    return None


def require(testcase: Any) -> None:
    needs.require(testcase, unavailable(), "SSH tests")


@functools.lru_cache(maxsize=None)
def make_key(kind: str, passphrase: str | None = None) -> tuple[str, str]:
    """(private key text in OpenSSH format, public key line) for ed25519/ecdsa/rsa."""
    if kind == "ed25519":
        private: Any = ed25519.Ed25519PrivateKey.generate()
    elif kind == "ecdsa":
        private = ec.generate_private_key(ec.SECP256R1())
    elif kind == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise ValueError(kind)
    encryption: Any = (
        serialization.BestAvailableEncryption(passphrase.encode()) if passphrase else serialization.NoEncryption()
    )
    text = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, encryption)
    public = Key(private).public().toString("openssh").decode() + f" spin-test-{kind}"
    return text.decode(), public


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Output(ProcessProtocol):
    def __init__(self, server: "TestSSHD") -> None:
        self.server = server

    def errReceived(self, data: bytes) -> None:
        self.server.log += data

    outReceived = errReceived

    def processEnded(self, reason: Any) -> None:
        self.server.ended.callback(None)


class TestSSHD:
    """``sshd -D -e -f <config>``; ``log`` holds its stderr."""

    def __init__(self, directory: str | None = None, port: int | None = None) -> None:
        self.dir = directory or tempfile.mkdtemp(prefix="sshd-", dir=os.path.abspath("."))
        self.port = port or free_port()
        self.user = pwd.getpwuid(os.getuid()).pw_name
        self.authorized_keys = os.path.join(self.dir, "authorized_keys")
        self.host_key_path = os.path.join(self.dir, "ssh_host_ed25519_key")
        self.log = bytearray()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.process: Any = None
        self.loglevel = os.environ.get("SPIN_TEST_SSHD_LOGLEVEL", "VERBOSE")
        if not os.path.exists(self.host_key_path):
            self.new_host_key()
        open(self.authorized_keys, "a").close()

    def new_host_key(self) -> Key:
        private = ed25519.Ed25519PrivateKey.generate()
        data = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
        fd = os.open(self.host_key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        self.host_key = Key(private).public()
        return self.host_key

    def authorize(self, public_line: str) -> None:
        with open(self.authorized_keys, "a") as f:
            f.write(public_line + "\n")

    def _config(self) -> str:
        path = os.path.join(self.dir, "sshd_config")
        with open(path, "w") as f:
            f.write(f"""\
Port {self.port}
ListenAddress 127.0.0.1
HostKey {self.host_key_path}
PidFile {self.dir}/sshd.pid
AuthorizedKeysFile {self.authorized_keys}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
PermitRootLogin yes
AllowUsers {self.user}
LogLevel {self.loglevel}
MaxStartups 100
MaxSessions 20
PrintMotd no
# bash sources ~/.bashrc for commands sshd starts only in a top-level shell
# (SHLVL unset); a machine's own dotfiles (one here runs `pyenv init`, which
# hangs) must not decide whether the tests' commands run.
SetEnv SHLVL=1
""")
        return path

    async def start(self, testcase: Any) -> "TestSSHD":
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation's chroot
        config = self._config()
        self.ended = defer.Deferred()
        self.process = reactor.spawnProcess(
            _Output(self), SSHD, [SSHD, "-D", "-e", "-f", config], env={"PATH": os.environ.get("PATH", "")})
        testcase.addCleanup(self.stop)
        marker = f"Server listening on 127.0.0.1 port {self.port}".encode()
        since = len(self.log)  # a restart: the earlier run's lines do not count

        def listening() -> bool:
            if self.ended.called:
                raise AssertionError(f"sshd exited: {self.log.decode(errors='replace')}")
            return marker in self.log[since:]

        await eventually(listening, timeout=10)
        return self

    def stop(self) -> defer.Deferred[None]:
        if self.process is not None and not self.ended.called:
            for pid in self.children():
                _kill(pid)
            self.process.signalProcess("KILL")
        return self.ended

    def accepted(self) -> int:
        """Connections that authenticated so far."""
        return len(re.findall(rb"Accepted publickey for ", bytes(self.log)))

    def children(self) -> list[int]:
        """sshd processes serving connections (children of the listener)."""
        if self.process is None or self.process.pid is None:
            return []
        return [pid for pid in _pids() if _ppid(pid) == self.process.pid]

    def kill_connections(self) -> int:
        killed = self.children()
        for pid in killed:
            _kill(pid)
        return len(killed)


def _pids() -> list[int]:
    return [int(e) for e in os.listdir("/proc") if e.isdigit()]


def _ppid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2:].split()[1])


def _kill(pid: int) -> None:
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass


def processes_with(text: str) -> list[int]:
    """Live processes whose command line contains ``text``."""
    found = []
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state not in ("Z", "X") and pid != os.getpid():
            found.append(pid)
    return found
