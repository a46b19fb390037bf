"""Memory stays bounded however many sessions and however much output
(issue 18): one budget for all sessions' tails, and a store that spills its
backlog to disk instead of holding it in memory."""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import Clock, deferLater
from twisted.trial import unittest

from spinrt.sessions import session as session_module
from spinrt.sessions import spool as spool_module
from spinrt.sessions.manager import SessionManager
from spinrt.sessions.session import Session
from spinrt.sessions.store import EventStore
from spinrt.sessions.tails import TailBudget

from .test_session_unit import FakeStore, ScriptedExecutor, Sink
from .support import eventually
from .test_store import store_path

KIB = 1024
MIB = 1024 * KIB


def fake_sessions(store: FakeStore, budget: TailBudget, n: int) -> list[Session]:
    return [Session(id=f"ss_{i}", name=str(i), created="now", store=store, clock=Clock(),
                    executor=ScriptedExecutor(), wallclock=lambda: 0.0, tails=budget)
            for i in range(n)]


def tail_seqs(session: Session) -> list[int]:
    return [seq for seq, _ in session._tail]


class TailBudgetTests(unittest.TestCase):
    def test_the_cap_holds_over_many_sessions_and_keeps_every_uncommitted_event(self) -> None:
        store = FakeStore()
        budget = TailBudget(limit=256 * KIB)
        sessions = fake_sessions(store, budget, 300)
        text = "x" * 900  # ~1 KiB frames
        for round_ in range(20):
            for s in sessions:
                s.emit("stream", run="r", name="stdout", text=text)
            # Before the commit: every event the store has not committed is
            # still in memory, whatever the budget says.
            for s in sessions:
                flushed = store.flushed_seq(s.id)
                self.assertEqual([q for q in tail_seqs(s) if q > flushed],
                                 list(range(flushed + 1, s.last_seq + 1)))
            store.flush()
            budget.committed()
            self.assertLessEqual(budget.total, budget.limit, round_)
            self.assertEqual(budget.total, sum(s.tail_bytes for s in sessions))
        # 300 x 20 KiB were appended; the budget kept a tenth of it.
        self.assertEqual(sum(s.last_seq for s in sessions), 6000)

    def test_the_least_recently_appended_sessions_give_up_their_tails_first(self) -> None:
        store = FakeStore()
        budget = TailBudget(limit=64 * KIB)
        old, busy = fake_sessions(store, budget, 2)
        for _ in range(30):
            old.emit("stream", run="r", name="stdout", text="o" * 1000)
        store.flush()
        for _ in range(30):
            busy.emit("stream", run="r", name="stdout", text="b" * 1000)
        store.flush()
        budget.committed()
        self.assertLessEqual(budget.total, budget.limit)
        self.assertEqual(tail_seqs(busy), list(range(1, 31)))  # all of it still in memory
        self.assertLess(len(tail_seqs(old)), 30)

    def test_attach_since_0_after_trimming_delivers_every_event_in_order(self) -> None:
        store = FakeStore()
        budget = TailBudget(limit=32 * KIB)
        sessions = fake_sessions(store, budget, 10)
        for i in range(50):
            for s in sessions:
                s.emit("stream", run="r", name="stdout", text=f"{i}:" + "y" * 700)
            if i % 7 == 0:
                store.flush()
                budget.committed()
        first = sessions[0]
        self.assertIsNone(first.tail_from(1))  # its oldest events left memory
        reads = store.reads
        sink = Sink()
        first.subscribe(sink, 0)
        self.assertEqual(sink.seqs(), list(range(1, 51)))
        self.assertEqual([f["text"].split(":")[0] for f in sink.frames], [str(i) for i in range(50)])
        self.assertGreater(store.reads, reads)  # the early ones came from the store

    def test_a_deleted_session_stops_counting(self) -> None:
        budget = TailBudget(limit=10 * MIB)
        store = FakeStore()
        a, b = fake_sessions(store, budget, 2)
        a.emit("ping")
        b.emit("ping")
        budget.forget(a)
        self.assertEqual(budget.total, b.tail_bytes)
        a.emit("ping")  # a stray event of a deleted session is not counted
        self.assertEqual(budget.total, b.tail_bytes)


class RealStoreTailTests(unittest.TestCase):
    timeout = 60

    async def test_manager_budget_with_a_real_store_and_replay_from_it(self) -> None:
        store = EventStore(store_path(), reactor)
        manager = SessionManager(store, ScriptedExecutor(), {}, reactor, tail_memory=512 * KIB)
        manager.restore_sync()
        store.start()
        self.addCleanup(store.close)
        sessions = [manager.create(name=f"s{i}") for i in range(100)]
        for i in range(40):
            for s in sessions:
                s.emit("stream", run="r", name="stdout", text=f"{i}:" + "z" * 400)
            await deferLater(reactor, 0.001, lambda: None)
        await store.drain()
        self.assertLessEqual(manager.tails.total, 512 * KIB)
        self.assertEqual(manager.tails.total, sum(s.tail_bytes for s in sessions))
        first = sessions[0]
        self.assertIsNone(first.tail_from(1))
        sink = Sink()
        first.subscribe(sink, 0)
        await eventually(lambda: len(sink.frames) == first.last_seq)
        self.assertEqual(sink.seqs(), list(range(1, first.last_seq + 1)))
        texts = [f["text"].split(":")[0] for f in sink.frames if f["event"] == "stream"]
        self.assertEqual(texts, [str(i) for i in range(40)])


