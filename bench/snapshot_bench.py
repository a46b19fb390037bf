"""session.snapshot and the run output route on a long history.

    python bench/snapshot_bench.py [--runs 1000] [--events-per-run 1000] [--text 200]

Builds a store holding one session of ``--runs`` runs, each
``--events-per-run`` events (queued, started, stream events of ``--text``
bytes, finished): 1M events and ~200 MB of output by default. Then starts
the real daemon on it (``twistd -n spin-runtime``, its own process) and
measures:

1. ``session.snapshot`` with the default 256 KiB per run: reply time, reply
   size, the runtime's resident memory before and at its peak while it built
   the reply (sampled every 10 ms), and the longest ``ping`` round trip a
   second connection saw meanwhile (how long the reactor could not answer
   anyone).
2. The same with ``max_output_bytes`` 1 KiB.
3. ``GET /api/sessions/<id>/runs/<run>/output`` of the last run and of the
   first: time to the whole body (the run index makes both independent of
   where the run sits in the log).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import asyncioreactor  # noqa: E402

asyncioreactor.install()

import treq  # noqa: E402
from twisted.internet import defer, task  # noqa: E402

from bench.common import TOKEN, BenchClient, Daemon, report, sleep  # noqa: E402
from spinrt import protocol as proto  # noqa: E402
from spinrt.sessions import schema  # noqa: E402

SID = "ss_bench"


def build_store(home: str, runs: int, per_run: int, text: int) -> tuple[int, int, list[str]]:
    """(events, output bytes, run ids) of the session written into ``home``'s store."""
    os.makedirs(os.path.join(home, "var"), exist_ok=True)
    conn = sqlite3.connect(os.path.join(home, "var", "spin.sqlite3"), isolation_level=None)
    conn.execute("PRAGMA page_size=16384")
    conn.execute("PRAGMA journal_mode=WAL")
    schema.migrate(conn)
    conn.execute("INSERT INTO sessions(id, name, created, state) VALUES (?, 'bench', '2026-01-01T00:00:00Z', 'open')",
                 (SID,))
    line = ("x" * (text - 1) + "\n")
    seq = 0
    output = 0
    ids = []
    conn.execute("BEGIN")
    for r in range(runs):
        run = f"run_{r:08x}"
        ids.append(run)
        rows = []

        def add(kind: str, **fields: object) -> None:
            nonlocal seq
            seq += 1
            rows.append((SID, seq, proto.encode(proto.event(kind, SID, seq, "2026-01-01T00:00:00.000Z", **fields))))

        add("run.queued", run=run, cell_id=f"c{r}", type="shell", by="owner")
        queued = seq
        add("run.started", run=run)
        conn.execute("INSERT INTO runs(id, session, state, queued_seq, started_seq) VALUES (?, ?, 'finished', ?, ?)",
                     (run, SID, queued, seq))
        for _ in range(per_run - 3):
            add("stream", run=run, name="stdout", text=line)
            output += text
        add("run.finished", run=run, status="ok", duration_ms=1)
        conn.executemany("INSERT INTO events(session, seq, body) VALUES (?, ?, ?)", rows)
    conn.execute("COMMIT")
    conn.close()
    return seq, output, ids


async def measure_snapshot(daemon: Daemon, client: BenchClient, pinger: BenchClient, **params: object) -> list[tuple[str, str]]:
    done = [False]
    longest = [0.0]
    peak = [daemon.rss_mb()]
    before = peak[0]

    async def pinging() -> None:
        while not done[0]:
            t = time.perf_counter()
            await pinger.request("ping")
            longest[0] = max(longest[0], (time.perf_counter() - t) * 1000)

    def sample() -> None:
        peak[0] = max(peak[0], daemon.rss_mb())

    sampler = task.LoopingCall(sample)
    sampler.start(0.01)
    pings = defer.Deferred.fromCoroutine(pinging())
    size = [0]
    original = client._message

    def measure(payload: bytes) -> None:
        size[0] = max(size[0], len(payload))
        original(payload)

    client._message = measure  # type: ignore[method-assign]
    t = time.perf_counter()
    reply = await client.request("session.snapshot", session=SID, **params)
    took = time.perf_counter() - t
    done[0] = True
    await pings
    sampler.stop()
    client._message = original  # type: ignore[method-assign]
    assert reply.get("ok"), reply
    shown = sum(r["truncated"]["bytes_shown"] for r in reply["runs"])
    return [
        ("reply time", f"{took:.2f} s"),
        ("reply size", f"{size[0] / 1e6:.1f} MB ({len(reply['runs'])} runs, {shown / 1e6:.1f} MB of output shown)"),
        ("runtime RSS before / peak", f"{before:.0f} MB / {peak[0]:.0f} MB (+{peak[0] - before:.0f} MB)"),
        ("longest ping meanwhile", f"{longest[0]:.1f} ms"),
    ]


async def main(reactor: object, args: argparse.Namespace) -> None:
    home = tempfile.mkdtemp(prefix="spin-bench-snapshot-")
    t = time.perf_counter()
    events, output, runs = build_store(home, args.runs, args.events_per_run, args.text)
    report("history", [("events", f"{events:,}"), ("output", f"{output / 1e6:.0f} MB"),
                       ("written in", f"{time.perf_counter() - t:.1f} s")])
    daemon = Daemon("--kernel-pool", "0", home=home)
    try:
        url = await daemon.url()
        client = await BenchClient.connect(url)
        pinger = await BenchClient.connect(url)
        await sleep(1.0)
        report("session.snapshot, 256 KiB per run (default)", await measure_snapshot(daemon, client, pinger))
        report("session.snapshot, 1 KiB per run",
               await measure_snapshot(daemon, client, pinger, max_output_bytes=1024))
        base = url.replace("ws://", "http://").rsplit("/", 1)[0]
        rows = []
        for label, run in (("first run", runs[0]), ("last run", runs[-1])):
            t = time.perf_counter()
            response = await treq.get(f"{base}/api/sessions/{SID}/runs/{run}/output",
                                      headers={"Authorization": f"Bearer {TOKEN}"})
            body = await response.content()
            rows.append((label, f"{(time.perf_counter() - t) * 1000:.0f} ms for {len(body) / 1e3:.0f} KB"))
        report("run output route", rows)
        client.close()
        pinger.close()
    finally:
        await daemon.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--events-per-run", type=int, default=1000)
    parser.add_argument("--text", type=int, default=200, help="bytes of text per stream event")
    task.react(lambda reactor: defer.Deferred.fromCoroutine(main(reactor, parser.parse_args())))
