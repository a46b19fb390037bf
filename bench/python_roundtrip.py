"""Python cell latency: spinrt over its WebSocket vs jupyter_client vs Jupyter Server.

    python bench/python_roundtrip.py [--n 500] [--starts 5] [--jupyter-python PATH]

Measures, in one invocation, on the same machine:

1. ``1+1`` round trips (send -> reply and all output in), median and p99:
   a. jupyter_client driving an ipykernel in-process: the floor;
   b. spinrt (the real ``twistd spin-runtime`` daemon) over its WebSocket:
      ``cell.run`` -> ``run.finished``;
   c. Jupyter Server over its kernel WebSocket (``/api/kernels/<id>/channels``).
2. Time to the first result of a NEW session: spinrt with the warm pool
   (``--kernel-pool 1``) and without it (``--kernel-pool 0``), and Jupyter
   Server (POST /api/kernels, open the channels, execute).

Not run by CI. Jupyter Server is a bench-only dependency; when the Python
given by ``--jupyter-python`` cannot import ``jupyter_server`` that part is
skipped with a note. The clients are tornado's (TCP_NODELAY on) for both
servers, so the comparison is server against server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import queue
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Awaitable, Callable

from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import TOKEN, JupyterServer, has_jupyter_server  # noqa: E402

SETTLE = 3.0  # seconds between new-session measurements
TWISTD = [sys.executable, "-c",
          "import sys; from twisted.scripts.twistd import run; sys.argv[0] = 'twistd'; run()"]


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))]
    return f"median {statistics.median(ms):7.2f} ms   p99 {p99:7.2f} ms   (n={len(ms)})"


async def timed(n: int, once: Callable[[], Awaitable[None]], warmup: int = 20) -> list[float]:
    for _ in range(warmup):
        await once()
    out = []
    for _ in range(n):
        start = time.perf_counter()
        await once()
        out.append(time.perf_counter() - start)
    return out


# -- a. jupyter_client alone -----------------------------------------------------------


async def direct(n: int) -> list[float]:
    from jupyter_client.manager import AsyncKernelManager

    km = AsyncKernelManager(transport="ipc", connection_file=os.path.join(tempfile.mkdtemp(), "k.json"))
    await km.start_kernel()
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=60)

    async def once() -> None:
        msg_id = kc.execute("1+1")

        # The usual client loop. (A timeout, because a wait in get_*_msg can
        # miss its wake-up after a send on the same socket; polling again finds it.)
        async def next_msg(get: Callable[..., Awaitable[dict[str, Any]]]) -> dict[str, Any]:
            while True:
                try:
                    return await get(timeout=1)
                except queue.Empty:
                    pass

        async def idle() -> None:
            while True:
                msg = await next_msg(kc.get_iopub_msg)
                if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                        and msg["content"]["execution_state"] == "idle"):
                    return

        async def reply() -> None:
            while (await next_msg(kc.get_shell_msg))["parent_header"].get("msg_id") != msg_id:
                pass

        await asyncio.gather(idle(), reply())

    try:
        return await timed(n, once)
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=True)


# -- b. spinrt ------------------------------------------------------------------------------


class Runtime:
    """The real daemon, and a WebSocket client for it."""

    def __init__(self, pool: int) -> None:
        self.home = tempfile.mkdtemp(prefix="spin-bench-")
        env = dict(os.environ, SPIN_TOKEN=TOKEN)
        env.pop("REQUESTS_CA_BUNDLE", None)
        self.proc = subprocess.Popen(
            TWISTD + ["-n", "--pidfile=", "--logfile", os.path.join(self.home, "twistd.log"),
                      "spin-runtime", "--home", self.home, "--endpoint", "tcp:0:interface=127.0.0.1",
                      "--kernel-pool", str(pool)],
            env=env, cwd=self.home)
        self.ws: Any = None
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._ids = 0

    async def connect(self) -> None:
        path = os.path.join(self.home, "var", "runtime.json")
        for _ in range(600):
            try:
                with open(path) as f:
                    port = json.load(f)["listening"][0]["port"]
                break
            except (OSError, ValueError, KeyError):
                await asyncio.sleep(0.05)
        else:
            raise RuntimeError("spin-runtime did not start; see " + self.home)
        self.ws = await websocket_connect(HTTPRequest(
            f"ws://127.0.0.1:{port}/ws", headers={"Authorization": f"Bearer {TOKEN}"}))
        self.ws.protocol.set_nodelay(True)

    async def request(self, op: str, **params: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The reply, and the events that came before it."""
        self._ids += 1
        rid = self._ids
        await self.ws.write_message(json.dumps({"id": rid, "op": op, **params}))
        before = []
        while True:
            msg = json.loads(await self.ws.read_message())
            if msg.get("re") == rid:
                return msg, before
            before.append(msg)

    async def run(self, sid: str, source: str) -> dict[str, Any]:
        reply, before = await self.request("cell.run", session=sid, cell={"type": "python", "source": source})
        run = reply["run"]
        for msg in before:
            if msg.get("event") == "run.finished" and msg.get("run") == run:
                return msg
        while True:
            msg = json.loads(await self.ws.read_message())
            if msg.get("event") == "run.finished" and msg.get("run") == run:
                return msg

    async def new_session(self) -> str:
        reply, _ = await self.request("session.create")
        return reply["session"]["id"]

    def stop(self) -> None:
        if self.ws is not None:
            self.ws.close()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(30)
        shutil.rmtree(self.home, ignore_errors=True)


