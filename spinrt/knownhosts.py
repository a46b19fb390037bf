"""The runtime's own ``known_hosts`` (SPIN_HOME/var/known_hosts).

Trust on first use: an unknown host's key is recorded and the run says so;
a host whose key differs from the recorded one is refused. In strict mode
unknown hosts are refused too. The file uses OpenSSH's format, so
``ssh-keygen -R '[host]:port' -f SPIN_HOME/var/known_hosts`` resets an entry
and ``ssh-keyscan`` output can be appended to it.

We match entries ourselves because Conch's KnownHostsFile compares only the
bare host name and so never matches the ``[host]:port`` entries OpenSSH
writes for ports other than 22.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hashlib
import hmac
import os
from typing import Iterator

import attrs
from twisted.conch.ssh.keys import BadKeyError, Key
from twisted.logger import Logger

from .sshkeys import describe_key

_log = Logger()


def host_token(host: str, port: int) -> str:
    """How OpenSSH names a host in known_hosts: ``host``, or ``[host]:port``."""
    host = host.lower()
    return host if port == 22 else f"[{host}]:{port}"


class HostKeyError(Exception):
    """A host key we must not accept; ``code`` is the run's error code."""

    code = "ssh_host_key_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class HostKeyMismatch(HostKeyError):
    code = "ssh_host_key_mismatch"


class UnknownHost(HostKeyError):
    code = "ssh_unknown_host"


@attrs.frozen
class _Entry:
    patterns: tuple[str, ...]
    key_type: bytes
    key: Key | None  # None: a line we could not parse (kept, never matched)

    def matches(self, token: str) -> bool:
        matched = False
        for pattern in self.patterns:
            negated = pattern.startswith("!")
            if negated:
                pattern = pattern[1:]
            if _pattern_matches(pattern, token):
                if negated:
                    return False
                matched = True
        return matched


def _pattern_matches(pattern: str, token: str) -> bool:
    if pattern.startswith("|1|"):  # HashKnownHosts: |1|base64(salt)|base64(hmac-sha1)
        try:
            _, _, salt, digest = pattern.split("|", 3)
            mac = hmac.new(base64.b64decode(salt), token.encode("utf-8"), hashlib.sha1).digest()
            return hmac.compare_digest(mac, base64.b64decode(digest))
        except (ValueError, binascii.Error):
            return False
    if any(c in pattern for c in "*?"):
        return fnmatch.fnmatchcase(token, pattern.lower())
    return pattern.lower() == token


class KnownHosts:
    """Checks host keys against a known_hosts file, re-reading it every time
    (it is small, and a user may edit it while the runtime runs)."""

    def __init__(self, path: str, strict: bool = False) -> None:
        self.path = path
        self.strict = strict

    def _entries(self) -> Iterator[_Entry]:
        try:
            with open(self.path, "rb") as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return
        for raw in lines:
            line = raw.strip()
            if not line or line.startswith(b"#") or line.startswith(b"@"):
                continue  # markers (@cert-authority, @revoked) are not supported
            parts = line.split()
            if len(parts) < 3:
                continue
            try:
                key: Key | None = Key.fromString(base64.b64decode(parts[2]))
            except (BadKeyError, ValueError, binascii.Error):
                key = None
            patterns = tuple(p for p in parts[0].decode("utf-8", "replace").split(",") if p)
            yield _Entry(patterns, parts[1], key)

    def check(self, host: str, port: int, key: Key) -> str | None:
        """Accept ``key`` for host:port, or raise HostKeyError.

        Returns a notice for the run's output when the key was just recorded."""
        token = host_token(host, port)
        known = [e for e in self._entries() if e.matches(token)]
        if any(e.key is not None and e.key == key for e in known):
            return None
        if known:
            recorded = "; ".join(
                describe_key(e.key) if e.key is not None else e.key_type.decode("ascii", "replace")
                for e in known
            )
            raise HostKeyMismatch(
                f"the host key of {token} has CHANGED: known_hosts has {recorded}, but the server "
                f"presented {describe_key(key)}. This may be an attack, or the host was reinstalled. "
                f"If the change is expected, remove the old entry with "
                f"ssh-keygen -R '{token}' -f {self.path} and run the cell again."
            )
        if self.strict:
            raise UnknownHost(
                f"{token} is not in {self.path} and strict host key checking is on "
                f"(SPIN_SSH_STRICT_HOST_KEYS). Its key is {describe_key(key)}. To trust it, append "
                f"its key after checking the fingerprint: ssh-keyscan -p {port} {host} >> {self.path}"
            )
        self._record(token, key)
        _log.info("recorded the host key of {host}: {key}", host=token, key=describe_key(key))
        return (
            f"spin: first connection to {token}: recorded its host key {describe_key(key)} "
            f"in {self.path}\n"
        )

    def _record(self, token: str, key: Key) -> None:
        line = f"{token} {key.toString('openssh').decode('ascii')}\n".encode("ascii")
        directory = os.path.dirname(self.path)
        if directory:
            os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a hand-edited file may lack its last newline
            # One write in append mode: two first connections cannot interleave.
            os.write(fd, line)
        finally:
            os.close(fd)
