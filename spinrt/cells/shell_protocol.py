"""The process protocol of a shell cell, local or over SSH: its output
decoded incrementally (UTF-8, invalid bytes as U+FFFD) and coalesced into
``stream`` events of up to ``chunk_size`` characters, flushed at least every
``flush_delay``; what ``output_variable`` captures; and the escalation of an
interrupt (SIGINT, SIGTERM, SIGKILL to the whole process group)."""

from __future__ import annotations

import codecs
import contextlib
import errno
import fcntl
import os
import signal
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.main import CONNECTION_DONE, CONNECTION_LOST
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

from .base import CellContext, Outcome

CAPTURE_LIMIT = 16 * 1024 * 1024  # characters kept per stream for output_variable

# Interrupt escalation: (signal, seconds to wait before the next step).
ESCALATION = ((signal.SIGINT, 0.5), (signal.SIGTERM, 0.5), (signal.SIGKILL, 1.0))


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
