"""Python print throughput and fan-out: spinrt vs Jupyter Server, same kernel, one invocation.

    python bench/python_throughput.py [--mb 50] [--reps 3] [--jupyter-python PATH]
                                      [--fanout-clients 20] [--fanout-mb 10]

1. One cell writes --mb MB to stdout as fast as Python can
   (``sys.stdout.write('x'*99 + '\\n')`` in a loop), delivered to one client:
   a. spinrt (the real ``twistd spin-runtime`` daemon) over its WebSocket;
   b. Jupyter Server with its iopub limits lifted
      (``--ZMQChannelsWebsocketConnection.iopub_data_rate_limit=0``, same for
      ``iopub_msg_rate_limit``): the reference;
   c. Jupyter Server with its default limits: how much it drops.
   Rate = stdout characters received / (send -> run finished), median over
   --reps; every character is counted, loss is reported.
2. Fan-out (--fanout-clients > 0): that many clients on one kernel (spinrt:
   attached to one session; Jupyter Server, limits lifted: that many
   connections to one kernel's channels) receive a --fanout-mb MB print
   output; aggregate rate and the slowest client.

All clients are tornado WebSockets (TCP_NODELAY on) decoding every frame with
orjson in this process, so the comparison is server against server. Jupyter
Server is a bench-only dependency (see python_roundtrip.py); common.py starts it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from typing import Any

import orjson
from tornado.httpclient import HTTPRequest
from tornado.websocket import websocket_connect

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import JUPYTER_LIFTED as LIFTED, TOKEN, JupyterServer, execute_request, has_jupyter_server  # noqa: E402
from python_roundtrip import Runtime  # noqa: E402

SETTLE = 3.5  # s between Jupyter reps: its 3 s rate-limit window forgets the previous one
LINE = 100  # 'x' * 99 + '\n'


def source(mb: float) -> str:
    lines = int(mb * 1_000_000) // LINE
    return f"import sys\ns = 'x' * 99 + '\\n'\nfor _ in range({lines}):\n    sys.stdout.write(s)\n"


def expected(mb: float) -> int:
    return int(mb * 1_000_000) // LINE * LINE


# -- spinrt --------------------------------------------------------------------------------


class SpinConn:
    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.chars = 0

    @classmethod
    async def open(cls, rt: Runtime) -> "SpinConn":
        with open(os.path.join(rt.home, "var", "runtime.json")) as f:
            port = json.load(f)["listening"][0]["port"]
        ws = await websocket_connect(HTTPRequest(f"ws://127.0.0.1:{port}/ws", headers={"Authorization": f"Bearer {TOKEN}"}),
                                     max_message_size=1 << 30)
        ws.protocol.set_nodelay(True)
        return cls(ws)

    async def request(self, op: str, **params: Any) -> dict[str, Any]:
        rid = uuid.uuid4().hex
        await self.ws.write_message(orjson.dumps({"id": rid, "op": op, **params}))
        while True:
            msg = orjson.loads(await self.ws.read_message())
            if msg.get("re") == rid:
                return msg

    async def drain(self, until: Any = None) -> None:
        """Count stdout characters until a run.finished (of `until`, if given)."""
        while True:
            msg = orjson.loads(await self.ws.read_message())
            ev = msg.get("event")
            if ev == "stream" and msg.get("name") == "stdout":
                self.chars += len(msg["text"])
            elif ev == "run.finished" and (until is None or msg.get("run") == until):
                return

    async def run(self, sid: str, code: str) -> None:
        await self.ws.write_message(orjson.dumps({"id": "r", "op": "cell.run", "session": sid,
                                                  "cell": {"type": "python", "source": code}}))
        await self.drain()


async def spin_throughput(mb: float, reps: int) -> list[tuple[float, int]]:
    rt = Runtime(pool=1)
    out = []
    try:
        await rt.connect()
        conn = await SpinConn.open(rt)
        sid = (await conn.request("session.create"))["session"]["id"]
        await conn.run(sid, "x = 1")
        for _ in range(reps):
            conn.chars = 0
            t = time.perf_counter()
            await conn.run(sid, source(mb))
            out.append((time.perf_counter() - t, conn.chars))
        conn.ws.close()
        return out
    finally:
        rt.stop()


async def spin_fanout(clients: int, mb: float) -> dict[str, Any]:
    rt = Runtime(pool=1)
    try:
        await rt.connect()
        driver = await SpinConn.open(rt)
        sid = (await driver.request("session.create"))["session"]["id"]
        await driver.run(sid, "x = 1")
        conns = [await SpinConn.open(rt) for _ in range(clients)]
        for c in conns:
            await c.request("session.attach", session=sid, since=10**12)
        t = time.perf_counter()
        done: list[float] = []

        async def one(c: SpinConn) -> None:
            await c.drain()
            done.append(time.perf_counter() - t)

        waits = [asyncio.ensure_future(one(c)) for c in conns]
        await driver.run(sid, source(mb))
        await asyncio.gather(*waits)
        for c in conns + [driver]:
            c.ws.close()
        return fanout_result(done, [c.chars for c in conns], mb)
    finally:
        rt.stop()


# -- Jupyter Server ------------------------------------------------------------------------


async def jupyter_channels(server: JupyterServer, kid: str) -> Any:
    ws = await websocket_connect(HTTPRequest(server.channels_url(kid), headers=server.headers),
                                 max_message_size=1 << 30)
    ws.protocol.set_nodelay(True)
    return ws


async def jupyter_drain(ws: Any, msg_id: str) -> tuple[int, bool]:
    """stdout characters of `msg_id`'s output until its reply and idle status; and whether
    Jupyter Server announced it dropped output."""
    chars, dropped, replied, idle = 0, False, False, False
    while not (replied and idle):
        # Once replied, idle follows at once; a bound in case the server withheld it.
        try:
            raw = await (asyncio.wait_for(ws.read_message(), 5) if replied else ws.read_message())
        except asyncio.TimeoutError:
            break
        msg = orjson.loads(raw)
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            text = msg["content"]["text"]
            if msg["content"]["name"] == "stdout":
                chars += len(text)
            elif "rate exceeded" in text:
                dropped = True
        elif msg["msg_type"] == "execute_reply":
            replied = True
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
    return chars, dropped


async def jupyter_execute(ws: Any, code: str) -> str:
    msg_id = uuid.uuid4().hex
    await ws.write_message(orjson.dumps(execute_request(msg_id, code)))
    return msg_id


async def jupyter_throughput(python: str, extra: list[str], mb: float, reps: int) -> list[tuple[float, int, bool]]:
    server = JupyterServer(python, extra)
    out = []
    try:
        await server.ready()
        kid, ws0 = await server.kernel()
        ws0.close()
        ws = await jupyter_channels(server, kid)
        await jupyter_drain(ws, await jupyter_execute(ws, "x = 1"))
        for _ in range(reps):
            await asyncio.sleep(SETTLE)
            t = time.perf_counter()
            chars, dropped = await jupyter_drain(ws, await jupyter_execute(ws, source(mb)))
            out.append((time.perf_counter() - t, chars, dropped))
        ws.close()
        return out
    finally:
        server.stop()



async def jupyter_fanout(python: str, clients: int, mb: float) -> dict[str, Any]:
    server = JupyterServer(python, LIFTED)
    try:
        await server.ready()
        kid, ws0 = await server.kernel()
        ws0.close()
        driver = await jupyter_channels(server, kid)
        await jupyter_drain(driver, await jupyter_execute(driver, "x = 1"))
        conns = [await jupyter_channels(server, kid) for _ in range(clients)]
        await asyncio.sleep(1.0)
        t = time.perf_counter()
        done: list[float] = []
        chars: list[int] = []
        msg_id = await jupyter_execute(driver, source(mb))

        async def one(ws: Any) -> None:
            # Every connection gets every iopub message (Jupyter broadcasts iopub).
            n, _ = await jupyter_drain_iopub(ws, msg_id)
            done.append(time.perf_counter() - t)
            chars.append(n)

        await asyncio.gather(jupyter_drain(driver, msg_id), *[one(ws) for ws in conns])
        for ws in conns + [driver]:
            ws.close()
        return fanout_result(done, chars, mb)
    finally:
        server.stop()


async def jupyter_drain_iopub(ws: Any, msg_id: str) -> tuple[int, bool]:
    """An observer's view (no execute_reply on its shell channel): until idle."""
    chars = 0
    while True:
        msg = orjson.loads(await ws.read_message())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout":
            chars += len(msg["content"]["text"])
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            return chars, False


