"""Shared bench tools: the real daemon in a child process and a counting client.

Benchmarks run the runtime as users do (``twistd -n spin-runtime``, its own
process) and drive it from this process, so the client never steals the
runtime's reactor. Every figure is reported next to a reference measured in
the same invocation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from typing import Any, Callable, Coroutine, Iterator

import orjson
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater

# Shared with the worker processes a bench starts (they inherit the environment).
TOKEN = os.environ.setdefault("SPIN_BENCH_TOKEN", "bench-token-" + os.urandom(8).hex())
TWISTD = [sys.executable, "-c", "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]


# The shell workload of the throughput and fan-out benches: lines of 99 'x' and a newline.
PIPELINE = "head -c {n} /dev/zero | tr '\\0' 'x' | fold -w 99"


def pipeline_bytes(n: int) -> int:
    """Bytes PIPELINE prints for n 'x' (fold ends every full line but a last one)."""
    return n + (n - 1) // 99


def sleep(seconds: float) -> defer.Deferred[None]:
    return deferLater(reactor, seconds, lambda: None)


def aio(coro: Coroutine[Any, Any, Any]) -> defer.Deferred[Any]:
    """An asyncio coroutine (tornado's clients) awaited from Twisted code, on the
    asyncio reactor's loop."""
    return defer.Deferred.fromFuture(asyncio.ensure_future(coro))


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

    def send(self, payload: bytes) -> None:
        """``sendMessage``, written to the socket now: Twisted would write it
        on the reactor's next turn, and every round trip measured would
        include that turn (for ours and Jupyter's alike)."""
        self.sendMessage(payload)
        transport = self.transport
        if transport.dataBuffer or transport._tempDataBuffer:
            transport.doWrite()

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


class _Client:
    """One WebSocket connection of a counting client: `_message` gets every text
    frame's payload (subclasses decode it with orjson and keep counters)."""

    def __init__(self) -> None:
        self.proto: _Proto | None = None
        self._opened_d: defer.Deferred[None] = defer.Deferred()

    async def _connect(self, url: str, headers: dict[str, str]) -> None:
        factory = WebSocketClientFactory(url, headers=headers)
        factory.protocol = _Proto
        factory.bench = self
        # orjson.loads checks the UTF-8 of every frame; Autobahn's pure-Python
        # validator (its C one is not built here) would only check it twice.
        factory.setProtocolOptions(maxFramePayloadSize=0, maxMessagePayloadSize=0, utf8validateIncoming=False)
        port = int(url.split(":")[2].split("/")[0])
        await TCP4ClientEndpoint(reactor, "127.0.0.1", port).connect(factory)
        await self._opened_d

    def _opened(self, proto: _Proto) -> None:
        self.proto = proto
        self._opened_d.callback(None)

    def _closed(self) -> None:
        pass

    def _message(self, payload: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        if self.proto is not None:
            self.proto.sendClose()


class BenchClient(_Client):
    """A spin.v1 client: decodes every frame (as a real client must) but keeps only counters."""

    def __init__(self) -> None:
        super().__init__()
        self._waiter: tuple[Callable[[dict[str, Any]], bool], defer.Deferred[Any]] | None = None
        self.stream_chars = 0
        self.events = 0
        self.last_seq = 0
        self._next = 0

    @classmethod
    async def connect(cls, url: str) -> "BenchClient":
        client = cls()
        await client._connect(url, {"Authorization": f"Bearer {TOKEN}"})
        return client

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
        self.proto.send(json.dumps({"id": rid, "op": op, **params}).encode())
        return await waiting

    async def run(self, session: str, cell: dict[str, Any]) -> dict[str, Any]:
        """cell.run until its run.finished (the reply may come before or after events)."""
        self._next += 1
        rid = self._next
        state: dict[str, Any] = {}
        finished: dict[str, dict[str, Any]] = {}  # of this session's runs, by run id

        def match(m: dict[str, Any]) -> bool:
            if m.get("re") == rid:
                if not m.get("ok", True):
                    state["refused"] = m
                    return True
                state["run"] = m["run"]
                if m["run"] in finished:  # an instant cell (markdown) finishes before the reply is sent
                    state["finished"] = finished[m["run"]]
                    return True
            elif m.get("event") == "run.finished" and m.get("session") == session:
                if m.get("run") == state.get("run"):
                    return True
                finished[m["run"]] = m
            return False

        waiting = self.wait(match)
        self.proto.send(json.dumps({"id": rid, "op": "cell.run", "session": session, "cell": cell}).encode())
        message = await waiting
        if "refused" in state:
            raise RuntimeError(f"cell.run refused: {state['refused'].get('error')}")
        return state.get("finished", message)


# -- Jupyter Server: the reference the benches measure beside spinrt ----------------------

# Jupyter Server's iopub limits lifted, so it delivers output instead of dropping it.
JUPYTER_LIFTED = ["--ZMQChannelsWebsocketConnection.iopub_data_rate_limit=0",
                  "--ZMQChannelsWebsocketConnection.iopub_msg_rate_limit=0"]
JUPYTER_HEADERS = {"Authorization": f"token {TOKEN}"}


def has_jupyter_server(python: str) -> bool:
    return subprocess.run([python, "-c", "import jupyter_server"], capture_output=True).returncode == 0


def add_compete_option(parser: Any) -> None:
    """--compete: the figures with one CPU-bound process beside them (issue 18)."""
    parser.add_argument("--compete", action="store_true",
                        help="run one CPU-bound process (a Python busy loop) for the whole bench")


@contextlib.contextmanager
def competing(on: bool) -> Iterator[None]:
    """One CPU-bound process for the duration of the block when ``on``."""
    if not on:
        yield
        return
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield
    finally:
        busy.kill()
        busy.wait()


def add_jupyter_options(parser: Any, part: str) -> None:
    """--no-jupyter and --jupyter-python on an argparse parser; Jupyter Server's side
    of `part` is on unless --no-jupyter (see require_jupyter_server)."""
    parser.add_argument("--no-jupyter", dest="jupyter", action="store_false",
                        help=f"leave out Jupyter Server's side of {part}")
    parser.add_argument("--jupyter-python", default=sys.executable,
                        help="a Python that can run jupyter_server (default: this one)")


def require_jupyter_server(python: str) -> None:
    """Stop the bench, loudly, when `python` cannot run Jupyter Server."""
    if not has_jupyter_server(python):
        sys.exit(f"{python} cannot import jupyter_server: pip install jupyter_server (and "
                 "jupyter_server_terminals), pass --jupyter-python, or --no-jupyter to measure spinrt alone")


class JupyterServer:
    """A real `jupyter server` (``python -m jupyter_server``) on 127.0.0.1 and a free
    port, token TOKEN, a fresh root directory; `extra` are more command-line options.
    Its log is ``<root>/server.log`` until stop() removes the root."""

    def __init__(self, python: str = sys.executable, extra: list[str] | tuple[str, ...] = ()) -> None:
        from tornado.httpclient import AsyncHTTPClient

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        self.root = tempfile.mkdtemp(prefix="jupyter-bench-")
        self.log = open(os.path.join(self.root, "server.log"), "wb")
        self.proc = subprocess.Popen(
            [python, "-m", "jupyter_server", f"--ServerApp.port={self.port}", "--ServerApp.ip=127.0.0.1",
             f"--IdentityProvider.token={TOKEN}", "--ServerApp.open_browser=False",
             f"--ServerApp.root_dir={self.root}", "--ServerApp.port_retries=0",
             "--ServerApp.allow_root=True", *extra],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=self.root)
        self.http = AsyncHTTPClient()
        self.base = f"http://127.0.0.1:{self.port}"
        self.headers = JUPYTER_HEADERS

    async def ready(self) -> None:
        for _ in range(600):
            try:
                await self.http.fetch(self.base + "/api/status", headers=self.headers)
                return
            except Exception:
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)
        raise RuntimeError(f"jupyter server did not start; see {self.log.name}")

    async def _post(self, path: str) -> dict[str, Any]:
        response = await self.http.fetch(self.base + path, method="POST", body="{}", headers=self.headers)
        return json.loads(response.body)

    async def start_kernel(self) -> str:
        """POST /api/kernels (the default kernelspec); the kernel's id."""
        return (await self._post("/api/kernels"))["id"]

    async def start_terminal(self) -> str:
        """POST /api/terminals (jupyter_server_terminals); the terminal's name."""
        return (await self._post("/api/terminals"))["name"]

    def channels_url(self, kid: str) -> str:
        return f"ws://127.0.0.1:{self.port}/api/kernels/{kid}/channels"

    def terminal_url(self, name: str) -> str:
        return f"ws://127.0.0.1:{self.port}/terminals/websocket/{name}"

    async def kernel(self) -> tuple[str, Any]:
        """A new kernel and a tornado WebSocket on its channels (TCP_NODELAY on)."""
        from tornado.httpclient import HTTPRequest
        from tornado.websocket import websocket_connect

        kid = await self.start_kernel()
        ws = await websocket_connect(HTTPRequest(self.channels_url(kid), headers=self.headers))
        ws.protocol.set_nodelay(True)
        return kid, ws

    @staticmethod
    async def execute(ws: Any, code: str) -> None:
        """Run `code` on a tornado channels WebSocket until its execute_reply and idle status."""
        msg_id = uuid.uuid4().hex
        await ws.write_message(json.dumps(execute_request(msg_id, code)))
        replied = idle = False
        while not (replied and idle):
            msg = json.loads(await ws.read_message())
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "execute_reply":
                replied = True
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                idle = True

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)


