"""Shell cells on another machine: ``options.target`` = "host" or a connection name.

Each session keeps one SSH connection per target and runs every cell on a
new channel of it; a connection that dropped is opened again on the next
cell. Output goes through the local shell cell's ShellProtocol, so streams
are coalesced the same way and the CellResult has the same shape.

Interrupts send ``signal`` requests (INT, TERM, KILL) and then close the
channel. sshd ignores signal requests in sessions without privilege
separation -- every root login -- so the command also runs under a small
POSIX sh guard (WATCHDOG) that reads signal names from the channel's stdin
and signals the session's process group, and ends the group when stdin
closes (channel closed or connection lost): nothing is left running.
"""

from __future__ import annotations

import re
import shlex
import struct
from typing import Any

from twisted.conch.ssh import common
from twisted.conch.ssh.channel import SSHChannel
from twisted.conch.ssh.connection import EXTENDED_DATA_STDERR
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..protocol import Cell
from ..sshclient import SSHLink, open_connection
from ..sshconfig import SSHError, SSHSettings, Target, settings_of
from .base import CellContext, Outcome, RuntimeServices
from .shell import ShellOptionError, check_options
from .shell_protocol import ShellProtocol

_log = Logger()

# Interrupt escalation: (signal request, seconds before the next step); then the channel is closed.
ESCALATION = (("INT", 0.5), ("TERM", 0.5), ("KILL", 1.0))
CLOSE_GRACE = 2.0  # after our close request, give up on the server's answer
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SIGNALS = {"ABRT": 6, "ALRM": 14, "FPE": 8, "HUP": 1, "ILL": 4, "INT": 2, "KILL": 9,
            "PIPE": 13, "QUIT": 3, "SEGV": 11, "TERM": 15, "USR1": 10, "USR2": 12}


# sh -c WATCHDOG spin-cell SHELL SOURCE. A constant script: the values arrive
# as positional parameters, never as code. The guard keeps the channel's
# stdin on fd 3 and runs in the background with INT/TERM/HUP ignored; the
# command gets /dev/null as stdin (as local cells get EOF).
WATCHDOG = (
    "exec 3<&0 </dev/null; "
    "{ trap '' INT TERM HUP; "
    "while IFS= read -r s; do case $s in INT|TERM|KILL) kill -s \"$s\" 0;; esac; done; "
    "kill -s TERM 0; sleep 1; kill -s KILL 0; } <&3 >/dev/null 2>&1 & w=$!; "
    "exec 3<&-; \"$1\" -c \"$2\"; s=$?; kill -s KILL \"$w\" 2>/dev/null; exit \"$s\""
)


def remote_command(shell: str, cwd: str | None, env: dict[str, str], source: str) -> bytes:
    """The command line sshd hands to the login shell: every value quoted."""
    words: list[str] = []
    if cwd:
        if cwd == "~":
            words += ["cd", "&&"]
        elif cwd.startswith("~/"):  # the one expansion we do on purpose
            words += ["cd", "~/" + shlex.quote(cwd[2:]), "&&"]
        else:
            words += ["cd", shlex.quote(cwd), "&&"]
    words.append("exec")
    if env:
        words += ["env"] + [shlex.quote(f"{k}={v}") for k, v in env.items()]
    words += ["sh", "-c", shlex.quote(WATCHDOG), "spin-cell", shlex.quote(shell), shlex.quote(source)]
    return " ".join(words).encode("utf-8")


def connect_timeout_of(options: Any, default: float) -> float:
    value = options.get("connect_timeout_s")
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 600:
        raise ShellOptionError("options.connect_timeout_s must be a number of seconds (0-600)")
    return float(value)


class _Stale(Exception):
    """The connection died before the command started: worth one retry."""