def fanout_result(done: list[float], chars: list[int], mb: float) -> dict[str, Any]:
    want = expected(mb)
    return {"clients": len(done), "elapsed": max(done), "aggregate_mb_s": sum(chars) / max(done) / 1e6,
            "slowest_lag_s": max(done) - min(done), "incomplete": sum(1 for c in chars if c != want)}


def line(name: str, samples: list[tuple], mb: float) -> tuple[float, str]:
    want = expected(mb)
    rates = [s[1] / s[0] / 1e6 for s in samples]
    lost = [want - s[1] for s in samples]
    rate = statistics.median(rates)
    text = (f"  {name:34s} median {rate:6.1f} MB/s (runs {', '.join(f'{r:.1f}' for r in rates)}); "
            f"received {', '.join(f'{s[1] / 1e6:.2f}' for s in samples)} of {want / 1e6:.0f} MB; "
            f"lost {max(lost) / 1e6:.2f} MB at worst")
    return rate, text


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--jupyter-python", default=sys.executable)
    parser.add_argument("--fanout-clients", type=int, default=20)
    parser.add_argument("--fanout-mb", type=float, default=10)
    args = parser.parse_args()
    if not has_jupyter_server(args.jupyter_python):
        sys.exit(f"{args.jupyter_python} cannot import jupyter_server; pip install jupyter_server, or pass --jupyter-python")

    print(f"Python print throughput: {args.mb:.0f} MB to stdout, one client, {os.cpu_count()} CPUs")
    spin_rate, text = line("spinrt", await spin_throughput(args.mb, args.reps), args.mb)
    print(text, flush=True)
    lifted = await jupyter_throughput(args.jupyter_python, LIFTED, args.mb, args.reps)
    jl_rate, text = line("Jupyter Server, limits lifted", lifted, args.mb)
    print(text, flush=True)
    limited = await jupyter_throughput(args.jupyter_python, [], args.mb, args.reps)
    _, text = line("Jupyter Server, default limits", limited, args.mb)
    print(text + f"; announced 'rate exceeded': {any(s[2] for s in limited)}", flush=True)
    print(f"  spinrt / Jupyter Server (lifted)   {spin_rate / jl_rate:.2f}x (target >= 1.0x)")

    if args.fanout_clients > 0:
        print(f"fan-out: {args.fanout_clients} clients on one kernel, {args.fanout_mb:.0f} MB print output")
        for name, result in (("spinrt", await spin_fanout(args.fanout_clients, args.fanout_mb)),
                             ("Jupyter Server, limits lifted",
                              await jupyter_fanout(args.jupyter_python, args.fanout_clients, args.fanout_mb))):
            print(f"  {name:34s} {result['aggregate_mb_s']:6.1f} MB/s aggregate, all done in {result['elapsed']:.2f} s, "
                  f"slowest {result['slowest_lag_s'] * 1000:.0f} ms behind the first, incomplete: {result['incomplete']}",
                  flush=True)


if __name__ == "__main__":
    asyncio.run(main())
