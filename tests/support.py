"""Shared test tools: an in-process runtime on port 0 and a real WebSocket client."""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
from typing import Any, Callable

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.task import deferLater

from spinrt.cells.kernel_reaper import processes
from spinrt.tap import Options, RuntimeService, makeService

TOKEN = "test-token-0123456789-abcdef"


def run_options(home: str, *extra: str) -> Options:
    options = Options()
    options.parseOptions(["--home", home, "--endpoint", "tcp:0:interface=127.0.0.1", *extra])
    return options


async def start_runtime(testcase: Any, *extra: str, home: str | None = None,
                        environ: dict[str, str] | None = None) -> RuntimeService:
    """A real runtime in this process, listening on 127.0.0.1:<random>."""
    if home is None:
        home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
    env = dict(os.environ)
    env["SPIN_TOKEN"] = TOKEN
    env.update(environ or {})
    if "--kernel-pool" not in extra:
        extra = (*extra, "--kernel-pool", "0")  # no idle kernel per test unless asked for
    service = makeService(run_options(home, *extra), reactor, env)
    assert isinstance(service, RuntimeService)
    service.privilegedStartService()
    service.startService()
    testcase.addCleanup(lambda: service.stopService() if service.running else None)
    return service


def ws_url(service: RuntimeService, query: str = "") -> str:
    port = service.addresses[0]["port"]
    return f"ws://127.0.0.1:{port}/ws{query}"


