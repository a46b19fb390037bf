"""Scale: many concurrent sessions each running a small shell cell loop.

    python bench/scale_bench.py [--sessions 200] [--duration 60] [--workers 4] [--idle 1000]
                                [--clients 500] [--history-kb 0] [--tail-memory BYTES] [--memory-only]

1. Memory per idle session: RSS growth over --idle new sessions without
   kernels (measured first, on a fresh daemon). Then --clients WebSocket
   clients (over --workers worker processes), each authenticated and
   attached to one of those sessions, held open while the runtime's
   resident memory (VmRSS) is read: before the sessions, after them, and
   with the clients connected (target: under 300 MB, issue 18). With
   --history-kb each idle session first runs a shell cell printing that
   many KB (what the sessions' in-memory tails would hold without the
   runtime's --tail-memory budget, which --tail-memory here passes on).
2. Load: --sessions clients (spread over --workers worker processes, so the
   clients' decoding does not share one Python thread here), each with its
   own session, run ``echo $RANDOM`` back to back for --duration seconds.
   Reports the runtime's RSS (start, peak, end) and CPU seconds, runs
   completed per second, per-run latency median/p99, and failed runs.
   Reference: the same loop with ONE session, in the same invocation (its
   latency is the no-contention floor; its rate the single-session rate).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import asyncioreactor  # noqa: E402

if "twisted.internet.reactor" not in sys.modules:
    asyncioreactor.install()

from twisted.internet import defer, protocol, reactor, stdio, task  # noqa: E402
from twisted.internet.utils import getProcessOutputAndValue  # noqa: E402

from bench.common import BenchClient, Daemon, report, sleep, summary  # noqa: E402

CELL = {"type": "shell", "source": "echo $RANDOM"}


async def loop_one(url: str, start_at: float, until: float) -> dict:
    """One client, one session: cell.run back to back until `until` (wall clock)."""
    c = await BenchClient.connect(url)
    sid = (await c.request("session.create"))["session"]["id"]
    while time.time() < start_at:
        await sleep(0.01)
    lat: list[float] = []
    failed = 0
    while time.time() < until:
        t = time.perf_counter()
        done = await c.run(sid, CELL)
        lat.append(time.perf_counter() - t)
        if done.get("status") != "ok":
            failed += 1
    c.close()
    return {"lat": lat, "failed": failed}


async def worker_main(url: str, clients: int, start_at: float, until: float) -> None:
    results = await defer.gatherResults([defer.Deferred.fromCoroutine(loop_one(url, start_at, until)) for _ in range(clients)])
    lat = [x for r in results for x in r["lat"]]
    print(json.dumps({"lat": lat, "failed": sum(r["failed"] for r in results)}), flush=True)


async def load(daemon: Daemon, url: str, sessions: int, workers: int, duration: float) -> dict:
    per = [sessions // workers + (1 if i < sessions % workers else 0) for i in range(workers)]
    per = [n for n in per if n]
    start_at = time.time() + 2.0 + sessions * 0.01  # every worker connected and has its session
    until = start_at + duration
    procs = [
        getProcessOutputAndValue(sys.executable, [__file__, "--worker", url, str(n), repr(start_at), repr(until)],
                                 env=dict(os.environ), reactor=reactor)
        for n in per
    ]
    while time.time() < start_at:
        await sleep(0.05)
    rss_start, cpu_start = daemon.rss_mb(), daemon.cpu_s()
    peak = [rss_start]
    sampler = task.LoopingCall(lambda: peak.__setitem__(0, max(peak[0], daemon.rss_mb())))
    sampler.start(0.2)
    while time.time() < until:
        await sleep(0.05)
    cpu_end = daemon.cpu_s()  # at the deadline; runs in flight finish after it
    results = await defer.gatherResults(procs)
    sampler.stop()
    await sleep(1.0)
    lat: list[float] = []
    failed = 0
    for out, err, code in results:
        if code != 0:
            raise RuntimeError(f"worker failed ({code}): {err.decode()[-2000:]}")
        data = json.loads(out.decode().strip().splitlines()[-1])
        lat += data["lat"]
        failed += data["failed"]
    return {
        "runs": len(lat), "runs_per_s": len(lat) / duration, "lat": summary(lat), "failed": failed,
        "rss_start": rss_start, "rss_peak": peak[0], "rss_end": daemon.rss_mb(), "cpu_s": cpu_end - cpu_start,
    }


async def idle_sessions(daemon: Daemon, url: str, count: int, history_kb: int = 0) -> dict:
    c = await BenchClient.connect(url)
    await c.request("session.create", name="warm-up")
    await sleep(0.5)
    before = daemon.rss_mb()
    sids = []
    for i in range(count):
        sid = (await c.request("session.create", name=f"idle {i}"))["session"]["id"]
        if history_kb:
            done = await c.run(sid, {"type": "shell", "source": f"head -c {history_kb * 1024} /dev/zero | tr '\\0' x"})
            if done.get("status") != "ok":
                raise RuntimeError(f"history cell failed: {done}")
        await c.request("session.detach", session=sid)
        sids.append(sid)
    await sleep(0.5)
    after = daemon.rss_mb()
    c.close()
    return {"kb": (after - before) * 1024 / count, "before": before, "after": after, "sids": sids}


class _Held(protocol.Protocol):
    """The parent closes a clients worker's stdin when it has measured: then it exits."""

    def __init__(self) -> None:
        self.gone: defer.Deferred[None] = defer.Deferred()

    def connectionLost(self, reason: object = None) -> None:
        self.gone.callback(None)


