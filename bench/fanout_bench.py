"""Fan-out, replay, slow consumer and idle-session memory.

    python bench/fanout_bench.py [--clients 100] [--mb 20] [--fanout-rounds 3] [--no-jupyter]
                                 [--fanout-only] [--events 1000000]

1. Fan-out: N clients attached to one session receive an M MB shell output
   (PIPELINE); aggregate delivery rate, the slowest client's lag behind the
   first, and how much any client missed. References, same invocation: one
   client; and Jupyter Server (a real ``jupyter server``, iopub limits lifted)
   with N connections to one kernel's channels, the same pipeline run as a
   ``!`` command in a cell; ours and Jupyter's in turn, --fanout-rounds times.
2. Slow consumer: one client that reads nothing while another receives
   200 MB; runtime RSS growth and the fast client's rate against the same
   transfer without the slow client.
3. Replay: a client attaching with since=0 to a session of E events; events
   per second while catching up.
4. Memory per idle session: RSS growth for 1000 new sessions without kernels.

Clients live in worker processes (``--workers``), so the clients' JSON
decoding does not compete with one Python thread here.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import asyncioreactor  # noqa: E402

if "twisted.internet.reactor" not in sys.modules:
    asyncioreactor.install()

from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.internet.protocol import ProcessProtocol  # noqa: E402

from bench.common import (JUPYTER_LIFTED, PIPELINE, BenchClient, Daemon, JupyterServer, KernelChannels,  # noqa: E402
                          add_compete_option, add_jupyter_options, aio, competing, pipeline_bytes, report,
                          require_jupyter_server, sleep)

QUIET = 30.0  # s without a message after which a Jupyter client is given up on


class Workers(ProcessProtocol):
    """One worker process of clients: `ready` fires when it printed ``ready`` (all its
    clients connected), `result` with the JSON of its last line when it exits."""

    def __init__(self, *argv: str) -> None:
        self.out, self.err = b"", b""
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.result: defer.Deferred[dict] = defer.Deferred()
        reactor.spawnProcess(self, sys.executable, [sys.executable, __file__, *argv], env=dict(os.environ))

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if not self.ready.called and b"ready\n" in self.out:
            self.ready.callback(None)

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: object) -> None:
        try:
            result = json.loads(self.out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            failure = RuntimeError("a bench worker failed:\n" + self.err.decode(errors="replace")[-3000:])
            if not self.ready.called:
                self.ready.errback(failure)
            self.result.errback(failure)
            return
        self.result.callback(result)


def spread(clients: int, workers: int) -> list[int]:
    return [n for n in (clients // workers + (1 if i < clients % workers else 0) for i in range(workers)) if n]


async def worker_main(url: str, sid: str, clients: int, until_seq_file: str) -> None:
    """In a worker process: attach `clients` connections, report when each has
    every event up to the run.finished whose seq is written to `until_seq_file`."""
    conns = [await BenchClient.connect(url) for _ in range(clients)]
    for c in conns:
        await c.request("session.attach", session=sid, since=10**12)
    print("ready", flush=True)
    while not os.path.exists(until_seq_file) or not open(until_seq_file).read().strip():
        await sleep(0.01)
    target = int(open(until_seq_file).read())
    done_at: list[float] = []
    for c in conns:
        while c.last_seq < target:
            await sleep(0.002)
        done_at.append(time.time())
    print(json.dumps({"done": done_at, "chars": [c.stream_chars for c in conns]}), flush=True)


async def jupyter_worker_main(url: str, msg_id: str, clients: int) -> None:
    """In a worker process: `clients` connections to one kernel's channels, each
    done at the idle status of `msg_id`. Jupyter Server may drop iopub messages
    (ZMQ's high-water marks), the idle status too: a connection that has had
    nothing of `msg_id` for QUIET s is given up on and reported."""
    conns = [await KernelChannels.connect(url, msg_id) for _ in range(clients)]
    print("ready", flush=True)
    waiting_since = time.time()
    while any(c.done_at is None for c in conns):
        await sleep(0.05)
        if all(time.time() - max(c.last_at, waiting_since) > QUIET for c in conns if c.done_at is None):
            break
    print(json.dumps({"done": [c.done_at or c.last_at or time.time() for c in conns], "xs": [c.xs for c in conns],
                      "no_idle": sum(1 for c in conns if c.done_at is None)}), flush=True)


def fanout_result(start: float, done: list[float], received: list[int], expected: int, **extra: int) -> dict:
    """`received`: each client's bytes of the pipeline's output (all of it: `expected`)."""
    elapsed = max(done) - start
    return {"clients": len(done), "elapsed": elapsed, "aggregate_mb_s": sum(received) / elapsed / 1e6,
            "slowest_lag_s": max(done) - min(done), "incomplete": sum(1 for r in received if r != expected),
            "missing_mb": sum(expected - r for r in received) / 1e6, **extra}


async def fanout(url: str, clients: int, megabytes: int, workers: int) -> dict:
    driver = await BenchClient.connect(url)
    sid = (await driver.request("session.create", name="fanout"))["session"]["id"]
    flag = f"/tmp/fanout-{sid}"
    procs = [Workers("--worker", url, sid, str(n), flag) for n in spread(clients, workers)]
    await defer.gatherResults([p.ready for p in procs])
    n = megabytes * 1000 * 1000
    start = time.time()
    finished = await driver.run(sid, {"type": "shell", "source": PIPELINE.format(n=n)})
    with open(flag, "w") as f:
        f.write(str(finished["seq"]))
    results = await defer.gatherResults([p.result for p in procs])
    driver.close()
    os.unlink(flag)
    return fanout_result(start, sum((r["done"] for r in results), []), sum((r["chars"] for r in results), []),
                         pipeline_bytes(n))


async def jupyter_fanout(server: JupyterServer, kid: str, clients: int, megabytes: int, workers: int) -> dict:
    """The same output on Jupyter Server: `clients` connections to one kernel's channels
    (spread over worker processes like ours), the pipeline run as a `!` command in a cell."""
    url = server.channels_url(kid)
    driver = await KernelChannels.connect(url)
    await driver.execute("x = 1")
    msg_id = uuid.uuid4().hex
    procs = [Workers("--jupyter-worker", url, msg_id, str(n)) for n in spread(clients, workers)]
    await defer.gatherResults([p.ready for p in procs])
    n = megabytes * 1000 * 1000
    start = time.time()
    # Not awaited: should Jupyter Server drop even the driver's idle status, the
    # workers still end (QUIET).
    driver.execute("!" + PIPELINE.format(n=n), msg_id)
    results = await defer.gatherResults([p.result for p in procs])
    driver.close()
    full = pipeline_bytes(n)
    # 'x' counted (the pty made each line end \r\n); as bytes of the pipeline's own output:
    received = [full if xs == n else round(xs * full / n) for r in results for xs in r["xs"]]
    return fanout_result(start, sum((r["done"] for r in results), []), received, full,
                         no_idle=sum(r["no_idle"] for r in results))


def fanout_line(r: dict) -> str:
    text = (f"{r['aggregate_mb_s']:.0f} MB/s aggregate, all done in {r['elapsed']:.2f} s, "
            f"slowest client {r['slowest_lag_s'] * 1000:.0f} ms behind the first, ")
    if not r["incomplete"]:
        return text + "every client got every character"
    text += f"INCOMPLETE: {r['incomplete']} of {r['clients']} clients, {r['missing_mb']:.2f} MB missing in all"
    if r.get("no_idle"):
        text += f", {r['no_idle']} never got the idle status"
    return text


async def slow_consumer(daemon: Daemon, url: str, megabytes: int) -> dict:
    n = megabytes * 1000 * 1000
    rates = []
    for with_slow in (False, True):
        fast = await BenchClient.connect(url)
        sid = (await fast.request("session.create"))["session"]["id"]
        slow = None
        if with_slow:
            slow = await BenchClient.connect(url)
            await slow.request("session.attach", session=sid)
            slow.proto.transport.pauseProducing()
        base = daemon.rss_mb()
        peak = [base]
        sampler = task.LoopingCall(lambda: peak.__setitem__(0, max(peak[0], daemon.rss_mb())))
        sampler.start(0.1)
        t = time.perf_counter()
        await fast.run(sid, {"type": "shell", "source": PIPELINE.format(n=n)})
        rates.append(fast.stream_chars / (time.perf_counter() - t) / 1e6)
        sampler.stop()
        growth = peak[0] - base
        fast.close()
        if slow is not None:
            slow.proto.transport.loseConnection()
    return {"alone_mb_s": rates[0], "with_slow_mb_s": rates[1], "rss_growth_mb": growth}


def seed_replay_home(events: int) -> tuple[str, str]:
    """A SPIN_HOME whose store holds one session of `events` stream events,
    written straight into SQLite (building it through cells would take hours)."""
    import sqlite3
    import tempfile

    from spinrt.protocol import encode, event
    from spinrt.sessions.schema import migrate

    home = tempfile.mkdtemp(prefix="spin-bench-replay-")
    os.makedirs(os.path.join(home, "var"))
    conn = sqlite3.connect(os.path.join(home, "var", "spin.sqlite3"), isolation_level=None)
    conn.execute("PRAGMA page_size=16384")
    conn.execute("PRAGMA journal_mode=WAL")
    migrate(conn)
    sid = "ss_replay"
    conn.execute("INSERT INTO sessions(id, name, created) VALUES (?, 'replay', '2026-01-01T00:00:00.000Z')", (sid,))
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO events(session, seq, body) VALUES (?, ?, ?)", (
        (sid, seq, encode(event("stream", sid, seq, "2026-01-01T00:00:00.000Z", run="run_x", name="stdout",
                                text=f"line {seq} " + "x" * 90 + "\n")))
        for seq in range(1, events + 1)
    ))
    conn.execute("COMMIT")
    conn.close()
    return home, sid


def read_rows(home: str, sid: str) -> float:
    """The reference: SQLite alone reading the same rows in the same order
    (what the runtime's store thread runs), rows per second."""
    import sqlite3

    conn = sqlite3.connect(os.path.join(home, "var", "spin.sqlite3"))
    t = time.perf_counter()
    n = 0
    for _seq, _body in conn.execute("SELECT seq, body FROM events WHERE session = ? AND seq > ? ORDER BY seq", (sid, 0)):
        n += 1
    elapsed = time.perf_counter() - t
    conn.close()
    return n / elapsed


async def replay(events: int, rounds: int = 3) -> dict:
    """Attach since=0 `rounds` times, each next to SQLite reading the same rows
    (interleaved: SQLite, replay, SQLite, ...); medians."""
    home, sid = seed_replay_home(events)
    daemon = Daemon(home=home)
    rates: list[float] = []
    sqlite: list[float] = []
    load = [os.getloadavg()[0]]
    try:
        url = await daemon.url()
        rss_before = daemon.rss_mb()
        rss_peak = rss_before
        for _ in range(rounds):
            sqlite.append(read_rows(home, sid))
            reader = await BenchClient.connect(url)
            t = time.perf_counter()
            await reader.request("session.attach", session=sid, since=0)
            while reader.last_seq < events:
                await sleep(0.005)
                rss_peak = max(rss_peak, daemon.rss_mb())
            rates.append(events / (time.perf_counter() - t))
            reader.close()
            await sleep(0.5)
        sqlite.append(read_rows(home, sid))
        load.append(os.getloadavg()[0])
    finally:
        await daemon.stop()
        shutil.rmtree(home, ignore_errors=True)  # ~270 MB for 1M events
    rate, ref = statistics.median(rates), statistics.median(sqlite)
    return {"events": events, "events_per_s": rate, "sqlite_rows_per_s": ref, "ratio": rate / ref,
            "rates": rates, "sqlite": sqlite, "load": load, "rss_before": rss_before, "rss_peak": rss_peak}


def replay_report(rp: dict) -> None:
    report(f"replay: attach since=0 to {rp['events']} events, median of {len(rp['rates'])} rounds", [
        ("catch-up", f"{rp['events_per_s']:.0f} events/s (rounds: {', '.join(f'{r:.0f}' for r in rp['rates'])}; target >= 100k/s)"),
        ("SQLite alone, same rows (interleaved)", f"{rp['sqlite_rows_per_s']:.0f} rows/s "
                                                  f"(rounds: {', '.join(f'{r:.0f}' for r in rp['sqlite'])})"),
        ("replay / SQLite", f"{rp['ratio']:.3f}"),
        ("runtime RSS", f"{rp['rss_before']:.0f} MB before, peak {rp['rss_peak']:.0f} MB"),
        ("load average (1 min) before / after", " / ".join(f"{x:.1f}" for x in rp["load"])),
    ])


async def idle_sessions(daemon: Daemon, url: str, count: int) -> dict:
    c = await BenchClient.connect(url)
    before = daemon.rss_mb()
    for i in range(count):
        sid = (await c.request("session.create", name=f"idle {i}"))["session"]["id"]
        await c.request("session.detach", session=sid)
    await sleep(0.5)
    after = daemon.rss_mb()
    c.close()
    return {"sessions": count, "kb_per_session": (after - before) * 1024 / count}


async def fanout_part(url: str, args: argparse.Namespace) -> None:
    """One client, then N clients on spinrt and on Jupyter Server interleaved
    (ours, Jupyter, ours, ...) for --fanout-rounds; medians."""
    server = None
    if args.jupyter:
        server = JupyterServer(args.jupyter_python, JUPYTER_LIFTED)
    try:
        if server is not None:
            await aio(server.ready())
            kid = await aio(server.start_kernel())
        load = [os.getloadavg()[0]]
        single = await fanout(url, 1, args.mb, 1)
        their_single = await jupyter_fanout(server, kid, 1, args.mb, 1) if server is not None else None
        ours, theirs = [], []
        for _ in range(args.fanout_rounds):
            ours.append(await fanout(url, args.clients, args.mb, args.workers))
            if server is not None:
                theirs.append(await jupyter_fanout(server, kid, args.clients, args.mb, args.workers))
        load.append(os.getloadavg()[0])
    finally:
        if server is not None:
            server.stop()

    def median(results: list[dict]) -> dict:
        """The round of median aggregate rate (its other figures with it)."""
        return sorted(results, key=lambda r: r["aggregate_mb_s"])[(len(results) - 1) // 2]

    rounds = f"median of {args.fanout_rounds} rounds, " if args.fanout_rounds > 1 else ""
    rows = [("spinrt, 1 client", fanout_line(single)),
            (f"spinrt, {args.clients} clients", fanout_line(median(ours)))]
    if theirs:
        rows += [("Jupyter Server, 1 client", fanout_line(their_single)),
                 (f"Jupyter Server, {args.clients} clients", fanout_line(median(theirs)))]
        ratio = statistics.median(o["aggregate_mb_s"] / t["aggregate_mb_s"] for o, t in zip(ours, theirs))
        rows.append(("spinrt / Jupyter Server (aggregate)", f"{ratio:.2f}x"))
    if args.fanout_rounds > 1:
        rows.append(("rounds, aggregate MB/s", "spinrt " + ", ".join(f"{r['aggregate_mb_s']:.0f}" for r in ours)
                     + ("; Jupyter Server " + ", ".join(f"{r['aggregate_mb_s']:.0f}" for r in theirs) if theirs else "")))
    rows.append(("load average (1 min) before / after", " / ".join(f"{x:.1f}" for x in load)))
    report(f"fan-out: {args.mb} MB shell output, {rounds}{os.cpu_count()} CPUs", rows)


async def main(args: argparse.Namespace) -> None:
    if args.replay_only:
        replay_report(await replay(args.events, args.rounds))
        return
    daemon = Daemon()
    try:
        url = await daemon.url()
        await fanout_part(url, args)
        if args.fanout_only:
            return
        slow = await slow_consumer(daemon, url, args.slow_mb)
        report(f"slow consumer: {args.slow_mb} MB to one client while another reads nothing", [
            ("fast client alone", f"{slow['alone_mb_s']:.0f} MB/s"),
            ("fast client with a stuck client attached", f"{slow['with_slow_mb_s']:.0f} MB/s "
                                                          f"({slow['with_slow_mb_s'] / slow['alone_mb_s']:.2f}x, target >= 0.8x)"),
            ("runtime RSS growth", f"{slow['rss_growth_mb']:.0f} MB (target < 150 MB)"),
        ])
        rp = await replay(args.events, args.rounds)
        replay_report(rp)
        idle = await idle_sessions(daemon, url, 1000)
        report("idle sessions", [("memory per session", f"{idle['kb_per_session']:.0f} KB (target < 200 KB)")])
    finally:
        await daemon.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, sid, n, flag = sys.argv[2:6]
        task.react(lambda _: defer.Deferred.fromCoroutine(worker_main(url, sid, int(n), flag)))
    elif len(sys.argv) > 1 and sys.argv[1] == "--jupyter-worker":
        url, msg_id, n = sys.argv[2:5]
        task.react(lambda _: defer.Deferred.fromCoroutine(jupyter_worker_main(url, msg_id, int(n))))
    else:
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--clients", type=int, default=100)
        parser.add_argument("--workers", type=int, default=4)
        parser.add_argument("--mb", type=int, default=20)
        parser.add_argument("--fanout-rounds", type=int, default=3,
                            help="fan-out rounds, ours and Jupyter's in turn (median)")
        add_jupyter_options(parser, "the fan-out")
        add_compete_option(parser)
        parser.add_argument("--fanout-only", action="store_true", help="only the fan-out part")
        parser.add_argument("--slow-mb", type=int, default=200)
        parser.add_argument("--events", type=int, default=1_000_000)
        parser.add_argument("--rounds", type=int, default=3, help="replay rounds (median)")
        parser.add_argument("--replay-only", action="store_true", help="only the replay part")
        args = parser.parse_args()
        if args.jupyter and not args.replay_only:
            require_jupyter_server(args.jupyter_python)
        with competing(args.compete):
            task.react(lambda _: defer.Deferred.fromCoroutine(main(args)))