class CommandChannel(SSHChannel):
    name = b"session"

    conn: SSHLink

    def __init__(self, command: bytes, output: ShellProtocol, conn: SSHLink) -> None:
        super().__init__(localWindow=2 * 1024 * 1024, conn=conn)
        self.command = command
        self.output = output
        self.started: Deferred[None] = Deferred()
        self.ended: Deferred[None] = Deferred()  # the channel closed; reason() says how
        self.exit_status: int | None = None
        self.exit_signal: str | None = None
        self.is_closed = False

    def channelOpen(self, specificData: bytes) -> None:
        d = self.conn.sendRequest(self, b"exec", common.NS(self.command), wantReply=True)
        d.addCallbacks(self._exec_ok, self._exec_failed)

    def openFailed(self, reason: Any) -> None:
        if getattr(self.conn, "lost", False):
            self._start_failed(_Stale())
        else:
            self._start_failed(SSHError("ssh_exec_failed", f"the server refused a session channel: {reason}"))
        self.is_closed = True
        if not self.ended.called:
            self.ended.callback(None)

    def _exec_ok(self, _: Any) -> None:
        if self.started.called:
            # Given up on (interrupt, start timeout) while the request was on its way.
            self.signal("KILL")
            self.close()
            return
        self.started.callback(None)  # stdin stays open: it carries WATCHDOG's signal names

    def _exec_failed(self, reason: Failure) -> None:
        if getattr(self.conn, "lost", False):
            self._start_failed(_Stale())
            return
        self._start_failed(SSHError("ssh_exec_failed", "the SSH server refused to run the command"))
        self.close()

    def _start_failed(self, error: Exception) -> None:
        if not self.started.called:
            self.started.errback(error)

    def dataReceived(self, data: bytes) -> None:
        self.output.outReceived(data)

    def extReceived(self, dataType: int, data: bytes) -> None:
        if dataType == EXTENDED_DATA_STDERR:
            self.output.errReceived(data)

    def request_exit_status(self, data: bytes) -> int:
        (self.exit_status,) = struct.unpack(">L", data[:4])
        return 1

    def request_exit_signal(self, data: bytes) -> int:
        self.exit_signal = common.getNS(data)[0].decode("ascii", "replace")
        return 1

    def signal(self, name: str) -> None:
        if not self.is_closed and not self.localClosed:
            self.conn.sendRequest(self, b"signal", common.NS(name.encode("ascii")))
            self.write(name.encode("ascii") + b"\n")  # for WATCHDOG

    def close(self) -> None:
        if not self.is_closed and not self.localClosed:
            self.conn.sendClose(self)

    def closed(self) -> None:
        self.is_closed = True
        if not self.ended.called:
            self.ended.callback(None)

    def reason(self) -> Failure | None:
        """What the shell protocol's processEnded gets; None: no exit status."""
        if self.exit_status is not None:
            if self.exit_status == 0:
                return Failure(ProcessDone(0))
            return Failure(ProcessTerminated(exitCode=self.exit_status))
        if self.exit_signal is not None:
            signum = _SIGNALS.get(self.exit_signal)
            if signum is not None:
                return Failure(ProcessTerminated(signal=signum))
            return Failure(ProcessTerminated(exitCode=255))
        return None