async def clients_worker(url: str, sids_file: str, count: int, first: int) -> None:
    """`count` clients, each authenticated and attached to one session (from
    `first` on, round robin); says so on stdout, then holds them open."""
    with open(sids_file) as f:
        sids = json.load(f)
    clients = []
    for i in range(count):
        c = await BenchClient.connect(url)
        reply = await c.request("session.attach", session=sids[(first + i) % len(sids)], since=0)
        if not reply.get("ok"):
            raise RuntimeError(f"attach failed: {reply}")
        clients.append(c)
    held = _Held()
    stdio.StandardIO(held)
    print(json.dumps({"ready": len(clients)}), flush=True)
    await held.gone
    for c in clients:
        c.close()


class _Worker(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ready: defer.Deferred[int] = defer.Deferred()
        self.ended: defer.Deferred[None] = defer.Deferred()
        self.out = b""
        self.err = b""

    def outReceived(self, data: bytes) -> None:
        self.out += data
        if not self.ready.called and b"\n" in self.out:
            self.ready.callback(json.loads(self.out.split(b"\n")[0])["ready"])

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: object) -> None:
        if not self.ready.called:
            self.ready.errback(RuntimeError(f"clients worker failed: {self.err.decode()[-2000:]}"))
        self.ended.callback(None)


