"""What teams cost: the role check per request, token authentication, audit
rows (queued on the reactor, committed on the store's thread), pruning, and
a /metrics scrape. Prints one line per figure.

    .venv/bin/python bench/teams_bench.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from twisted.internet import asyncioreactor  # noqa: E402

asyncioreactor.install()

from twisted.internet import defer, reactor, task  # noqa: E402

from spinrt import protocol as proto  # noqa: E402
from spinrt import roles  # noqa: E402
from spinrt.audit import AuditTrail, target_of  # noqa: E402
from spinrt.metrics import RuntimeMetrics  # noqa: E402
from spinrt.sessions.store import EventStore  # noqa: E402
from spinrt.tokens import TokenRegistry  # noqa: E402


def per_call(fn, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n


def role_check(n: int) -> None:
    frames = {
        "ping": b'{"id": 1, "op": "ping"}',
        "cell.run": json.dumps({"id": 2, "op": "cell.run", "session": "ss_1",
                                "cell": {"id": "c1", "type": "shell", "source": "echo hi" * 20}}).encode(),
    }

    def authorize(op, message, rid):
        needed = roles.required(op, message)
        if not roles.allows("editor", needed):
            raise proto.ProtocolError(proto.FORBIDDEN, "no", rid)

    for op, frame in frames.items():
        bare = per_call(lambda: proto.parse_request(frame), n)
        checked = per_call(lambda: proto.parse_request(frame, authorize=authorize), n)
        print(f"role check, {op}: parse {bare * 1e6:.2f} us, parse + role check {checked * 1e6:.2f} us "
              f"(+{(checked - bare) * 1e9:.0f} ns)")
    message = json.loads(frames["cell.run"])
    only = per_call(lambda: roles.allows("runner", roles.required("cell.run", message)), n)
    print(f"role check alone (cell.run, a rule of the request's form): {only * 1e9:.0f} ns")


def tokens(n: int) -> None:
    registry = TokenRegistry("owner-token-" + "x" * 40)
    secrets = [registry.create(f"user{i}", "runner")[1] for i in range(100)]
    named = per_call(lambda: registry.authenticate(secrets[7]), n)
    owner = per_call(lambda: registry.authenticate("owner-token-" + "x" * 40), n)
    wrong = per_call(lambda: registry.authenticate("spin.tk0000000000000000." + "a" * 43), n)
    print(f"token check: SPIN_TOKEN {owner * 1e6:.2f} us, a named token {named * 1e6:.2f} us, "
          f"a wrong one {wrong * 1e6:.2f} us (100 named tokens)")


async def audit(rows: int) -> None:
    home = tempfile.mkdtemp(prefix="spin-bench-")
    store = EventStore(os.path.join(home, "spin.sqlite3"), reactor)
    store.open_sync()
    store.start()
    clock = [time.time() - 200 * 86400]
    trail = AuditTrail(store, reactor, retention_days=90, wallclock=lambda: clock[0])
    identity = TokenRegistry("t").authenticate("t")
    target = target_of({"session": "ss_0123456789abcdef", "cell_id": "restart-db"})
    started = time.perf_counter()
    queued_time = 0.0
    for i in range(rows):
        if i == rows // 2:
            clock[0] = time.time()  # the second half is recent
        t0 = time.perf_counter()
        trail.record("cell.run", identity=identity, client="10.1.4.22", target=target)
        queued_time += time.perf_counter() - t0
        if i % 5000 == 4999:
            await task.deferLater(reactor, 0, lambda: None)  # let the store's batches go
    await store.drain()
    elapsed = time.perf_counter() - started
    print(f"audit rows: {rows} queued at {queued_time / rows * 1e6:.2f} us each on the reactor thread; "
          f"committed at {rows / elapsed:,.0f} rows/s end to end")
    t0 = time.perf_counter()
    page = await trail.page(limit=1000, cursor=rows // 3)
    print(f"GET /api/audit page of {len(page)} rows: {(time.perf_counter() - t0) * 1e3:.1f} ms")
    longest = [0.0]
    ticking = task.LoopingCall(lambda: None)
    last = [time.perf_counter()]

    def tick() -> None:
        now = time.perf_counter()
        longest[0] = max(longest[0], now - last[0])
        last[0] = now

    ticking.f = tick
    ticking.start(0.001)
    t0 = time.perf_counter()
    pruned = await trail.prune()
    took = time.perf_counter() - t0
    ticking.stop()
    print(f"pruning {pruned} rows: {took:.2f} s on the store thread; longest reactor gap meanwhile "
          f"{longest[0] * 1e3:.1f} ms")
    await store.close()


def scrape(n: int) -> None:
    state = {"connections": 20, "sessions_open": 50, "sessions_closed": 500, "runs_queued": 3, "runs_running": 2,
             "store_pending_bytes": 0, "store_pending_changes": 0, "store_writable": True,
             "kernels": {"alive": 10, "starting": 0, "pooled": 1}, "tokens": 4}
    metrics = RuntimeMetrics(lambda: state, ["python", "shell", "ssh", "rest", "llm", "markdown"])
    for i in range(1000):
        metrics.run_started("shell")
        metrics.run_finished("shell", "ok", i / 100)
    body, _ = metrics.exposition(None)
    took = per_call(lambda: metrics.exposition(None), n)
    print(f"/metrics exposition: {took * 1e3:.2f} ms for {len(body)} bytes")


async def main(reactor_: object, args: argparse.Namespace) -> None:
    role_check(args.n)
    tokens(args.n)
    scrape(200)
    await audit(args.rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--n", type=int, default=100_000)
    options = parser.parse_args()
    task.react(lambda r: defer.ensureDeferred(main(r, options)))
