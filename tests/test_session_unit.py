"""Sessions, subscribers and the op layer with in-memory fakes and a Clock."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial import unittest

from spinrt import protocol as proto
from spinrt.sessions import session as session_module
from spinrt.sessions.session import Run, Session
from spinrt.web.ops import ClientConnection


class FakeStore:
    """Keeps events in a dict; 'flushes' when told to."""

    def __init__(self) -> None:
        self.events: dict[str, dict[int, bytes]] = {}
        self.flushed: dict[str, int] = {}
        self.statements: list[tuple[str, tuple]] = []
        self.reads = 0
        self.producers: set[Any] = set()

    def append(self, sid: str, seq: int, body: bytes) -> None:
        self.events.setdefault(sid, {})[seq] = body

    def execute(self, sql: str, params: tuple = ()) -> None:
        self.statements.append((sql, tuple(params)))

    def flush(self) -> None:
        for sid, events in self.events.items():
            self.flushed[sid] = max(events)

    def flushed_seq(self, sid: str) -> int:
        return self.flushed.get(sid, 0)

    released_seq = flushed_seq  # nothing is spooled here

    def read_events(self, sid: str, after: int, limit: int = 1000, max_bytes: int = 0) -> Deferred:
        self.reads += 1
        flushed = self.flushed.get(sid, 0)
        rows = [(s, b) for s, b in sorted(self.events.get(sid, {}).items()) if after < s <= flushed][:limit]
        return succeed(rows)

    def add_producer(self, p: Any) -> None:
        self.producers.add(p)

    def remove_producer(self, p: Any) -> None:
        self.producers.discard(p)


class Sink:
    def __init__(self) -> None:
        self.frames: list[dict] = []
        self.writable = True

    def send(self, frame: bytes) -> None:
        assert self.writable, "sent to a full socket"
        self.frames.append(json.loads(frame))

    def seqs(self) -> list[int]:
        return [f["seq"] for f in self.frames if "seq" in f]


class ScriptedExecutor:
    """Runs are finished by the test: executor waits on a Deferred per run."""

    def __init__(self) -> None:
        self.pending: dict[str, Deferred] = {}

    def __call__(self, session: Session, run: Run) -> Deferred:
        d: Deferred = Deferred()
        self.pending[run.id] = d

        def done(status: str) -> None:
            session.finish(run, status)

        d.addCallback(done)
        return d


def make_session(store: FakeStore | None = None, executor: Any = None) -> Session:
    return Session(id="ss_t", name="t", created="now", store=store or FakeStore(), clock=Clock(),
                   executor=executor or ScriptedExecutor(), wallclock=lambda: 0.0)


def shell(source: str) -> proto.Cell:
    return proto.Cell(id=None, type="shell", source=source, options={})


class SubscriberTests(unittest.TestCase):
    def test_live_subscriber_gets_each_event_once_in_order(self) -> None:
        session = make_session()
        sink = Sink()
        session.subscribe(sink, 0)
        for i in range(5):
            session.emit("stream", run="r", name="stdout", text=str(i))
        self.assertEqual(sink.seqs(), [1, 2, 3, 4, 5])

    def test_slow_subscriber_catches_up_from_tail_and_store_without_duplicates(self) -> None:
        store = FakeStore()
        session = make_session(store)
        fast, slow = Sink(), Sink()
        session.subscribe(fast, 0)
        sub = session.subscribe(slow, 0)
        slow.writable = False
        old_tail = session_module.TAIL_BYTES
        session_module.TAIL_BYTES = 500  # force events out of memory
        self.addCleanup(setattr, session_module, "TAIL_BYTES", old_tail)
        for i in range(100):
            session.emit("stream", run="r", name="stdout", text="x" * 50)
            if i % 10 == 9:
                store.flush()
                session.trim_tail()
        self.assertEqual(fast.seqs(), list(range(1, 101)))
        self.assertEqual(slow.frames, [])
        self.assertLess(session._tail_bytes, 2000)  # memory stays bounded while slow is stuck
        slow.writable = True
        sub.pump()
        self.assertEqual(slow.seqs(), list(range(1, 101)))
        self.assertGreater(store.reads, 0)
        session.emit("stream", run="r", name="stdout", text="live")
        self.assertEqual(slow.seqs()[-1], 101)

    def test_attach_since_replays_only_later_events(self) -> None:
        session = make_session()
        for i in range(10):
            session.emit("stream", run="r", name="stdout", text=str(i))
        sink = Sink()
        session.subscribe(sink, 7)
        self.assertEqual(sink.seqs(), [8, 9, 10])
        late = Sink()
        session.subscribe(late, 99)
        session.emit("ping")
        self.assertEqual(late.seqs(), [11])

    def test_closed_subscription_gets_nothing(self) -> None:
        session = make_session()
        sink = Sink()
        sub = session.subscribe(sink, 0)
        sub.close()
        session.emit("x")
        self.assertEqual(sink.frames, [])


class RunQueueTests(unittest.TestCase):
    def test_runs_execute_one_at_a_time_in_order(self) -> None:
        executor = ScriptedExecutor()
        session = make_session(executor=executor)
        a, b = session.enqueue([shell("a"), shell("b")])
        self.assertEqual(list(executor.pending), [a.id])
        executor.pending[a.id].callback("ok")
        self.assertEqual(list(executor.pending), [a.id, b.id])
        executor.pending[b.id].callback("error")
        finished = [json.loads(f) for s, f in sorted(session.store.events["ss_t"].items())]
        kinds = [(e["event"], e.get("run"), e.get("status")) for e in finished]
        self.assertEqual(kinds, [
            ("run.queued", a.id, None), ("run.queued", b.id, None), ("run.started", a.id, None),
            ("run.finished", a.id, "ok"), ("run.started", b.id, None), ("run.finished", b.id, "error"),
        ])

    def test_a_run_that_starts_at_once_is_announced_once_its_processor_waits(self) -> None:
        """run.queued and run.started of a run that starts at once are sent
        after the processor has begun its work (a shell cell's spawn), yet
        before anything else of the session and before enqueue returns."""
        seen: list[tuple[str, int]] = []
        sink = Sink()

        class Spawning:
            def __init__(self) -> None:
                self.pending: dict[str, Deferred] = {}

            def __call__(self, session: Session, run: Run) -> Deferred:
                # What the processor finds when it starts: nothing announced yet.
                seen.append(("start", len(sink.frames)))
                session.record_process_group(run, 4242)  # a write of the run: the announcements go first
                session.emit("stream", run=run.id, name="stdout", text="at once")
                d = self.pending[run.id] = Deferred()
                d.addCallback(lambda status: session.finish(run, status))
                return d

        executor = Spawning()
        store = FakeStore()
        session = make_session(store, executor)
        session.subscribe(sink, 0)
        run = session.enqueue([shell("x")])[0]
        self.assertEqual(seen, [("start", 0)])
        kinds = [(f["event"], f["seq"]) for f in sink.frames]
        self.assertEqual(kinds, [("run.queued", 1), ("run.started", 2), ("stream", 3)])
        sql = [(q.split()[0], p) for q, p in store.statements]
        self.assertEqual(sql, [("INSERT", (run.id, "ss_t", 1)), ("UPDATE", (2, run.id)), ("UPDATE", (4242, run.id))])
        executor.pending[run.id].callback("ok")
        self.assertEqual([f["event"] for f in sink.frames][-1], "run.finished")

    def test_announcements_are_out_before_enqueue_returns_whatever_the_executor(self) -> None:
        """A processor that waits at once (its kernel) and one that finishes
        at once (markdown), a chain, and runs that wait behind another: each
        run's events are in order in the log and out before enqueue returns."""
        executor = ScriptedExecutor()
        session = make_session(executor=executor)
        sink = Sink()
        session.subscribe(sink, 0)
        a, b, c = session.enqueue([shell("1"), shell("2"), shell("3")], linked=True)
        self.assertEqual([(f["event"], f.get("run")) for f in sink.frames], [
            ("run.queued", a.id), ("run.queued", b.id), ("run.queued", c.id), ("run.started", a.id)])
        later = session.enqueue([shell("later")])[0]  # behind a running one: announced at once
        self.assertEqual((sink.frames[-1]["event"], sink.frames[-1]["run"]), ("run.queued", later.id))
        executor.pending[a.id].callback("ok")  # the next run starts from the first one's end
        self.assertEqual([(f["event"], f.get("run")) for f in sink.frames[-2:]], [
            ("run.finished", a.id), ("run.started", b.id)])

        def instant(session: Session, run: Run) -> Deferred:
            session.finish(run, "ok")
            return succeed(None)

        other = make_session(executor=instant)
        other_sink = Sink()
        other.subscribe(other_sink, 0)
        (run,) = other.enqueue([shell("md")])
        self.assertEqual([f["event"] for f in other_sink.frames], ["run.queued", "run.started", "run.finished"])
        # The runs table in the same order: the row, then running (started_seq 2), then finished.
        self.assertEqual([p for _, p in other.store.statements], [(run.id, "ss_t", 1), (2, run.id), (run.id,)])

    def test_an_announcement_that_fails_leaves_the_rest_for_the_next_event(self) -> None:
        """If sending one held event fails (here the store refuses it once),
        the run goes on and the events held after it go out, in order,
        before the run's next event."""

        class RefusesOnce(FakeStore):
            refused = False

            def append(self, sid: str, seq: int, body: bytes) -> None:
                if not self.refused and b'"run.queued"' in body:
                    self.refused = True
                    raise OSError("the spill file is full")
                super().append(sid, seq, body)

        executor = ScriptedExecutor()
        store = RefusesOnce()
        session = make_session(store, executor)
        a, b = session.enqueue([shell("a"), shell("b")], linked=True)
        self.assertEqual(len(self.flushLoggedErrors(OSError)), 1)
        self.assertEqual(list(executor.pending), [a.id])  # the run was not dropped
        executor.pending[a.id].callback("ok")
        kinds = [(json.loads(f)["event"], json.loads(f)["run"]) for _, f in sorted(store.events["ss_t"].items())]
        self.assertEqual(kinds[:3], [("run.queued", b.id), ("run.started", a.id), ("run.finished", a.id)])

    def test_chain_failure_skips_the_rest_and_cancel_of_queued(self) -> None:
        executor = ScriptedExecutor()
        session = make_session(executor=executor)
        first, second, third = session.enqueue([shell("1"), shell("2"), shell("3")], linked=True)
        lone = session.enqueue([shell("lone")])[0]
        session.cancel(lone.id)
        executor.pending[first.id].callback("error")
        statuses = {json.loads(f)["run"]: json.loads(f)["status"]
                    for f in session.store.events["ss_t"].values() if b'"run.finished"' in f}
        self.assertEqual(statuses, {lone.id: "cancelled", first.id: "error", second.id: "skipped", third.id: "skipped"})
        self.assertEqual(session.runs, {})
        with self.assertRaises(proto.ProtocolError) as caught:
            session.cancel(first.id)
        self.assertEqual(caught.exception.code, proto.NO_SUCH_RUN)

    def test_queue_is_bounded_and_closed_sessions_refuse(self) -> None:
        session = make_session()
        old = session_module.MAX_QUEUED_RUNS
        session_module.MAX_QUEUED_RUNS = 3
        self.addCleanup(setattr, session_module, "MAX_QUEUED_RUNS", old)
        session.enqueue([shell("1"), shell("2"), shell("3")])
        with self.assertRaises(proto.ProtocolError) as caught:
            session.enqueue([shell("4")])
        self.assertEqual(caught.exception.code, proto.QUEUE_FULL)
        session.state = "closed"
        with self.assertRaises(proto.ProtocolError) as caught:
            session.enqueue([shell("5")])
        self.assertEqual(caught.exception.code, proto.SESSION_CLOSED)

    def test_finish_is_idempotent(self) -> None:
        executor = ScriptedExecutor()
        session = make_session(executor=executor)
        (run,) = session.enqueue([shell("x")])
        session.finish(run, "cancelled")
        executor.pending[run.id].callback("ok")  # the processor reports later: ignored
        finished = [f for f in session.store.events["ss_t"].values() if b'"run.finished"' in f]
        self.assertEqual(len(finished), 1)


class FakeManager:
    def __init__(self, session: Session) -> None:
        self.session = session
        self.clock = Clock()

    def get(self, sid: str) -> Session:
        if sid != self.session.id:
            raise proto.ProtocolError(proto.NO_SUCH_SESSION, "no")
        return self.session

    def create(self, name: Any, variables: Any) -> Session:
        return self.session


class ConnectionTests(unittest.TestCase):
    def setUp(self) -> None:
        self.session = make_session()
        self.sent: list[dict] = []
        self.conn = ClientConnection(FakeManager(self.session), lambda f: self.sent.append(json.loads(f)), {"version": "t"})

    def test_attach_reply_comes_before_the_replay(self) -> None:
        self.session.emit("x")
        self.conn.handle(b'{"id": 1, "op": "session.attach", "session": "ss_t"}')
        self.assertEqual(self.sent[0]["re"], 1)
        self.assertEqual(self.sent[0]["session"]["last_seq"], 1)
        self.assertEqual(self.sent[1]["seq"], 1)

    def test_paused_connection_catches_up_on_resume(self) -> None:
        self.conn.handle(b'{"id": 1, "op": "session.attach", "session": "ss_t"}')
        self.conn.pause()
        self.session.emit("a")
        self.session.emit("b")
        self.assertEqual(len(self.session_frames()), 1)
        self.conn.resume()
        self.assertEqual([m["seq"] for m in self.session_frames()[1:]], [1, 2])

    def session_frames(self) -> list[dict]:
        """Replies and session events: not the connection-level presence frames."""
        return [m for m in self.sent if m.get("event") != "presence"]

    def test_flood_of_bad_requests_gets_one_error_each(self) -> None:
        for i in range(1000):
            self.conn.handle(b'{"id": %d, "op": "nope"}' % i)
        self.assertEqual(len(self.sent), 1000)
        self.assertTrue(all(m["error"]["code"] == "unknown_op" for m in self.sent))
        self.assertEqual(self.session.last_seq, 0)

    def test_binary_frame(self) -> None:
        self.conn.handle(b"\x00", True)
        self.assertEqual(self.sent[0]["error"]["code"], "bad_frame")

    def test_closed_connection_sends_nothing(self) -> None:
        self.conn.handle(b'{"id": 1, "op": "session.attach", "session": "ss_t"}')
        self.conn.closed()
        self.session.emit("late")
        self.assertEqual(len(self.session_frames()), 1)
        self.assertEqual(self.session.subscribers, set())