async def connected_clients(daemon: Daemon, url: str, sids: list[str], clients: int, workers: int) -> dict:
    """RSS with `clients` clients connected and attached, spread over `workers` processes."""
    sids_file = os.path.join(daemon.home, "bench-sids.json")
    with open(sids_file, "w") as f:
        json.dump(sids, f)
    per = [clients // workers + (1 if i < clients % workers else 0) for i in range(workers)]
    procs, first = [], 0
    started = time.perf_counter()
    for n in (n for n in per if n):
        w = _Worker()
        w.transport = reactor.spawnProcess(
            w, sys.executable, [sys.executable, __file__, "--clients-worker", url, sids_file, str(n), str(first)],
            env=dict(os.environ))
        procs.append(w)
        first += n
    ready = sum(await defer.gatherResults([w.ready for w in procs]))
    seconds = time.perf_counter() - started
    await sleep(1.0)
    rss = daemon.rss_mb()
    for w in procs:
        w.transport.closeStdin()
    await defer.gatherResults([w.ended for w in procs])
    return {"clients": ready, "rss": rss, "connect_s": seconds}


def fmt(r: dict, duration: float) -> str:
    return (f"{r['runs_per_s']:.0f} runs/s ({r['runs']} runs, {r['failed']} failed); latency median "
            f"{r['lat']['median'] * 1000:.1f} ms / p99 {r['lat']['p99'] * 1000:.1f} ms; runtime CPU "
            f"{r['cpu_s']:.1f} s in {duration:.0f} s ({r['cpu_s'] / duration * 100:.0f}% of a core); RSS "
            f"{r['rss_start']:.0f} -> peak {r['rss_peak']:.0f} -> end {r['rss_end']:.0f} MB")


async def main(args: argparse.Namespace) -> None:
    daemon = Daemon(*(["--tail-memory", str(args.tail_memory)] if args.tail_memory is not None else []))
    try:
        url = await daemon.url()
        idle = await idle_sessions(daemon, url, args.idle, args.history_kb)
        kb = idle["kb"]
        held = await connected_clients(daemon, url, idle["sids"], args.clients, args.workers)
        memory = [
            ("memory per idle session", f"{kb:.1f} KB over {args.idle} sessions"
                                        f"{f' with {args.history_kb} KB of output each' if args.history_kb else ''}"
                                        " (target < 200 KB)"),
            ("runtime RSS (VmRSS)", f"{idle['before']:.0f} MB at start, {idle['after']:.0f} MB with {args.idle} "
                                    f"idle sessions, {held['rss']:.0f} MB with {held['clients']} clients attached "
                                    f"(target < 300 MB; clients connected in {held['connect_s']:.1f} s); "
                                    f"load average {os.getloadavg()[0]:.2f}"),
        ]
        if args.memory_only:
            report(f"scale: memory of {args.idle} idle sessions and {args.clients} clients, {os.cpu_count()} CPUs",
                   memory)
            return
        ref_s = min(10.0, args.duration)
        ref = await load(daemon, url, 1, 1, ref_s)
        many = await load(daemon, url, args.sessions, args.workers, args.duration)
        report(f"scale: {args.sessions} sessions x `echo $RANDOM` loop for {args.duration:.0f} s, {os.cpu_count()} CPUs", [
            *memory,
            (f"reference: 1 session, {ref_s:.0f} s", fmt(ref, ref_s)),
            (f"{args.sessions} sessions, {args.duration:.0f} s", fmt(many, args.duration)),
            ("ratio", f"throughput {many['runs_per_s'] / ref['runs_per_s']:.2f}x the single session; "
                      f"median latency {many['lat']['median'] / ref['lat']['median']:.1f}x"),
        ])
    finally:
        await daemon.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--clients-worker":
        url, sids_file, n, first = sys.argv[2:6]
        task.react(lambda _: defer.Deferred.fromCoroutine(clients_worker(url, sids_file, int(n), int(first))))
    elif len(sys.argv) > 1 and sys.argv[1] == "--worker":
        url, n, start_at, until = sys.argv[2:6]
        task.react(lambda _: defer.Deferred.fromCoroutine(worker_main(url, int(n), float(start_at), float(until))))
    else:
        parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--sessions", type=int, default=200)
        parser.add_argument("--duration", type=float, default=60.0)
        parser.add_argument("--workers", type=int, default=4)
        parser.add_argument("--idle", type=int, default=1000)
        parser.add_argument("--clients", type=int, default=500,
                            help="clients held attached to the idle sessions while RSS is read")
        parser.add_argument("--history-kb", type=int, default=0,
                            help="KB of shell output each idle session prints first")
        parser.add_argument("--tail-memory", type=int, default=None,
                            help="the runtime's --tail-memory (bytes; default: the runtime's own)")
        parser.add_argument("--memory-only", action="store_true",
                            help="only the idle sessions and clients, not the shell loop")
        args = parser.parse_args()
        task.react(lambda _: defer.Deferred.fromCoroutine(main(args)))
