"""Shell cells: round trip of `true` and stdout throughput, each against its floor.

    python bench/shell_bench.py [--reps 300] [--mb 200]

1. Round trip: ``cell.run`` of ``true`` until ``run.finished`` over the
   WebSocket, against a bare ``reactor.spawnProcess`` of ``bash -c true`` in
   this process (what the runtime cannot avoid doing).
2. Throughput: a cell printing N MB delivered to one client, against reading
   the same pipeline's stdout directly with a ProcessProtocol.
"""

from __future__ import annotations

import argparse
import subprocess
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import asyncioreactor  # noqa: E402

asyncioreactor.install()

from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.internet.protocol import ProcessProtocol  # noqa: E402

from bench.common import BenchClient, Daemon, report, summary  # noqa: E402

PIPELINE = "head -c {n} /dev/zero | tr '\\0' 'x' | fold -w 99"


class Drain(ProcessProtocol):
    def __init__(self) -> None:
        self.bytes = 0
        self.done: defer.Deferred[None] = defer.Deferred()

    def outReceived(self, data: bytes) -> None:
        self.bytes += len(data)

    def processEnded(self, reason: object) -> None:
        self.done.callback(None)


async def bare_spawn(argv: list[str]) -> Drain:
    drain = Drain()
    reactor.spawnProcess(drain, argv[0], argv, env=dict(os.environ), path=os.getcwd())
    await drain.done
    return drain


async def main(reps: int, megabytes: int) -> None:
    daemon = Daemon()
    try:
        url = await daemon.url()
        client = await BenchClient.connect(url)
        sid = (await client.request("session.create", name="bench"))["session"]["id"]
        bash = "/bin/bash"
        for _ in range(20):  # warm both paths
            await client.run(sid, {"type": "shell", "source": "true"})
            await bare_spawn([bash, "-c", "true"])
        ours, bare, sub = [], [], []
        load = [os.getloadavg()[0]]
        for _ in range(reps):  # interleaved so all three see the same machine noise
            t = time.perf_counter()
            finished = await client.run(sid, {"type": "shell", "source": "true"})
            ours.append((time.perf_counter() - t) * 1000)
            assert finished["status"] == "ok", finished
            t = time.perf_counter()
            await bare_spawn([bash, "-c", "true"])
            bare.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            subprocess.run([bash, "-c", "true"], check=True)
            sub.append((time.perf_counter() - t) * 1000)
        load.append(os.getloadavg()[0])
        o, b, s = summary(ours), summary(bare), summary(sub)
        report("shell round trip (`true`)", [
            ("spin-runtime cell.run -> run.finished", f"median {o['median']:.2f} ms  p99 {o['p99']:.2f} ms  (n={o['n']})"),
            ("bare spawnProcess(bash -c true)", f"median {b['median']:.2f} ms  p99 {b['p99']:.2f} ms"),
            ("subprocess.run(bash -c true)", f"median {s['median']:.2f} ms  p99 {s['p99']:.2f} ms"),
            ("ratio to spawnProcess (median)", f"{o['median'] / b['median']:.2f}x  (target <= 1.5x)"),
            ("ratio to subprocess.run (median)", f"{o['median'] / s['median']:.2f}x"),
            ("load average (1 min) before / after", " / ".join(f"{x:.1f}" for x in load)),
        ])
        if megabytes <= 0:
            client.close()
            return

        n = megabytes * 1000 * 1000
        script = PIPELINE.format(n=n)
        t = time.perf_counter()
        direct = await bare_spawn([bash, "-c", script])
        direct_s = time.perf_counter() - t
        rss_before = daemon.rss_mb()
        peak = [rss_before]

        def sample() -> None:
            peak[0] = max(peak[0], daemon.rss_mb())

        sampler = task.LoopingCall(sample)
        sampler.start(0.1)
        client.stream_chars = 0
        cpu_daemon, cpu_client = daemon.cpu_s(), time.process_time()
        t = time.perf_counter()
        finished = await client.run(sid, {"type": "shell", "source": script})
        ours_s = time.perf_counter() - t
        cpu_daemon, cpu_client = daemon.cpu_s() - cpu_daemon, time.process_time() - cpu_client
        sampler.stop()
        assert finished["status"] == "ok", finished
        if client.stream_chars != direct.bytes:
            raise SystemExit(f"LOST OUTPUT: client got {client.stream_chars} of {direct.bytes}")
        direct_rate = direct.bytes / direct_s / 1e6
        ours_rate = client.stream_chars / ours_s / 1e6
        report(f"stdout throughput ({megabytes} MB)", [
            ("read the pipe directly", f"{direct_rate:.0f} MB/s ({direct_s:.2f} s)"),
            ("through the runtime to one client", f"{ours_rate:.0f} MB/s ({ours_s:.2f} s), all {client.stream_chars} chars"),
            ("ratio", f"{ours_rate / direct_rate:.2f}x  (target >= 0.5x)"),
            ("runtime RSS", f"{rss_before:.0f} MB before, {peak[0]:.0f} MB peak"),
            ("CPU used", f"runtime {cpu_daemon:.2f} s, this client {cpu_client:.2f} s"),
        ])
        client.close()
    finally:
        await daemon.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=300)
    parser.add_argument("--mb", type=int, default=200)
    args = parser.parse_args()
    task.react(lambda _: defer.Deferred.fromCoroutine(main(args.reps, args.mb)))
