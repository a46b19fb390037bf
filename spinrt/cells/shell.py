"""Shell cells on the runtime itself: ``bash -c SOURCE`` in its own session.

Each cell runs in its own session (``posix_spawn`` with ``POSIX_SPAWN_SETSID``,
see :mod:`.spawn`; else under ``setsid``) so that its process id is also its process
group id: cancelling kills the whole tree (grandchildren too) and never the
daemon. Its output and interrupts: :mod:`.shell_protocol`.
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any, Mapping

from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from ..protocol import Cell
from . import spawn
from .base import CellContext, ICellProcessor, Outcome, RuntimeServices
from .shell_protocol import ShellProtocol


class ShellOptionError(ValueError):
    pass


def check_options(options: Any) -> tuple[str, str | None, dict[str, str]]:
    """(shell, cwd, env) from a cell's options, or ShellOptionError."""
    shell = options.get("shell", "bash")
    if not isinstance(shell, str) or not shell:
        raise ShellOptionError("options.shell must be a non-empty string")
    cwd = options.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise ShellOptionError("options.cwd must be a string")
    env = options.get("env") or {}
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and "=" not in k and "\0" not in k + v
        for k, v in env.items()
    ):
        raise ShellOptionError("options.env must be an object of string values")
    return shell, cwd, env


def launcher() -> tuple[list[str], bool]:
    """The argv prefix that puts a cell in its own session, and whether it
    also takes the working directory as ``-C DIR``.

    With ``env -C`` the runtime spawns from its own directory, which lets
    Twisted use posix_spawn instead of forking the whole daemon: a cheaper
    start for every cell."""
    setsid = shutil.which("setsid")
    env = shutil.which("env")
    if setsid and env:
        return [env, "-C"], True  # env -C DIR setsid SHELL -c SOURCE
    # Without coreutils/util-linux: a tiny Python trampoline does both.
    return [sys.executable, "-c", "import os,sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])"], False