async def spin_roundtrip(n: int) -> list[float]:
    rt = Runtime(pool=1)
    try:
        await rt.connect()
        sid = await rt.new_session()
        await rt.run(sid, "x = 1")

        async def once() -> None:
            done = await rt.run(sid, "1+1")
            assert done["status"] == "ok", done

        return await timed(n, once)
    finally:
        rt.stop()


async def spin_first_result(pool: int, starts: int) -> list[float]:
    rt = Runtime(pool=pool)
    out = []
    try:
        await rt.connect()
        for _ in range(starts):
            # The steady state: the pool refilled (a boot takes ~0.6 s) and the
            # previous session's kernel gone, so nothing competes for the CPU.
            await asyncio.sleep(SETTLE)
            start = time.perf_counter()
            sid = await rt.new_session()
            done = await rt.run(sid, "1+1")
            out.append(time.perf_counter() - start)
            assert done["status"] == "ok", done
            await rt.request("session.close", session=sid)
        return out
    finally:
        rt.stop()


# -- c. Jupyter Server ------------------------------------------------------------------------


async def jupyter(python: str, n: int, starts: int) -> tuple[list[float], list[float]]:
    server = JupyterServer(python)
    try:
        await server.ready()
        kid, ws = await server.kernel()
        await asyncio.wait_for(server.execute(ws, "x = 1"), 60)
        roundtrips = await timed(n, lambda: server.execute(ws, "1+1"))
        ws.close()
        firsts = []
        for _ in range(starts):
            start = time.perf_counter()
            kid, ws = await server.kernel()
            await asyncio.wait_for(server.execute(ws, "1+1"), 60)
            firsts.append(time.perf_counter() - start)
            ws.close()
            await server.http.fetch(f"{server.base}/api/kernels/{kid}", method="DELETE", headers=server.headers)
        return roundtrips, firsts
    finally:
        server.stop()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=500, help="round trips per measurement")
    parser.add_argument("--starts", type=int, default=5, help="new sessions per first-result measurement")
    parser.add_argument("--jupyter-python", default=sys.executable,
                        help="a Python that can import jupyter_server (default: this one)")
    args = parser.parse_args()

    print(f"1+1 round trip (send -> reply and output in), {os.cpu_count()} CPUs")
    floor = await direct(args.n)
    print(f"  jupyter_client in-process  {summary(floor)}")
    spin = await spin_roundtrip(args.n)
    ratio = statistics.median(spin) / statistics.median(floor)
    print(f"  spinrt over WebSocket      {summary(spin)}   {ratio:.2f}x the floor")
    jupyter_ok = has_jupyter_server(args.jupyter_python)
    if jupyter_ok:
        jrt, jfirst = await jupyter(args.jupyter_python, args.n, args.starts)
        print(f"  Jupyter Server WebSocket   {summary(jrt)}")
    else:
        print(f"  Jupyter Server: skipped ({args.jupyter_python} cannot import jupyter_server; "
              "pip install jupyter_server, or pass --jupyter-python)")

    print("time to first result of a new session (session.create + cell.run '1+1')")
    warm = await spin_first_result(1, args.starts)
    print(f"  spinrt, --kernel-pool 1    {summary(warm)}")
    cold = await spin_first_result(0, args.starts)
    print(f"  spinrt, --kernel-pool 0    {summary(cold)}")
    if jupyter_ok:
        print(f"  Jupyter Server (new kernel) {summary(jfirst)}")


if __name__ == "__main__":
    asyncio.run(main())
