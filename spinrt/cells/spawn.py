"""Start a shell cell's process with one exec: glibc's ``posix_spawn`` with
``POSIX_SPAWN_SETSID`` and a ``chdir`` file action, wrapped in Twisted's
process transport.

Before this, each cell was ``env -C DIR setsid SHELL -c SOURCE``: three
execs, of which two only set the working directory and the session. Python's
``os.posix_spawn`` has a ``setsid`` flag but no ``chdir`` action (3.11), so
the call goes through ctypes: ``posix_spawn_file_actions_addchdir_np``
(glibc 2.29), ``posix_spawn_file_actions_addclosefrom_np`` (glibc 2.34) and
``POSIX_SPAWN_SETSID`` (glibc 2.26). Where any of them is missing,
:func:`available` is False and the shell processor keeps its launcher.

The child gets: its own session (its pid is its process group id, so a
cancel's ``killpg`` reaches the whole tree and never the daemon), the working
directory, the pipes on fds 0-2 and no other descriptor, and the default
disposition of every signal (so none the daemon ignores, SIGPIPE above all,
stays ignored), as Twisted's own ``posix_spawnp`` path gives.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from typing import Any, Mapping, Sequence

from twisted.internet.process import Process

POSIX_SPAWN_SETSIGDEF = 0x04  # glibc <spawn.h>
POSIX_SPAWN_SETSID = 0x80

# Opaque glibc structures, allocated larger than they are (80, 336 and 128
# bytes on x86-64 and aarch64).
_FILE_ACTIONS_SIZE = 256
_ATTR_SIZE = 1024
_SIGSET_SIZE = 256


class Unsupported(Exception):
    """This spawn cannot be done here; start the process the other way."""


def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    for name in ("posix_spawn", "posix_spawn_file_actions_init", "posix_spawn_file_actions_destroy",
                 "posix_spawn_file_actions_adddup2", "posix_spawn_file_actions_addchdir_np",
                 "posix_spawn_file_actions_addclosefrom_np", "posix_spawnattr_init",
                 "posix_spawnattr_destroy", "posix_spawnattr_setflags", "posix_spawnattr_setsigdefault",
                 "sigemptyset", "sigaddset"):
        if not hasattr(libc, name):
            return None
    libc.posix_spawnattr_setflags.argtypes = [ctypes.c_void_p, ctypes.c_short]
    return libc


_LIBC = _libc()
_FS_ENCODING = sys.getfilesystemencoding()
_FS_ERRORS = sys.getfilesystemencodeerrors()


def _default_signals() -> Any:
    """The sigset of every signal but SIGKILL and SIGSTOP, built once: the
    child gets the default disposition of each, which undoes exactly what
    matters, the ones the daemon ignores (SIGPIPE above all; a caught signal
    is reset by exec anyway). Asking ``signal.getsignal`` for each of the 64
    signals at every spawn cost more than the rest of the spawn's Python."""
    if _LIBC is None:
        return None
    sigset = ctypes.create_string_buffer(_SIGSET_SIZE)
    _LIBC.sigemptyset(sigset)
    for signum in signal.valid_signals():
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            _LIBC.sigaddset(sigset, signum)  # glibc refuses its own internal ones: fine
    return sigset


_DEFAULT_SIGNALS = _default_signals()


def _spawn_attributes() -> Any:
    """The one ``posix_spawnattr_t`` of every spawn, built once (posix_spawn
    only reads it): a new session and the default disposition of every
    signal."""
    if _LIBC is None:
        return None
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    _check(_LIBC.posix_spawnattr_init(attr), "posix_spawnattr_init")
    _check(_LIBC.posix_spawnattr_setsigdefault(attr, _DEFAULT_SIGNALS), "setsigdefault")
    _check(_LIBC.posix_spawnattr_setflags(attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF), "setflags")
    return attr


def _encode(value: str | bytes) -> bytes:
    # os.fsencode without its per-call lookups (it ran for every variable of
    # every cell's environment).
    return value if isinstance(value, bytes) else value.encode(_FS_ENCODING, _FS_ERRORS)


def _entry(name: str | bytes, value: str | bytes) -> bytes:
    return _encode(name) + b"=" + _encode(value)