class LinkPool:
    """One connection per (session, target); replaced when its settings change."""

    def __init__(self, reactor: Any, settings: SSHSettings, connector: Any = open_connection) -> None:
        self.reactor = reactor
        self.settings = settings
        self.connector = connector
        self.links: dict[tuple[str, str], tuple[tuple[Any, ...], SSHLink]] = {}
        self.busy: dict[SSHLink, int] = {}
        settings.listeners.append(self.forget_target)

    async def get(self, session_id: str, target: Target, timeout: float) -> tuple[SSHLink, bool]:
        """(link, fresh): an authenticated connection for this session and target."""
        host = target.host or await self.settings.default_host()
        identity = target.identity(host)
        key = (session_id, target.name)
        known = self.links.get(key)
        if known is not None:
            if known[0] == identity and not known[1].lost:
                return known[1], False
            self._drop(key)
        link = await self.connector(
            self.reactor, host=host, port=target.port, username=target.username, key=target.key,
            known_hosts=self.settings.known_hosts, timeout=timeout)
        self.links[key] = (identity, link)
        link.on_lost.append(lambda: self._lost(key, link))
        _log.info("SSH connection for session {session} to {target} ({user}@{host}:{port})",
                  session=session_id, target=target.name, user=target.username, host=host, port=target.port)
        return link, True

    def _lost(self, key: tuple[str, str], link: SSHLink) -> None:
        known = self.links.get(key)
        if known is not None and known[1] is link:
            del self.links[key]

    def _drop(self, key: tuple[str, str]) -> None:
        known = self.links.pop(key, None)
        if known is not None and not self.busy.get(known[1]):
            known[1].close()

    def acquire(self, link: SSHLink) -> None:
        self.busy[link] = self.busy.get(link, 0) + 1

    def release(self, link: SSHLink) -> None:
        left = self.busy.pop(link, 1) - 1
        if left > 0:
            self.busy[link] = left
        elif not any(known[1] is link for known in self.links.values()):
            link.close()  # retired while a cell was using it

    def discard(self, link: SSHLink) -> None:
        """Stop handing out a connection (it is being aborted)."""
        for key in [k for k, known in self.links.items() if known[1] is link]:
            del self.links[key]

    def forget_target(self, name: str) -> None:
        for key in [k for k in self.links if k[1] == name]:
            self._drop(key)

    def close_session(self, session_id: str) -> None:
        for key in [k for k in self.links if k[0] == session_id]:
            known = self.links.pop(key)
            known[1].close()

    def close_all(self) -> None:
        for _, link in self.links.values():
            link.close()
        self.links.clear()


class RemoteShell:
    """Runs shell cells whose target is not "local" (used by ShellProcessor)."""

    def __init__(self, services: RuntimeServices, connector: Any = open_connection) -> None:
        self.services = services
        self.settings = settings_of(services)
        self.pool = LinkPool(services.reactor, self.settings, connector)

    def run(self, cell: Cell, ctx: CellContext, target_name: str) -> Deferred[Outcome]:
        return Deferred.fromCoroutine(self._run(cell, ctx, target_name))

    async def _run(self, cell: Cell, ctx: CellContext, target_name: str) -> Outcome:
        try:
            target = self.settings.target(target_name)
            shell, cwd, env = check_options(cell.options)
            timeout = connect_timeout_of(cell.options, self.settings.connect_timeout)
            bad = [k for k in env if not _ENV_NAME.match(k)]
            if bad:
                raise ShellOptionError(f"options.env names must be letters, digits and '_' on SSH targets: {bad[0][:64]!r}")
            if "\0" in cell.source:
                raise ShellOptionError("the source contains a NUL character")
        except SSHError as e:
            return Outcome.failed(e.code, "SSHError", e.message)
        except ShellOptionError as e:
            return Outcome.failed("bad_option", "OptionError", str(e))
        command = remote_command(shell, cwd, env, cell.source)
        return await _RemoteRun(self, ctx, target, timeout, command, cell.output_variable is not None).run()

    def close_session(self, session_id: str) -> None:
        self.pool.close_session(session_id)

    def stop(self) -> None:
        self.pool.close_all()


