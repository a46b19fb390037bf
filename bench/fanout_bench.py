"""Fan-out, replay, slow consumer and idle-session memory.

    python bench/fanout_bench.py [--clients 100] [--mb 20] [--events 1000000]

1. Fan-out: N clients attached to one session receive an M MB shell output;
   aggregate delivery rate and the slowest client's lag behind the first.
   Reference: one client receiving the same output, in the same invocation.
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
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import asyncioreactor  # noqa: E402

if "twisted.internet.reactor" not in sys.modules:
    asyncioreactor.install()

from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.internet.utils import getProcessOutputAndValue  # noqa: E402

from bench.common import BenchClient, Daemon, report, sleep  # noqa: E402

PIPELINE = "head -c {n} /dev/zero | tr '\\0' 'x' | fold -w 99"


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


async def fanout(url: str, clients: int, megabytes: int, workers: int) -> dict:
    driver = await BenchClient.connect(url)
    sid = (await driver.request("session.create", name="fanout"))["session"]["id"]
    flag = f"/tmp/fanout-{sid}"
    per = [clients // workers + (1 if i < clients % workers else 0) for i in range(workers)]
    procs = [
        getProcessOutputAndValue(sys.executable, [__file__, "--worker", url, sid, str(n), flag], env=dict(os.environ), reactor=reactor)
        for n in per if n
    ]
    await sleep(1.0 + clients * 0.01)  # let every worker attach
    n = megabytes * 1000 * 1000
    start = time.time()
    finished = await driver.run(sid, {"type": "shell", "source": PIPELINE.format(n=n)})
    with open(flag, "w") as f:
        f.write(str(finished["seq"]))
    results = await defer.gatherResults(procs)
    done: list[float] = []
    chars: list[int] = []
    for out, err, code in results:
        data = json.loads(out.decode().strip().splitlines()[-1])
        done += data["done"]
        chars += data["chars"]
    expected = n + n // 99
    lost = [c for c in chars if c != expected]
    elapsed = max(done) - start
    driver.close()
    os.unlink(flag)
    return {
        "clients": len(done), "elapsed": elapsed, "aggregate_mb_s": expected * len(done) / elapsed / 1e6,
        "slowest_lag_s": max(done) - min(done), "incomplete": len(lost),
    }


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
    import statistics

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


async def main(args: argparse.Namespace) -> None:
    if args.replay_only:
        replay_report(await replay(args.events, args.rounds))
        return
    daemon = Daemon()
    try:
        url = await daemon.url()
        single = await fanout(url, 1, args.mb, 1)
        many = await fanout(url, args.clients, args.mb, args.workers)
        report(f"fan-out: {args.mb} MB shell output", [
            ("1 client", f"{single['aggregate_mb_s']:.0f} MB/s"),
            (f"{many['clients']} clients", f"{many['aggregate_mb_s']:.0f} MB/s aggregate, all done in {many['elapsed']:.2f} s, "
                                          f"slowest client {many['slowest_lag_s'] * 1000:.0f} ms behind the first, incomplete: {many['incomplete']}"),
            ("reference (Jupyter Server, 20 clients)", "100-150 MB/s aggregate (DESIGN.md)"),
        ])
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
    else:
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--clients", type=int, default=100)
        parser.add_argument("--workers", type=int, default=4)
        parser.add_argument("--mb", type=int, default=20)
        parser.add_argument("--slow-mb", type=int, default=200)
        parser.add_argument("--events", type=int, default=1_000_000)
        parser.add_argument("--rounds", type=int, default=3, help="replay rounds (median)")
        parser.add_argument("--replay-only", action="store_true", help="only the replay part")
        args = parser.parse_args()
        task.react(lambda _: defer.Deferred.fromCoroutine(main(args)))
