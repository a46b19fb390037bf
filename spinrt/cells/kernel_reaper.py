"""Kernels a killed runtime left behind: records written at start, reaped at the next.

PR_SET_PDEATHSIG ends a kernel the moment its runtime dies, even by
``kill -9``, but not the processes its cells started. Each kernel therefore
leaves ``<id>.record`` (its process group, a random tag in its environment,
and the runtime's pid and start time). The next runtime kills what is left
of every group whose runtime is gone, making sure with the tag that a
recycled process-group id is never mistaken for ours.

Runs once, before the reactor starts: the few blocking reads are harmless.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile

from twisted.logger import Logger

_log = Logger()

MAX_SOCKET_PATH = 100  # sun_path is 108 bytes; ipc names add "-N"


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: tells a process from a later one with its pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2:].split()[19]


def record(path: str, pgid: int, tag: str) -> None:
    data = {"pgid": pgid, "tag": tag, "runtime_pid": os.getpid(), "runtime_start": _start_time(os.getpid())}
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)


def processes() -> list[tuple[int, int, bool]]:
    """(pid, pgid, is_zombie) of every process we can see."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out.append((int(entry), int(fields[2]), fields[0] in ("Z", "X")))
    return out


def _has_tag(pid: int, tag: str) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return f"SPIN_KERNEL_TAG={tag}".encode() in f.read().split(b"\0")
    except OSError:
        return False


def reap(directory: str) -> int:
    """Kill leftovers of kernels whose runtime is gone; returns how many groups."""
    try:
        names = os.listdir(directory)
    except OSError:
        return 0
    stale: list[dict[str, object]] = []
    for name in names:
        if not name.endswith(".record"):
            continue
        try:
            with open(os.path.join(directory, name)) as f:
                data = json.load(f)
        except (OSError, ValueError):
            data = None
        if isinstance(data, dict):
            pid = data.get("runtime_pid")
            if isinstance(pid, int) and _start_time(pid) == data.get("runtime_start"):
                continue  # that runtime still runs (it shares this SPIN_HOME)
            stale.append(data)
        _remove_kernel_files(directory, name[: -len(".record")])
    if not stale or not os.path.isdir("/proc"):
        return 0
    table = processes()
    killed = 0
    for data in stale:
        pgid, tag = data.get("pgid"), data.get("tag")
        if not isinstance(pgid, int) or not isinstance(tag, str):
            continue
        members = [pid for pid, group, zombie in table if group == pgid and not zombie]
        tagged = [pid for pid in members if _has_tag(pid, tag)]
        leader_is_stranger = pgid in members and pgid not in tagged
        # A group whose leader is someone else's process is a recycled id.
        if not members or leader_is_stranger or not tagged:
            continue
        try:
            os.killpg(pgid, signal.SIGKILL)
            killed += 1
            _log.info("killed the processes a previous runtime's kernel left (group {pgid})", pgid=pgid)
        except (ProcessLookupError, PermissionError):
            pass
    return killed


def _remove_kernel_files(directory: str, kid: str) -> None:
    for name in os.listdir(directory):
        if name.startswith(kid + ".") or name.startswith(kid + "-"):
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass


def socket_directory(directory: str) -> str:
    """Where ipc sockets go: ``directory`` unless its path is too long for one."""
    if len(os.path.join(directory, "x" * 12 + "-ipc-5")) <= MAX_SOCKET_PATH:
        return directory
    return tempfile.mkdtemp(prefix="spin-kernels-")  # 0700
