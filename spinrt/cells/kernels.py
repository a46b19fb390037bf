"""One running IPython kernel: execute, interrupt, watch, kill.

One ``Kernel`` is one ipykernel process driven through jupyter_client's
asyncio API on the reactor's own loop. Two reader tasks (shell and iopub)
route every message by its parent ``msg_id`` to the request that caused it,
so nothing polls on the hot path. A pidfd (Linux >= 5.3) tells us the moment
the process exits; elsewhere a half-second poll does.

``kernel_launcher`` starts kernels; ``kernel_reaper`` makes sure none
outlives the runtime.
"""

from __future__ import annotations

import asyncio
import collections
import os
import signal
from typing import Any, Callable

import attrs
import zmq
from jupyter_client.provisioning import LocalProvisioner
from twisted.logger import Logger
from twisted.python.failure import Failure

_log = Logger()

HANDSHAKE_RESEND = 0.5  # seconds before kernel_info is sent again while the kernel boots
HANDSHAKE_NUDGE = 0.02  # seconds between kernel_info nudges while iopub connects
DEATH_DRAIN = 0.1  # seconds to keep reading iopub after the process exited
KILL_TIMEOUT = 5.0  # seconds for SIGKILL to take
RECENT_PARENTS = 16  # finished requests whose late output is still routed
FORWARDED = 256  # forwarded client requests whose replies and output are still routed
USE_PIDFD = hasattr(os, "pidfd_open")
REMOTE_POLL = 1.0  # seconds between liveness polls of a kernel that runs elsewhere
REMOTE_SHUTDOWN = 30.0  # seconds for a provisioner to stop a kernel that runs elsewhere


class KernelStartError(Exception):
    """The kernel process did not come up."""


class KernelDied(Exception):
    def __init__(self, description: str, intentional: bool = False) -> None:
        super().__init__(description)
        self.description = description
        self.intentional = intentional


def describe_exit(code: int | None) -> str:
    if code is None:
        return "stopped"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = ", possibly out of memory" if -code == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exited with status {code}"


@attrs.define(eq=False)
class Request:
    """One execute_request in flight."""

    future: asyncio.Future[dict[str, Any]]
    output: Callable[[dict[str, Any]], None] | None
    wait_idle: bool
    on_busy: Callable[[], None] | None = None
    reply: dict[str, Any] | None = None
    idle: bool = False
    busy: bool = False


