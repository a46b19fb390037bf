"""Shared bench tools: the real daemon in a child process and a counting client.

Benchmarks run the runtime as users do (``twistd -n spin-runtime``, its own
process) and drive it from this process, so the client never steals the
runtime's reactor. Every figure is reported next to a reference measured in
the same invocation.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import sys
import tempfile
from typing import Any, Callable

import orjson
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater

# Shared with the worker processes a bench starts (they inherit the environment).
TOKEN = os.environ.setdefault("SPIN_BENCH_TOKEN", "bench-token-" + os.urandom(8).hex())
TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]


def sleep(seconds: float) -> defer.Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {"median": statistics.median(ordered), "p99": p99, "n": len(ordered)}


class Daemon(ProcessProtocol):
    def __init__(self, *extra: str, home: str | None = None) -> None:
        self.home = home or tempfile.mkdtemp(prefix="spin-bench-")
        self.ended: defer.Deferred[Any] = defer.Deferred()
        env = dict(os.environ, SPIN_TOKEN=TOKEN)
        argv = TWISTD + ["-n", "--pidfile=", "--logfile", os.path.join(self.home, "twistd.log"),
                         "spin-runtime", "--home", self.home, "--endpoint", "tcp:0:interface=127.0.0.1", *extra]
        self.transport = reactor.spawnProcess(self, sys.executable, argv, env=env, path=self.home)
        self.pid = self.transport.pid
        profile = os.environ.get("SPIN_BENCH_PROFILE")
        if profile:  # py-spy samples the runtime for the whole run (raw, for flame graphs)
            spy = ["py-spy", "record", "-f", "raw", "-r", "200", "-o", profile, "-p", str(self.pid)]
            reactor.spawnProcess(ProcessProtocol(), spy[0], spy, env=dict(os.environ))

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)

    async def url(self) -> str:
        path = os.path.join(self.home, "var", "runtime.json")
        for _ in range(600):
            try:
                with open(path) as f:
                    data = json.load(f)
                if data["pid"] == self.pid:
                    return f"ws://127.0.0.1:{data['listening'][0]['port']}/ws"
            except (OSError, ValueError, KeyError):
                pass
            await sleep(0.05)
        raise RuntimeError("the runtime did not start")

    def cpu_s(self) -> float:
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_mb(self) -> float:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> defer.Deferred[Any]:
        if not self.ended.called:
            os.kill(self.pid, signal.SIGTERM)
        return self.ended


class _Proto(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.bench._opened(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.factory.bench._message(payload)

    def processData(self) -> bool:
        """Whole unmasked text frames (all the server sends) go straight to the
        counting client: Autobahn's per-message path costs ~25 us in Python,
        more than the runtime spends per event, so replay measured the client.
        Anything else (control frames, a frame not yet complete) is Autobahn's."""
        data = self.data
        if self.current_frame is not None or self.state != self.STATE_OPEN:
            return super().processData()
        message = self.factory.bench._message
        pos, end = 0, len(data)
        while pos + 2 <= end and data[pos] == 0x81:
            n = data[pos + 1]
            if n > 127:  # masked: not ours to take
                break
            head = 2
            if n == 126:
                if pos + 4 > end:
                    break
                n, head = int.from_bytes(data[pos + 2:pos + 4], "big"), 4
            elif n == 127:
                if pos + 10 > end:
                    break
                n, head = int.from_bytes(data[pos + 2:pos + 10], "big"), 10
            if pos + head + n > end:
                break
            message(data[pos + head:pos + head + n])
            pos += head + n
        if pos == 0:
            return super().processData()
        self.data = data[pos:]
        return True

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        self.factory.bench._closed()


class BenchClient:
    """Decodes every frame (as a real client must) but keeps only counters."""

    def __init__(self) -> None:
        self.proto: _Proto | None = None
        self._opened_d: defer.Deferred[None] = defer.Deferred()
        self._waiter: tuple[Callable[[dict[str, Any]], bool], defer.Deferred[Any]] | None = None
        self.stream_chars = 0
        self.events = 0
        self.last_seq = 0
        self._next = 0

    @classmethod
    async def connect(cls, url: str) -> "BenchClient":
        client = cls()
        factory = WebSocketClientFactory(url, headers={"Authorization": f"Bearer {TOKEN}"})
        factory.protocol = _Proto
        factory.bench = client
        # orjson.loads below checks the UTF-8 of every frame; Autobahn's pure-Python
        # validator (its C one is not built here) would only check it twice.
        factory.setProtocolOptions(maxFramePayloadSize=0, maxMessagePayloadSize=0, utf8validateIncoming=False)
        port = int(url.split(":")[2].split("/")[0])
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        await client._opened_d
        return client

    def _opened(self, proto: _Proto) -> None:
        self.proto = proto
        self._opened_d.callback(None)

    def _closed(self) -> None:
        pass

    def _message(self, payload: bytes) -> None:
        message = orjson.loads(payload)
        if "event" in message:
            self.events += 1
            self.last_seq = message.get("seq", self.last_seq)
            if message["event"] == "stream":
                self.stream_chars += len(message["text"])
        waiter = self._waiter
        if waiter is not None and waiter[0](message):
            self._waiter = None
            waiter[1].callback(message)

    def wait(self, predicate: Callable[[dict[str, Any]], bool]) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        self._waiter = (predicate, d)
        return d

    async def request(self, op: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        rid = self._next
        waiting = self.wait(lambda m: m.get("re") == rid)
        self.proto.sendMessage(json.dumps({"id": rid, "op": op, **params}).encode())
        return await waiting

    async def run(self, session: str, cell: dict[str, Any]) -> dict[str, Any]:
        """cell.run until its run.finished (the reply may come before or after events)."""
        self._next += 1
        rid = self._next
        state: dict[str, Any] = {}

        def match(m: dict[str, Any]) -> bool:
            if m.get("re") == rid:
                state["run"] = m["run"]
            return m.get("event") == "run.finished" and m.get("run") == state.get("run")

        waiting = self.wait(match)
        self.proto.sendMessage(json.dumps({"id": rid, "op": "cell.run", "session": session, "cell": cell}).encode())
        return await waiting

    def close(self) -> None:
        if self.proto is not None:
            self.proto.sendClose()


def report(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n== {title}")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")