class _RemoteRun:
    """One cell on one target: connect (or reuse), run, stop it on interrupt."""

    def __init__(self, remote: RemoteShell, ctx: CellContext, target: Target, timeout: float,
                 command: bytes, capture: bool) -> None:
        self.remote = remote
        self.ctx = ctx
        self.target = target
        self.timeout = timeout
        self.command = command
        self.output = ShellProtocol(ctx, capture=capture)
        self.pending: Deferred[Any] | None = None
        self.channel: CommandChannel | None = None
        self.link: SSHLink | None = None
        self.calls: list[Any] = []

    def _failed(self, e: SSHError) -> Outcome:
        return Outcome.failed(e.code, "SSHError", e.message)

    async def run(self) -> Outcome:
        ctx = self.ctx
        ctx.on_interrupt(self._interrupt)
        fresh = True
        for attempt in range(2):
            if ctx.interrupted:
                return Outcome.failed("cancelled", "Cancelled", "interrupted before the command started")
            try:
                self.pending = Deferred.fromCoroutine(
                    self.remote.pool.get(ctx.session_id, self.target, self.timeout))
                link, fresh = await self.pending
                self.link = link
                for notice in link.notices:
                    ctx.stream("stderr", notice)
                link.notices.clear()
                channel = self.channel = CommandChannel(self.command, self.output, link)
                link.openChannel(channel)
                self.pending = channel.started
                timer = ctx.reactor.callLater(self.timeout, self._start_timed_out, channel, link, fresh)
                try:
                    await channel.started
                finally:
                    if timer.active():
                        timer.cancel()
            except _Stale:
                self.channel = None
                if fresh or attempt:
                    return self._failed(SSHError("ssh_connection_lost", "the SSH connection closed before the command started"))
                continue  # a reused connection had died: once more with a new one
            except SSHError as e:
                return self._failed(e)
            except Exception as e:  # cancelled by an interrupt
                if self.channel is not None:
                    self.channel.close()
                if ctx.interrupted:
                    return Outcome.failed("cancelled", "Cancelled", "interrupted before the command started")
                _log.failure("SSH run failed", Failure(e))
                return Outcome.failed("ssh_exec_failed", type(e).__name__, "the command could not be started over SSH")
            finally:
                self.pending = None
            return await self._supervise(link, channel)
        raise AssertionError("unreachable")

    def _start_timed_out(self, channel: CommandChannel, link: SSHLink, fresh: bool) -> None:
        if channel.started.called:
            return
        self.remote.pool.discard(link)
        link.close(abort=True)  # half-open or stuck: the next attempt connects anew
        channel._start_failed(_Stale() if not fresh else SSHError(
            "ssh_unreachable", f"target {self.target.name!r}: the SSH server did not start the command "
            f"within {self.timeout:g} s"))

    async def _supervise(self, link: SSHLink, channel: CommandChannel) -> Outcome:
        pool = self.remote.pool
        pool.acquire(link)
        producer = link.tcp()
        self.output.transport = producer  # ShellProtocol.processEnded removes it
        if producer is not None:
            self.ctx.add_producer(producer)
        try:
            await channel.ended
        finally:
            for call in self.calls:
                if call.active():
                    call.cancel()
            if producer is not None:
                producer.resumeProducing()  # never leave the shared connection paused
            pool.release(link)
        reason = channel.reason()
        lost = reason is None and link.lost
        self.output.processEnded(reason or Failure(ProcessTerminated(exitCode=255)))
        outcome: Outcome = await self.output.done
        if reason is None and not self.ctx.interrupted:
            if lost:
                message = (f"the SSH connection to {self.target.name} was lost while the command ran "
                           "(the command is stopped there once sshd notices)")
                code = "ssh_connection_lost"
            else:
                message, code = "the remote command ended without an exit status", "ssh_no_exit_status"
            outcome.error = Outcome.failed(code, "SSHError", message).error
            outcome.status = "error"
        return outcome

    # -- interrupts ------------------------------------------------------------------

    def _interrupt(self, reason: str) -> None:
        if self.pending is not None and not self.pending.called:
            self.pending.cancel()
        elif self.channel is not None and self.channel.started.called:
            self._escalate(0)

    def _escalate(self, step: int) -> None:
        channel = self.channel
        if channel is None or channel.is_closed:
            return
        if step < len(ESCALATION):
            name, wait = ESCALATION[step]
            channel.signal(name)
            self.calls.append(self.ctx.reactor.callLater(wait, self._escalate, step + 1))
            return
        channel.close()
        self.calls.append(self.ctx.reactor.callLater(CLOSE_GRACE, self._give_up))

    def _give_up(self) -> None:
        # The server ignores our close: drop the connection (the next cell reconnects).
        if self.channel is not None and not self.channel.is_closed and self.link is not None:
            self.remote.pool.discard(self.link)
            self.link.close(abort=True)
