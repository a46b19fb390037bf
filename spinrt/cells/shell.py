"""Shell cells on the runtime itself: ``bash -c SOURCE`` in its own session.

Each cell runs in its own session (``posix_spawn`` with ``POSIX_SPAWN_SETSID``,
see :mod:`.spawn`; else under ``setsid``) so that its process id is also its process
group id: cancelling kills the whole tree (grandchildren too) and never the
daemon. Output is decoded incrementally and coalesced into ``stream`` events
of up to ``chunk_size`` characters, flushed at least every ``flush_delay``.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import fcntl
import os
import shutil
import signal
import sys
from typing import Any, Mapping

from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ..protocol import Cell
from . import spawn
from .base import CellContext, ICellProcessor, Outcome, RuntimeServices

_log = Logger()

CAPTURE_LIMIT = 16 * 1024 * 1024  # characters kept per stream for output_variable

# Interrupt escalation: (signal, seconds to wait before the next step).
ESCALATION = ((signal.SIGINT, 0.5), (signal.SIGTERM, 0.5), (signal.SIGKILL, 1.0))


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


class _Capture:
    """The text kept for a CellResult, bounded."""

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = []
        self.size = 0
        self.limit = limit
        self.truncated = False

    def add(self, text: str) -> None:
        room = self.limit - self.size
        if room <= 0:
            self.truncated = self.truncated or bool(text)
            return
        if len(text) > room:
            text = text[:room]
            self.truncated = True
        self.parts.append(text)
        self.size += len(text)

    def text(self) -> str:
        return "".join(self.parts)


class ShellProtocol(ProcessProtocol):
    def __init__(
        self,
        ctx: CellContext,
        *,
        capture: bool,
        chunk_size: int = 256 * 1024,
        flush_delay: float = 0.005,
    ) -> None:
        self.ctx = ctx
        self.done: Deferred[Outcome] = Deferred()
        self.pid: int | None = None
        self._chunk_size = chunk_size
        self._flush_delay = flush_delay
        self._decoders: dict[str, Any] = {}  # made at a stream's first output
        self._captures = (
            {"stdout": _Capture(CAPTURE_LIMIT), "stderr": _Capture(CAPTURE_LIMIT)}
            if capture
            else None
        )
        self._buffer: list[str] = []
        self._buffered = 0
        self._buffer_name = "stdout"
        self._flush_call: Any = None
        self._kill_calls: list[Any] = []
        self._ended = False

    # -- process events --------------------------------------------------------

    def connectionMade(self) -> None:
        for fd in (1, 2):
            reader = self.transport.pipes.get(fd)
            if reader is not None:
                read_in_large_pieces(reader)
        self.pid = self.transport.pid
        self.ctx.started_process_group(self.pid)  # setsid: pid == pgid
        self.transport.closeStdin()  # no stdin in v1: reads see EOF at once (a no-op on /dev/null)
        self.ctx.add_producer(self.transport)
        self.ctx.on_interrupt(self._interrupt)

    def outReceived(self, data: bytes) -> None:
        self._feed("stdout", self._decoder("stdout").decode(data))

    def errReceived(self, data: bytes) -> None:
        self._feed("stderr", self._decoder("stderr").decode(data))

    def _decoder(self, name: str) -> Any:
        decoder = self._decoders.get(name)
        if decoder is None:
            decoder = self._decoders[name] = _UTF8_DECODER(errors="replace")
        return decoder

    def processEnded(self, reason: Failure) -> None:
        self._ended = True
        for call in self._kill_calls:
            if call.active():
                call.cancel()
        for name in ("stdout", "stderr"):
            decoder = self._decoders.get(name)
            if decoder is not None:  # a cut multi-byte sequence at the end: U+FFFD
                self._feed(name, decoder.decode(b"", final=True))
        self._flush()
        self.ctx.remove_producer(self.transport)
        self.done.callback(self._outcome(reason))

    def _outcome(self, reason: Failure) -> Outcome:
        if reason.check(ProcessDone):
            exit_code = 0
            error = None
        else:
            value = reason.value
            sig = getattr(value, "signal", None)
            if sig:
                exit_code = 128 + sig
                name = signal.Signals(sig).name
                error = ("killed", f"the shell was killed by {name}")
            else:
                exit_code = getattr(value, "exitCode", None)
                if exit_code is None:
                    exit_code = 1
                error = ("exit_status", f"the shell exited with status {exit_code}")
        value_ = None
        status = "ok" if exit_code == 0 else "error"
        if self._captures is not None:
            value_ = {
                "stdout": self._captures["stdout"].text(),
                "stderr": self._captures["stderr"].text(),
                "exit_code": exit_code,
                "status": status,
            }
            if self._captures["stdout"].truncated or self._captures["stderr"].truncated:
                value_["truncated"] = True
        if error is None:
            return Outcome(status="ok", exit_code=0, value=value_)
        return Outcome.failed(error[0], "ShellError", error[1], exit_code=exit_code, value=value_)

    # -- output coalescing -------------------------------------------------------

    def _feed(self, name: str, text: str) -> None:
        if not text:
            return
        if self._captures is not None:
            self._captures[name].add(text)
        if name != self._buffer_name and self._buffer:
            self._flush()  # keep stdout/stderr interleaving as produced
        self._buffer_name = name
        self._buffer.append(text)
        self._buffered += len(text)
        if self._buffered >= self._chunk_size:
            self._flush()
        elif self._flush_call is None:
            self._flush_call = self.ctx.reactor.callLater(self._flush_delay, self._flush)

    def _flush(self) -> None:
        if self._flush_call is not None:
            if self._flush_call.active():
                self._flush_call.cancel()
            self._flush_call = None
        if self._buffer:
            text = "".join(self._buffer)
            self._buffer = []
            self._buffered = 0
            self.ctx.stream(self._buffer_name, text)

    # -- interrupts ------------------------------------------------------------------

    def _interrupt(self, reason: str) -> None:
        self._escalate(0)

    def _escalate(self, step: int) -> None:
        if self._ended or self.pid is None:
            return
        if step >= len(ESCALATION):
            # Something outside the group still holds our pipes: stop waiting.
            self.transport.loseConnection()
            return
        sig, wait = ESCALATION[step]
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass
        self._kill_calls.append(
            self.ctx.reactor.callLater(wait, self._escalate, step + 1)
        )

    def kill_now(self) -> None:
        """Used at shutdown: the whole group, at once."""
        if not self._ended and self.pid is not None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


PIPE_SIZE = 1024 * 1024
F_SETPIPE_SZ = 1031  # Linux fcntl
_UTF8_DECODER = codecs.getincrementaldecoder("utf-8")


def read_in_large_pieces(reader: Any) -> None:
    """Read a fast child's output in pieces of up to 1 MiB instead of 8 KiB.

    Twisted's process reader reads 8 KiB at a time; at hundreds of MB/s the
    per-read overhead, not the copying, is what costs. A larger pipe buffer
    lets each wake-up take more. The buffer grows at the first output, so a
    child that prints nothing (most commands of a runbook print little) costs
    no system call for it."""
    grown = False

    def doRead() -> Any:
        nonlocal grown
        try:
            data = os.read(reader.fd, PIPE_SIZE)
        except OSError as e:
            if e.errno in (errno.EAGAIN, errno.EINTR):
                return None
            return CONNECTION_LOST
        if not data:
            return CONNECTION_DONE
        if not grown:
            grown = True
            # Where /proc/sys/fs/pipe-max-size is lower, the default buffer stays.
            with contextlib.suppress(OSError):
                fcntl.fcntl(reader.fd, F_SETPIPE_SZ, PIPE_SIZE)
        reader.dataReceived(data)
        return None

    reader.doRead = doRead


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