class ClientProtocol(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.client._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.client._received(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.factory.client._closed(code, reason)


class Client:
    """A WebSocket client that records every frame and can await replies/events."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.protocol: ClientProtocol | None = None
        self.close_code: int | None = None
        self.closed = defer.Deferred()
        self._opened_d: defer.Deferred[Client] = defer.Deferred()
        self._waiters: list[tuple[Callable[[dict[str, Any]], bool], defer.Deferred[Any]]] = []
        self._next_id = 0

    @classmethod
    async def connect(cls, url: str, *, token: str | None = TOKEN, headers: dict[str, str] | None = None,
                      protocols: list[str] | None = None, origin: str | None = None) -> "Client":
        client = cls()
        all_headers = dict(headers or {})
        if token is not None:
            all_headers.setdefault("Authorization", f"Bearer {token}")
        factory = WebSocketClientFactory(url, headers=all_headers, protocols=protocols, origin=origin)
        factory.protocol = ClientProtocol
        factory.client = client
        factory.setProtocolOptions(maxFramePayloadSize=0, maxMessagePayloadSize=0)
        port = int(url.split(":")[2].split("/")[0])
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
        await endpoint.connect(factory)
        await client._opened_d
        return client

    def _opened(self, protocol: ClientProtocol) -> None:
        self.protocol = protocol
        self._opened_d.callback(self)

    def _closed(self, code: int | None, reason: str | None) -> None:
        self.close_code = code
        if not self._opened_d.called:
            self._opened_d.errback(ConnectionError(f"handshake failed: {code} {reason}"))
        if not self.closed.called:
            self.closed.callback(code)

    def _received(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        for waiter in list(self._waiters):
            predicate, d = waiter
            if predicate(message):
                self._waiters.remove(waiter)
                d.callback(message)

    def send_raw(self, payload: bytes | str, binary: bool = False) -> None:
        assert self.protocol is not None
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        self.protocol.sendMessage(payload, isBinary=binary)

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> defer.Deferred[Any]:
        for message in self.messages:
            if predicate(message):
                return defer.succeed(message)
        d: defer.Deferred[Any] = defer.Deferred()
        self._waiters.append((predicate, d))
        d.addTimeout(timeout, reactor)
        return d

    def wait_new(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0) -> defer.Deferred[Any]:
        """Like wait_for, but only for messages that arrive from now on."""
        d: defer.Deferred[Any] = defer.Deferred()
        self._waiters.append((predicate, d))
        d.addTimeout(timeout, reactor)
        return d

    async def request(self, op: str, timeout: float = 20.0, **params: Any) -> dict[str, Any]:
        self._next_id += 1
        rid = f"r{self._next_id}"
        waiting = self.wait_new(lambda m: m.get("re") == rid, timeout)
        self.send_raw(json.dumps({"id": rid, "op": op, **params}))
        return await waiting

    async def run(self, session: str, cell: dict[str, Any], timeout: float = 30.0) -> dict[str, Any]:
        """Run a cell and return its run.finished event."""
        reply = await self.request("cell.run", session=session, cell=cell)
        assert reply["ok"], reply
        run = reply["run"]
        return await self.wait_for(
            lambda m: m.get("event") == "run.finished" and m.get("run") == run, timeout
        )

    def events(self, session: str | None = None, run: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            m for m in self.messages
            if "event" in m and m["event"] not in ("welcome", "presence")  # connection-level: no seq
            and (session is None or m.get("session") == session)
            and (run is None or m.get("run") == run)
            and (kind is None or m["event"] == kind)
        ]

    def output(self, run: str, name: str = "stdout") -> str:
        return "".join(m["text"] for m in self.events(run=run, kind="stream") if m["name"] == name)

    def close(self) -> defer.Deferred[Any]:
        if self.protocol is not None and not self.closed.called:
            self.protocol.sendClose()
        return self.closed


def sleep(seconds: float) -> defer.Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


async def eventually(check: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
    waited = 0.0
    while not check():
        if waited >= timeout:
            raise AssertionError("condition not met in time")
        await sleep(interval)
        waited += interval


PYTHON = sys.executable


# -- the real daemon, as users start it ------------------------------------------------

TWISTD = [PYTHON, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]


class DaemonProcess:
    """``twistd -n spin-runtime`` in a child process, on port 0."""

    def __init__(self, home: str, *extra: str, env: dict[str, str] | None = None) -> None:
        from twisted.internet.protocol import ProcessProtocol

        self.home = home
        self.output = bytearray()
        self.ended: defer.Deferred[Any] = defer.Deferred()
        daemon = self

        class Protocol(ProcessProtocol):
            def outReceived(self, data: bytes) -> None:
                daemon.output += data

            errReceived = outReceived

            def processEnded(self, reason: Any) -> None:
                daemon.exit_code = getattr(reason.value, "exitCode", None)
                daemon.signal = getattr(reason.value, "signal", None)
                daemon.ended.callback(daemon.exit_code)

        full_env = {k: v for k, v in os.environ.items() if k != "SPIN_TOKEN"}
        full_env["SPIN_TOKEN"] = TOKEN
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.update(env or {})
        argv = TWISTD + ["-n", "--pidfile=", "--logfile", os.path.join(home, "twistd.log"), "spin-runtime", "--home", home,
                         "--endpoint", "tcp:0:interface=127.0.0.1", *extra]
        self.transport = reactor.spawnProcess(Protocol(), PYTHON, argv, env=full_env, path=home)
        self.pid = self.transport.pid

    async def ready(self, timeout: float = 30.0) -> str:
        path = os.path.join(self.home, "var", "runtime.json")

        def written() -> bool:
            if self.ended.called:
                raise AssertionError(f"the daemon exited: {self.output.decode(errors='replace')}{self.log()}")
            try:
                with open(path) as f:
                    return json.load(f)["pid"] == self.pid
            except (OSError, ValueError, KeyError):
                return False

        await eventually(written, timeout)
        with open(path) as f:
            port = json.load(f)["listening"][0]["port"]
        return f"ws://127.0.0.1:{port}/ws"

    def log(self) -> str:
        with open(os.path.join(self.home, "twistd.log"), encoding="utf-8", errors="replace") as f:
            return f.read()

    def signal_(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def stop(self) -> defer.Deferred[Any]:
        if not self.ended.called:
            self.signal_(signal.SIGTERM)
        return self.ended

    def rss_kb(self, field: str = "VmRSS") -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
        raise AssertionError(field)


def group_alive(pgid: int) -> bool:
    """Does any live (non-zombie) process belong to this process group?"""
    return any(group == pgid and not zombie for _, group, zombie in processes())