def execute_request(msg_id: str, code: str) -> dict[str, Any]:
    """A Jupyter messaging execute_request on the shell channel, as JSON-protocol clients send it."""
    return {
        "header": {"msg_id": msg_id, "username": "bench", "session": "bench", "msg_type": "execute_request",
                   "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                    "allow_stdin": False, "stop_on_error": True},
    }


class KernelChannels(_Client):
    """A connection to a Jupyter Server kernel's channels (JSON text frames). Decodes
    every frame; of the iopub messages of one request (`msg_id`) it counts the 'x'
    characters of stdout (a `!` command's output comes through a pty: its line ends
    are \\r\\n) and notes the time of its idle status, which follows all its output."""

    def __init__(self, msg_id: str = "") -> None:
        super().__init__()
        self.watch(msg_id)

    @classmethod
    async def connect(cls, url: str, msg_id: str = "") -> "KernelChannels":
        client = cls(msg_id)
        await client._connect(url, JUPYTER_HEADERS)
        return client

    def watch(self, msg_id: str) -> defer.Deferred[None]:
        """Count `msg_id`'s output from now on; fires at its idle status."""
        self.msg_id = msg_id
        self.xs = 0
        self.last_at = 0.0  # time.time() of its latest message
        self.done_at: float | None = None
        self.idle: defer.Deferred[None] = defer.Deferred()
        return self.idle

    def execute(self, code: str, msg_id: str = "") -> defer.Deferred[None]:
        """Send an execute_request of `code`; fires when its idle status is in."""
        idle = self.watch(msg_id or uuid.uuid4().hex)
        self.proto.send(orjson.dumps(execute_request(self.msg_id, code)))
        return idle

    def _message(self, payload: bytes) -> None:
        msg = orjson.loads(payload)
        if msg.get("parent_header", {}).get("msg_id") != self.msg_id:
            return
        self.last_at = time.time()
        kind = msg["msg_type"]
        if kind == "stream" and msg["content"]["name"] == "stdout":
            self.xs += msg["content"]["text"].count("x")
        elif kind == "status" and msg["content"]["execution_state"] == "idle" and self.done_at is None:
            self.done_at = self.last_at
            self.idle.callback(None)


class Terminal(_Client):
    """A Jupyter terminal's WebSocket (terminado: JSON arrays ``["stdout", text]``,
    ``["stdin", text]``). run() types a command line followed by an echo of a marker,
    and fires when the marker's output is in; it counts the 'x' characters in
    between (a pty: line ends are \\r\\n, and the typed line is echoed, so 'x'
    characters are what is counted and the command line must have none)."""

    MARKER = "DONE42"  # printed by `echo DONE$((6*7))`: the typed line never holds it

    def __init__(self) -> None:
        super().__init__()
        self.xs = 0
        self.last_at = time.time()
        self._tail = ""
        self._done: defer.Deferred[None] | None = None

    @classmethod
    async def connect(cls, url: str) -> "Terminal":
        client = cls()
        await client._connect(url, JUPYTER_HEADERS)
        return client

    async def settle(self, quiet: float = 0.5) -> None:
        """Wait until the shell has printed nothing for `quiet` s (its prompt is out)."""
        while time.time() - self.last_at < quiet:
            await sleep(0.05)

    def run(self, command: str) -> defer.Deferred[None]:
        if "x" in command or self.MARKER in command:
            raise ValueError("the command line must not hold an 'x' or the marker: its echo would count")
        self.xs, self._tail = 0, ""
        self._done = defer.Deferred()
        self.proto.send(orjson.dumps(["stdin", f"{command}; echo DONE$((6*7))\r"]))
        return self._done

    def _message(self, payload: bytes) -> None:
        msg = orjson.loads(payload)
        if msg[0] != "stdout":
            return
        text = msg[1]
        self.last_at = time.time()
        if self._done is None:  # the prompt between runs
            return
        seen = self._tail + text
        at = seen.find(self.MARKER)
        if at < 0:
            self.xs += text.count("x")
            self._tail = seen[-len(self.MARKER):]
            return
        self.xs += text[:max(0, at - len(self._tail))].count("x")  # not the prompt after the marker
        done, self._done = self._done, None
        done.callback(None)


def report(title: str, rows: list[tuple[str, str]]) -> None:
    print(f"\n== {title}")
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"  {key.ljust(width)}  {value}")