class Kernel:
    def __init__(self, launcher: Any, km: Any, log_path: str, record_path: str) -> None:
        # launcher: the KernelLauncher (zmq context, liveness polls, registry).
        self.launcher = launcher
        self.km = km
        self.id: str = km.kernel_id
        # A provisioner other than jupyter_client's local one (--kernel-spec:
        # a container, a pod) runs the kernel elsewhere: there is no process
        # here to watch or signal, the provisioner polls, interrupts and stops it.
        self.remote = not isinstance(km.provisioner, LocalProvisioner)
        self.process = None if self.remote else km.provisioner.process
        self.pid: int | None = None if self.remote else self.process.pid
        self.pgid: int | None = None if self.remote else km.provisioner.pgid
        self._remote_poll: asyncio.Future[None] | None = None
        self.client: Any = None
        self.alive = True
        self.closing = False
        self.exit_description: str | None = None
        self.session_id: str | None = None
        self.on_death: list[Callable[["Kernel", str], None]] = []
        self._log_path = log_path
        self._record_path = record_path
        self._in_flight: dict[str, Request] = {}
        self._recent: collections.OrderedDict[str, Callable[[dict[str, Any]], None]] = collections.OrderedDict()
        # Requests forwarded for Jupyter clients (spinrt.web.jupyter): msg_id -> who gets what they cause.
        self._forwarded: collections.OrderedDict[str, Callable[[dict[str, Any]], None]] = collections.OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self._pidfd: int | None = None
        self._keep_log = False
        self._loop = asyncio.get_running_loop()
        self._exited: asyncio.Future[int] = self._loop.create_future()
        self._closed: asyncio.Future[None] = self._loop.create_future()
        self._watch()

    def __repr__(self) -> str:
        return f"<Kernel {self.id} pid={self.pid} session={self.session_id}>"

    # -- start ------------------------------------------------------------------------

    async def connect(self, timeout: float) -> None:
        client = self.km.client(context=self.launcher.zmq_context)
        client.allow_stdin = False
        # No heartbeat thread and no stdin/control channels: the pidfd watches
        # the process, and v1 has no stdin.
        client.start_channels(shell=True, iopub=True, stdin=False, hb=False, control=False)
        self.client = client
        ready = asyncio.ensure_future(asyncio.wait_for(self._handshake(client), timeout))
        either: set[asyncio.Future[Any]] = {ready, self._exited}
        done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        if ready not in done:
            ready.cancel()
            how = self.exit_description or describe_exit(self._exited.result())
            raise KernelStartError(f"the Python kernel {how} while starting")
        try:
            ready.result()
        except asyncio.TimeoutError:
            raise KernelStartError(f"the Python kernel did not answer within {timeout:g} s") from None
        self._tasks = [
            asyncio.ensure_future(self._read(client.shell_channel, self._on_shell)),
            asyncio.ensure_future(self._read(client.iopub_channel, self._on_iopub)),
        ]

    async def _handshake(self, client: Any) -> None:
        """Shell and iopub both work. (jupyter_client's wait_for_ready waits a
        fixed 0.2 s for iopub, which loses the messages sent before it
        subscribed; here a kernel_info every 20 ms gets one through sooner.)"""
        while True:
            client.kernel_info()  # zmq holds it until the kernel binds
            _sent(client.shell_channel)
            try:
                reply = await asyncio.wait_for(_recv(client.shell_channel), HANDSHAKE_RESEND)
            except asyncio.TimeoutError:
                continue
            if reply["msg_type"] == "kernel_info_reply":
                client._handle_kernel_info_reply(reply)  # protocol version adaptation
                break
        while True:
            try:
                # Any message proves the subscription (ipykernel 7 sends iopub_welcome).
                await asyncio.wait_for(_recv(client.iopub_channel), HANDSHAKE_NUDGE)
                return
            except asyncio.TimeoutError:
                client.kernel_info()
                _sent(client.shell_channel)

    # -- requests -----------------------------------------------------------------------

    def execute(
        self,
        code: str,
        *,
        silent: bool = False,
        user_expressions: dict[str, str] | None = None,
        output: Callable[[dict[str, Any]], None] | None = None,
        on_busy: Callable[[], None] | None = None,
    ) -> Request:
        """Send an execute_request; ``request.future`` fires with the reply
        content once the reply AND (for visible code) all its output are in."""
        future: asyncio.Future[dict[str, Any]] = self._loop.create_future()
        request = Request(future=future, output=output, wait_idle=not silent, on_busy=on_busy)
        if not self.alive:
            future.set_exception(KernelDied(self.exit_description or "stopped", self.closing))
            return request
        msg_id = self.client.execute(
            code,
            silent=silent,
            store_history=not silent,
            user_expressions=user_expressions or {},
            allow_stdin=False,
            # Our hidden requests may queue behind a failing cell: never abort them.
            stop_on_error=False,
        )
        _sent(self.client.shell_channel)
        self._in_flight[msg_id] = request
        return request

    def forward(self, msg: dict[str, Any], on_message: Callable[[dict[str, Any]], None]) -> None:
        """Send a client's shell request as it is (its header kept, so the
        kernel's reply and output name the client's own request as their
        parent), signed with this kernel's key. ``on_message`` gets every
        shell reply and iopub message whose parent it is (status included),
        as jupyter_client deserialized it. KernelDied if the kernel is gone."""
        if not self.alive or self.closing:
            raise KernelDied(self.exit_description or "stopped", self.closing)
        msg_id = msg["header"]["msg_id"]
        self._forwarded[msg_id] = on_message
        while len(self._forwarded) > FORWARDED:
            self._forwarded.popitem(last=False)
        self.client.session.send(self.client.shell_channel.socket, {
            "header": msg["header"], "parent_header": msg.get("parent_header") or {},
            "metadata": msg.get("metadata") or {}, "content": msg.get("content") or {},
        }, buffers=msg.get("buffers") or None)
        _sent(self.client.shell_channel)

    async def _read(self, channel: Any, handle: Callable[[dict[str, Any]], None]) -> None:
        while True:
            try:
                msg = await _recv(channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                if self.alive and not self.closing:
                    _log.failure("kernel {id}: reading a channel failed", id=self.id)
                return
            try:
                handle(msg)
            except Exception:
                _log.failure("kernel {id}: handling {type} failed", id=self.id, type=msg.get("msg_type"))

    def _on_shell(self, msg: dict[str, Any]) -> None:
        forwarded = self._forwarded.get(msg["parent_header"].get("msg_id"))
        if forwarded is not None:
            forwarded(msg)
            return
        request = self._in_flight.get(msg["parent_header"].get("msg_id"))
        if request is not None and msg["msg_type"] == "execute_reply":
            request.reply = msg["content"]
            self._maybe_done(msg["parent_header"]["msg_id"], request)

    def _on_iopub(self, msg: dict[str, Any]) -> None:
        parent = msg["parent_header"].get("msg_id")
        request = self._in_flight.get(parent)
        if request is None:
            forwarded = self._forwarded.get(parent)
            if forwarded is not None:
                forwarded(msg)
                return
            late = self._recent.get(parent)
            if late is not None and msg["msg_type"] != "status":
                late(msg)  # e.g. a background thread printing after its cell ended
            return
        if msg["msg_type"] == "status":
            state = msg["content"].get("execution_state")
            if state == "busy" and not request.busy:
                request.busy = True
                if request.on_busy is not None:
                    request.on_busy()
            elif state == "idle":
                request.idle = True
                self._maybe_done(parent, request)
        elif request.output is not None:
            request.output(msg)

    def _maybe_done(self, msg_id: str, request: Request) -> None:
        if request.reply is None or (request.wait_idle and not request.idle):
            return
        del self._in_flight[msg_id]
        if request.output is not None:
            self._recent[msg_id] = request.output
            while len(self._recent) > RECENT_PARENTS:
                self._recent.popitem(last=False)
        if not request.future.done():
            request.future.set_result(request.reply)

    async def interrupt(self) -> None:
        """SIGINT to the kernel's process group (its children too)."""
        if self.alive:
            try:
                await self.km.interrupt_kernel()
            except Exception as e:
                _log.warn("kernel {id}: interrupt failed: {e}", id=self.id, e=e)

    # -- death and shutdown --------------------------------------------------------------

    def _watch(self) -> None:
        if self.remote:
            self._remote_poll = asyncio.ensure_future(self._poll_remote())
            return
        if USE_PIDFD:
            try:
                self._pidfd = os.pidfd_open(self.pid)
            except OSError:
                self._pidfd = None
            else:
                self._loop.add_reader(self._pidfd, self._check_exit)
                return
        self.launcher.poll(self)

    def _unwatch(self) -> None:
        if self._remote_poll is not None:
            if self._remote_poll is not asyncio.current_task():
                self._remote_poll.cancel()
            self._remote_poll = None
        if self._pidfd is not None:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None
        self.launcher.unpoll(self)

    async def _poll_remote(self) -> None:
        """The provisioner's poll (a container's or pod's state), every REMOTE_POLL s.

        In a worker thread with an event loop of its own: provisioners poll
        with blocking client calls (gateway_provisioners' Docker and
        Kubernetes clients), which must not hold up the reactor."""
        loop = asyncio.get_running_loop()
        provisioner = self.km.provisioner
        while self.alive and not self.closing:
            await asyncio.sleep(REMOTE_POLL)
            try:
                code = await loop.run_in_executor(None, lambda: asyncio.run(provisioner.poll()))
            except Exception as e:
                _log.warn("kernel {id}: polling its provisioner failed: {e}", id=self.id, e=e)
                continue
            if code is not None and not self.closing:
                self._exited_with(code)
                return

    def _check_exit(self) -> None:
        """The pidfd became readable, or the fallback poll is asking."""
        code = self.process.poll()  # also reaps it
        if code is None:
            return
        self._exited_with(code)

    def _exited_with(self, code: int) -> None:
        self._unwatch()
        self.alive = False
        if not self._exited.done():
            self._exited.set_result(code)
        if self.closing:
            return
        self.exit_description = describe_exit(code)
        _log.warn("kernel {id} (session {session}) {how}; its log: {log}", id=self.id,
                  session=self.session_id, how=self.exit_description, log=self._log_path)
        self._keep_log = True
        # Output the kernel sent just before dying may still be on its way.
        self._loop.call_later(DEATH_DRAIN, lambda: background(self._after_death()))

    async def _after_death(self) -> None:
        if self.closing:  # shut down meanwhile
            return
        description = self.exit_description or "stopped"
        # Owners hear of it first (kernel.status dead), then the run in flight ends.
        for callback in list(self.on_death):
            try:
                callback(self, description)
            except Exception:
                _log.failure("kernel {id}: death callback failed", id=self.id)
        await self._release(KernelDied(description))

    async def shutdown(self, why: str = "was shut down") -> None:
        """Kill the kernel's process group now; pending requests fail with
        ``KernelDied(intentional=True)``."""
        if self.closing:
            await asyncio.shield(self._closed)
            return
        self.exit_description = why
        await self._release(KernelDied(why, intentional=True))

    async def _release(self, error: KernelDied) -> None:
        self.closing = True
        for request in list(self._in_flight.values()):
            if not request.future.done():
                request.future.set_exception(error)
        self._in_flight.clear()
        self._recent.clear()
        self._forwarded.clear()
        for task in self._tasks:
            task.cancel()
        if self.client is not None:
            try:
                self.client.stop_channels()
            except Exception:
                pass
        if self.remote:
            # The provisioner stops it and removes what it made (the container, the pod).
            self._unwatch()
            try:
                await asyncio.wait_for(self.km.shutdown_kernel(now=True), REMOTE_SHUTDOWN)
            except Exception as e:
                _log.error("kernel {id}: its provisioner did not stop it: {e}", id=self.id,
                           e=e or type(e).__name__)
            if not self._exited.done():
                self._exited.set_result(0)
        else:
            # The whole group: the kernel and whatever its cells started. Done by
            # hand because jupyter_client's shutdown polls every 100 ms.
            try:
                os.killpg(self.pgid or self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                await asyncio.wait_for(asyncio.shield(self._exited), KILL_TIMEOUT)
            except asyncio.TimeoutError:
                _log.error("kernel {id} (pid {pid}) survived SIGKILL", id=self.id, pid=self.pid)
            try:
                await self.km.cleanup_resources()  # connection file and ipc sockets
            except Exception:
                _log.failure("kernel {id}: cleanup failed", id=self.id)
        self.alive = False
        paths = [self._record_path] if self._keep_log else [self._record_path, self._log_path]
        for path in paths:
            try:
                os.unlink(path)
            except OSError:
                pass
        self.launcher.forget(self)
        if not self._closed.done():
            self._closed.set_result(None)


async def _recv(channel: Any) -> dict[str, Any]:
    """The next message on a channel.

    Not ``channel.get_msg()``: that waits in a separate ``poll()`` watching
    the raw descriptor, which nothing wakes again once a send on the same
    socket consumed the wake-up (see ``_sent``)."""
    parts = await channel.socket.recv_multipart()
    _, message = channel.session.feed_identities(parts)
    deserialized: dict[str, Any] = channel.session.deserialize(message)
    return deserialized


def _sent(channel: Any) -> None:
    """After jupyter_client sent on ``channel``: keep its replies flowing.

    ``Session.send`` writes through a synchronous shadow of the asyncio
    socket, and libzmq may consume the descriptor's wake-up for a reply that
    arrives meanwhile; pyzmq's asyncio layer never hears of it and the reply
    sits unread. Reading EVENTS through the asyncio socket makes pyzmq
    deliver whatever is waiting."""
    channel.socket.get(zmq.EVENTS)


def background(coro: Any) -> asyncio.Future[Any]:
    """Run a coroutine on the loop; log (never lose) its failure."""
    future: asyncio.Future[Any] = asyncio.ensure_future(coro)

    def done(f: asyncio.Future[Any]) -> None:
        error = None if f.cancelled() else f.exception()
        if error is not None:
            _log.failure("a background kernel task failed", Failure(error))

    future.add_done_callback(done)
    return future