def slow_writer(store: EventStore, delay: float) -> None:
    """The store's thread takes ``delay`` more seconds per batch (a slow disk)."""
    write = store._write_sync

    def slowly(batch: list[tuple[Any, ...]]) -> Any:
        time.sleep(delay)
        return write(batch)

    store._write_sync = slowly  # type: ignore[method-assign]


class SpoolTests(unittest.TestCase):
    timeout = 120

    def open(self, **kw: Any) -> EventStore:
        store = EventStore(store_path(), reactor, **kw)
        store.open_sync()
        store.start()
        self.addCleanup(lambda: store.close() if store._conn is not None else None)
        return store

    async def test_a_producer_that_never_pauses_spills_to_disk_and_loses_nothing(self) -> None:
        high = 2 * MIB
        batch = 1 * MIB
        store = self.open(high_water=high, low_water=MIB, batch_max_bytes=batch)
        slow_writer(store, 0.01)
        store.execute("CREATE TABLE order_check(k INTEGER, max_seq INTEGER)")
        spool_path = store.path + ".spool"
        body = os.urandom(48 * KIB).hex().encode()  # 96 KiB frames, like big iopub stream events
        total = 0
        seq = 0
        most = 0
        seen_file = False
        digest = hashlib.sha256()
        while total < 110 * MIB:
            for _ in range(16):
                seq += 1
                frame = b"%d:" % seq + body
                store.append("s", seq, frame)
                digest.update(frame)
                total += len(frame)
                if seq % 50 == 0:
                    # SQL goes in the same order as the events around it.
                    store.execute("INSERT INTO order_check(k, max_seq)"
                                  " SELECT ?, MAX(seq) FROM events WHERE session = 's'", (seq,))
                most = max(most, store.memory_bytes)
            seen_file = seen_file or os.path.exists(spool_path)
            # About 100 MB/s, never pausing: more than twice what a kernel's
            # iopub delivers (it flushes 6-9 MB every 0.2 s at most).
            await deferLater(reactor, 0.015, lambda: None)
        self.assertTrue(store.paused)
        self.assertGreater(store.pending_bytes, 10 * MIB)  # the backlog is real...
        # The memory queue up to high water, the batch being written and one
        # read back, what waits for the spill file's thread (a few turns of
        # this producer when a loaded machine is slow to run that thread):
        # about a tenth of what went through.
        bound = high + 2 * batch + spool_module.WRITE_CHUNK + 8 * MIB
        self.assertLess(most, bound)  # ...and memory never held it
        await store.drain()
        self.assertTrue(seen_file)
        self.assertFalse(os.path.exists(spool_path))  # removed once drained
        self.assertEqual(store.pending_bytes, 0)
        self.assertEqual(store.flushed_seq("s"), seq)
        rows = await store.query("SELECT seq, body FROM events WHERE session = 's' ORDER BY rowid")
        self.assertEqual([r[0] for r in rows], list(range(1, seq + 1)))
        check = hashlib.sha256()
        for r in rows:
            check.update(bytes(r[1]))
        self.assertEqual(check.hexdigest(), digest.hexdigest())
        order = await store.query("SELECT k, max_seq FROM order_check ORDER BY rowid")
        self.assertEqual(order, [(k, k) for k in range(50, seq + 1, 50)])

    async def test_a_reader_of_a_spooled_event_waits_for_its_commit(self) -> None:
        store = self.open(high_water=64 * KIB, low_water=32 * KIB, batch_max_bytes=64 * KIB)
        slow_writer(store, 0.02)
        for seq in range(1, 201):
            store.append("s", seq, b"%d:" % seq + b"q" * 4000)
        self.assertEqual(store.released_seq("s"), 200)  # the last ones went to the spill file
        self.assertLess(store.flushed_seq("s"), 200)
        reading = store.read_events("s", 150, limit=10)
        self.assertFalse(reading.called)
        rows = await reading
        self.assertGreaterEqual(store.flushed_seq("s"), 151)
        self.assertEqual([r[0] for r in rows], list(range(151, 151 + len(rows))))
        self.assertTrue(rows)
        await store.drain()

    async def test_a_disk_that_refuses_the_spill_file_keeps_the_ops_in_memory(self) -> None:
        store = self.open(high_water=64 * KIB, low_water=32 * KIB, batch_max_bytes=64 * KIB)
        slow_writer(store, 0.01)
        os.mkdir(store.path + ".spool")  # cannot be opened as a file
        for seq in range(1, 301):
            store.append("s", seq, b"w" * 4000)
        await deferLater(reactor, 0.05, lambda: None)
        self.assertGreater(store._spool._refused_until, 0)  # it was refused, and said so
        await store.drain()
        rows = await store.query("SELECT seq FROM events WHERE session = 's' ORDER BY rowid")
        self.assertEqual([r[0] for r in rows], list(range(1, 301)))

    async def test_a_stale_spill_file_is_removed_at_open(self) -> None:
        path = store_path()
        with open(path + ".spool", "wb") as f:
            f.write(b"left by a crash")
        store = EventStore(path, reactor)
        store.open_sync()
        store.start()
        self.addCleanup(store.close)
        self.assertFalse(os.path.exists(path + ".spool"))