class EncodedEnvironment:
    """A base environment's ``NAME=value`` entries for ``execve``, encoded
    once: the runtime's own environment for its children, which is fixed
    for the runtime's life (RuntimeConfig copies it at the start) and held
    in memory anyway. :meth:`with_extra` adds a cell's own variables,
    encoded at every spawn and never kept: they may be large, or secrets
    filled in from templates."""

    def __init__(self, base: Mapping[str | bytes, str | bytes]) -> None:
        self._entries = {name: _entry(name, value) for name, value in base.items()}

    def with_extra(self, extra: Mapping[str, str]) -> list[bytes]:
        """The entries of the base with ``extra`` added (a name in both: extra's value)."""
        if not extra:
            return list(self._entries.values())
        return ([entry for name, entry in self._entries.items() if name not in extra]
                + [_entry(name, value) for name, value in extra.items()])


def available() -> bool:
    return _ATTR is not None  # None without glibc's functions, or when building it failed


def _check(result: int, what: str) -> None:
    if result != 0:
        raise OSError(result, f"{what}: {os.strerror(result)}")


try:
    _ATTR = _spawn_attributes()
except OSError:
    _ATTR = None


def spawn(executable: str, argv: Sequence[str | bytes],
          env: Mapping[str | bytes, str | bytes] | list[bytes], cwd: str, fdmap: Mapping[int, int]) -> int:
    """Start ``executable`` (an absolute path) in a new session in ``cwd``,
    with the child's fd ``k`` a copy of the parent's ``fdmap[k]`` and no other
    descriptor. ``env``: a mapping, or its ``NAME=value`` entries already
    encoded (EncodedEnvironment). Returns the pid; OSError if it could not
    start (``cwd`` missing, not executable...), Unsupported if ``fdmap``
    needs more than plain dup2 (a parent fd below 3)."""
    libc = _LIBC
    if _ATTR is None:
        raise Unsupported("posix_spawn with chdir and setsid is not available")
    if any(parent < 3 and parent != child for child, parent in fdmap.items()):
        raise Unsupported("a parent descriptor below 3 would be overwritten")
    actions = ctypes.create_string_buffer(_FILE_ACTIONS_SIZE)
    _check(libc.posix_spawn_file_actions_init(actions), "posix_spawn_file_actions_init")
    try:
        for child, parent in sorted(fdmap.items()):
            # dup2 onto itself clears close-on-exec (glibc 2.29 and later).
            _check(libc.posix_spawn_file_actions_adddup2(actions, parent, child), "adddup2")
        _check(libc.posix_spawn_file_actions_addclosefrom_np(actions, max(fdmap, default=-1) + 1),
               "addclosefrom_np")
        _check(libc.posix_spawn_file_actions_addchdir_np(actions, _encode(cwd)), "addchdir_np")
        args = [_encode(a) for a in argv]
        c_argv = (ctypes.c_char_p * (len(args) + 1))(*args, None)
        entries = env if isinstance(env, list) else [_entry(k, v) for k, v in env.items()]
        c_env = (ctypes.c_char_p * (len(entries) + 1))(*entries, None)
        pid = ctypes.c_int(0)
        result = libc.posix_spawn(ctypes.byref(pid), _encode(executable), actions, _ATTR, c_argv, c_env)
        if result != 0:
            where = cwd if result == 2 and not os.path.isdir(cwd) else executable
            raise OSError(result, os.strerror(result), where)
        return pid.value
    finally:
        libc.posix_spawn_file_actions_destroy(actions)


class SessionProcess(Process):
    """Twisted's process transport (pipes, reaping, signals) around a child
    started by :func:`spawn`: ``path`` is the working directory."""

    def _trySpawnInsteadOfFork(self, path: Any, uid: Any, gid: Any, executable: Any, args: Any,
                               environment: Any, kwargs: Any) -> bool:
        self.pid = spawn(executable, args, environment, path, kwargs["fdmap"])
        self.status = -1
        return True


def spawn_process(reactor: Any, protocol: Any, executable: str, argv: Sequence[str],
                  env: Mapping[str, str] | list[bytes], cwd: str, childFDs: dict[int, Any]) -> SessionProcess:
    """As ``reactor.spawnProcess`` (same protocol callbacks), in a new
    session, in ``cwd``, with one exec; ``env`` as :func:`spawn` takes it."""
    return SessionProcess(reactor, executable, list(argv), env if isinstance(env, list) else dict(env), cwd,
                          protocol, None, None, childFDs)