@implementer(ICellProcessor)
class ShellProcessor:
    def __init__(self, services: RuntimeServices) -> None:
        self.services = services
        self._prefix, self._chdir_in_argv = launcher()
        self._setsid = shutil.which("setsid") or "setsid"
        self._running: dict[str, set[ShellProtocol]] = {}
        self._remote: Any = None  # spinrt.cells.ssh.RemoteShell, built on first use
        self._found: dict[tuple[str, str], str] = {}  # (shell, PATH) -> its path, see _find
        self._devnull: int | None = None  # every local cell's stdin, see _stdin
        self._encoded: tuple[Mapping[str, str], spawn.EncodedEnvironment] | None = None  # see _environment

    def run(self, cell: Cell, ctx: CellContext) -> Deferred[Outcome]:
        target = cell.options.get("target", "local")
        if not isinstance(target, str) or not target:
            return succeed(Outcome.failed("bad_option", "OptionError",
                "options.target must be 'local', 'host' or the name of an SSH connection"))
        if target != "local":
            if self._remote is None:
                from .ssh import RemoteShell

                self._remote = RemoteShell(self.services)
            return self._remote.run(cell, ctx, target)
        try:
            shell, cwd, env = check_options(cell.options)
        except ShellOptionError as e:
            return succeed((Outcome.failed("bad_option", "OptionError", str(e))))
        executable = self._find(shell)
        if executable is None:
            return succeed((Outcome.failed(
                "shell_not_found", "ShellNotFound", f"shell {shell!r} was not found on the runtime's PATH")))
        workdir = ctx.workdir
        if cwd:
            workdir = os.path.join(self.services.session_dir(ctx.session_id), os.path.expanduser(cwd))
            if not os.path.isdir(workdir):
                return succeed((Outcome.failed(
                    "bad_cwd", "NotADirectoryError", f"working directory {cwd!r} does not exist")))
        protocol = ShellProtocol(ctx, capture=cell.output_variable is not None)
        fds = {0: self._stdin(), 1: "r", 2: "r"}
        if spawn.available():
            # One exec: the session and the directory are set by posix_spawn.
            argv = [executable, "-c", cell.source]
            entries = self._environment().with_extra(env)
            try:
                try:
                    spawn.spawn_process(self.services.reactor, protocol, executable, argv, entries, workdir, fds)
                except FileNotFoundError:
                    if cwd or os.path.isdir(workdir):
                        raise
                    # The session's directory is gone (a cell removed it): made again, as for a new session.
                    workdir = self.services.session_dir(ctx.session_id)
                    spawn.spawn_process(self.services.reactor, protocol, executable, argv, entries, workdir, fds)
            except OSError as e:
                return succeed((Outcome.failed(
                    "spawn_failed", type(e).__name__, f"could not start {shell}: {e.strerror or e}")))
            except spawn.Unsupported:
                pass  # the launcher below
            else:
                return self._started(ctx, protocol)
        child_env = self.services.child_environment(env)
        if not cwd:
            workdir = self.services.session_dir(ctx.session_id)  # made again if a cell removed it
        if self._chdir_in_argv:
            argv = self._prefix + [workdir, self._setsid, executable, "-c", cell.source]
            path = None
        else:
            argv = self._prefix + [executable, "-c", cell.source]
            path = workdir
        try:
            self.services.reactor.spawnProcess(
                protocol,
                argv[0],
                argv,
                env=child_env,
                path=path,
                childFDs=fds,
            )
        except OSError as e:
            return succeed((Outcome.failed(
                "spawn_failed", type(e).__name__, f"could not start {shell}: {e.strerror or e}")))
        return self._started(ctx, protocol)

    def _environment(self) -> spawn.EncodedEnvironment:
        """The runtime's environment for children (the token left out),
        encoded once: encoding its ~50-100 variables at every spawn cost
        more than the rest of the spawn's Python."""
        environ = self.services.environ
        if self._encoded is None or self._encoded[0] is not environ:
            self._encoded = (environ, spawn.EncodedEnvironment(self.services.child_environment()))
        return self._encoded[1]

    def _stdin(self) -> int:
        """A descriptor of /dev/null, opened once, for the child's stdin: no
        stdin in v1, so reads see EOF at once, as they did from a pipe closed
        at the start, without a pipe to make, watch and close for every run."""
        if self._devnull is None:
            self._devnull = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        return self._devnull

    def _find(self, shell: str) -> str | None:
        """``shutil.which(shell)`` on the runtime's PATH, remembered: a search
        stats every PATH directory for each run, a remembered path is checked
        with one access(2)."""
        path = os.environ.get("PATH", os.defpath)
        known = self._found.get((shell, path))
        if known is not None and os.access(known, os.X_OK):
            return known
        found = shutil.which(shell, path=path)
        if found is not None and len(self._found) < 64:
            self._found[(shell, path)] = found
        return found

    def _started(self, ctx: CellContext, protocol: "ShellProtocol") -> Deferred[Outcome]:
        running = self._running.setdefault(ctx.session_id, set())
        running.add(protocol)

        def finished(outcome: Outcome) -> Outcome:
            running.discard(protocol)
            if not running:
                self._running.pop(ctx.session_id, None)
            return outcome

        return protocol.done.addCallback(finished)

    def close_session(self, session_id: str) -> None:
        if self._remote is not None:
            self._remote.close_session(session_id)
        # The session interrupts its running run first; this only makes sure.
        for protocol in list(self._running.get(session_id, ())):
            protocol.kill_now()

    def stop(self) -> None:
        if self._remote is not None:
            self._remote.stop()
        for protocols in list(self._running.values()):
            for protocol in list(protocols):
                protocol.kill_now()
        if self._devnull is not None:
            os.close(self._devnull)  # the children have their own copies
            self._devnull = None