class TailWhileSpoolingTests(unittest.TestCase):
    timeout = 60

    async def test_a_session_tail_does_not_keep_what_the_store_spilled(self) -> None:
        store = EventStore(store_path(), reactor, high_water=256 * KIB, low_water=128 * KIB,
                           batch_max_bytes=128 * KIB)
        manager = SessionManager(store, ScriptedExecutor(), {}, reactor)
        manager.restore_sync()
        store.start()
        self.addCleanup(store.close)
        slow_writer(store, 0.01)
        self.patch(session_module, "TAIL_BYTES", 256 * KIB)
        session = manager.create(name="loud")
        slow, fast = Sink(), Sink()
        session.subscribe(fast, 0)
        sub = session.subscribe(slow, 0)
        slow.writable = False
        for i in range(400):
            session.emit("stream", run="r", name="stdout", text=f"{i}:" + "p" * 8000)
            self.assertLessEqual(session.tail_bytes, 256 * KIB + 9000)
            if i % 20 == 0:
                await deferLater(reactor, 0, lambda: None)
        self.assertGreater(store.pending_bytes, 1 * MIB)
        slow.writable = True
        sub.pump()
        await eventually(lambda: len(slow.frames) == session.last_seq, timeout=60)
        self.assertEqual(slow.seqs(), fast.seqs())
        self.assertEqual(slow.seqs(), list(range(1, session.last_seq + 1)))
        await store.drain()


class TailMemoryOptionTests(unittest.TestCase):
    def test_the_option_sets_the_budget_and_bad_values_say_what_is_wrong(self) -> None:
        from spinrt.config import ConfigError, RuntimeConfig

        env = {"SPIN_TOKEN": "t"}
        self.assertEqual(RuntimeConfig.from_options({}, env).tail_memory, 64 * MIB)
        self.assertEqual(RuntimeConfig.from_options({"tail-memory": "1048576"}, env).tail_memory, MIB)
        self.assertEqual(RuntimeConfig.from_options({"tail-memory": "0"}, env).tail_memory, 0)
        for bad in ("64M", "-1", "1.5", str(65 * 1024 ** 3)):
            with self.assertRaises(ConfigError) as caught:
                RuntimeConfig.from_options({"tail-memory": bad}, env)
            self.assertIn("--tail-memory", str(caught.exception))

    async def test_the_runtime_wires_it_to_the_session_manager(self) -> None:
        from .support import start_runtime

        service = await start_runtime(self, "--tail-memory", "2097152", "--kernel-pool", "0")
        self.assertEqual(service.manager.tails.limit, 2 * MIB)
        session = service.manager.create(name="wired")
        self.assertIs(session.tails, service.manager.tails)


class KernelOutputSpillTests(unittest.TestCase):
    """A real ipykernel printing as fast as it can while the store is slow:
    its iopub messages keep being read (they cannot be paused), the backlog
    goes to the spill file, and not a line is lost."""

    timeout = 120

    async def test_fast_kernel_output_through_a_slow_store_loses_nothing(self) -> None:
        from .support import Client, start_runtime, ws_url

        service = await start_runtime(self, "--kernel-pool", "0")
        store = service.store
        # At most 320 KB/s into the store: the kernel outruns it even on a
        # loaded machine, so most of the output goes through the spill file.
        store.high_water, store.low_water = 16 * KIB, 8 * KIB
        store._batch_max_bytes = 16 * KIB
        slow_writer(store, 0.05)
        spilled = []
        add = store._spool.add

        def counting(op: Any, size: int) -> None:
            spilled.append(size)
            add(op, size)

        store._spool.add = counting  # type: ignore[method-assign]
        client = await Client.connect(ws_url(service))
        self.addCleanup(client.close)
        sid = (await client.request("session.create"))["session"]["id"]
        lines = 200_000
        done = await client.run(sid, {"id": "c", "type": "python", "options": {},
                                      "source": f"for i in range({lines}):\n    print(i)"}, timeout=90)
        self.assertEqual(done["status"], "ok", done)
        self.assertGreater(sum(spilled), 256 * KIB)  # the spill file was used
        self.assertEqual(client.output(done["run"]), "".join(f"{i}\n" for i in range(lines)))
        await store.drain()
        self.assertFalse(os.path.exists(store.path + ".spool"))
        # And the store has all of it, in order (what a late joiner replays).
        late = await Client.connect(ws_url(service))
        self.addCleanup(late.close)
        await late.request("session.attach", session=sid, since=0)
        await eventually(lambda: any(m.get("event") == "run.finished" for m in late.events(sid)), timeout=60)
        self.assertEqual(late.output(done["run"]), client.output(done["run"]))
