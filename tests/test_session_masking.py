"""Secret maskers are built off the reactor thread with no window for a leak,
and stream text is masked exactly once (fakes; the thread tests use the real
reactor's thread pool)."""

from __future__ import annotations

import base64
import gc
import json
import os
import sys
import textwrap
import threading
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock, deferLater
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from spinrt import protocol as proto
from spinrt.cells.base import CellContext, Outcome, RuntimeServices
from spinrt.secrets import MASK, Masker
from spinrt.sessions import masking
from spinrt.sessions.manager import SessionManager
from spinrt.sessions.runner import RunExecutor
from spinrt.sessions.session import Session
from spinrt.web.ops import ClientConnection

from .test_session_unit import FakeStore

PEM = "-----BEGIN PRIVATE KEY-----\n" + "\n".join(textwrap.wrap(base64.b64encode(os.urandom(900)).decode(), 64)) + "\n-----END PRIVATE KEY-----\n"
TOKEN = "sk-live-" + os.urandom(12).hex()
OTHER = "other-secret-" + os.urandom(12).hex()
ENV_VALUE = "env-secret-" + os.urandom(12).hex()


class Store(FakeStore):
    def on_flush(self, listener: Any) -> None:
        pass


class Builds:
    """A masker builder the test finishes by hand, as a slow thread would."""

    def __init__(self) -> None:
        self.pending: list[tuple[Deferred, Masker, frozenset[str]]] = []
        self.started = 0

    def __call__(self, masker: Masker, values: frozenset[str]) -> Deferred:
        d: Deferred = Deferred()
        self.pending.append((d, masker, values))
        self.started += 1
        return d

    def finish(self) -> None:
        d, masker, values = self.pending.pop(0)
        d.callback(masker.with_values(values))

    def fail(self) -> None:
        d, _, _ = self.pending.pop(0)
        d.errback(MemoryError("re.compile ran out of memory"))


class Echo:
    """A cell processor that prints its source in two pieces and displays it;
    records which values the session masked when it started."""

    def __init__(self) -> None:
        self.session: Session | None = None
        self.displays = True
        self.started: list[tuple[str, Masker]] = []
        self.kernel_secrets: list[tuple[dict[str, str], Masker]] = []

    def run(self, cell: proto.Cell, ctx: CellContext) -> Deferred:
        assert self.session is not None
        self.started.append((cell.source, self.session.masker))
        half = len(cell.source) // 2
        ctx.stream("stdout", cell.source[:half])
        ctx.stream("stdout", cell.source[half:])
        if self.displays:
            ctx.display({"text/plain": cell.source})
        return succeed(Outcome("ok", exit_code=0, value={"stdout": cell.source}))

    # What RunExecutor and SessionManager ask of the "python" processor.
    def has_kernel(self, sid: str) -> bool:
        return True

    def get_variables(self, sid: str, names: list[str]) -> Deferred:
        return succeed({})

    def set_variables(self, sid: str, values: dict) -> Deferred:
        return succeed(True)

    def set_secrets(self, sid: str, secrets: dict[str, str]) -> Deferred:
        assert self.session is not None
        self.kernel_secrets.append((dict(secrets), self.session.masker))
        return succeed(True)

    def close_session(self, sid: str) -> None:
        return None

    def stop(self) -> None:
        return None


class Harness(unittest.TestCase):
    """A real SessionManager, RunExecutor and ClientConnection on fakes, with
    masker builds the test finishes (or fails) when it likes."""

    def setUp(self) -> None:
        self.builds = Builds()
        self.echo = Echo()
        processors = {"shell": self.echo, "python": self.echo}
        services = RuntimeServices(reactor=Clock(), home=self.mktemp(), environ={"ENV_SECRET": ENV_VALUE})
        self.manager = SessionManager(Store(), RunExecutor(services, processors), processors, Clock(),
                                      wallclock=lambda: 0.0, build_masker=self.builds)
        self.session = self.manager.create("t")
        self.echo.session = self.session
        self.frames: list[str] = []
        self.conn = ClientConnection(self.manager, lambda f: self.frames.append(f.decode()), {"version": "t"})
        self.next_id = 0
        self.request("session.attach", session=self.session.id)
        self.logged: list[str] = []

        def observe(event: dict) -> None:
            self.logged.append(repr(event) + (formatEvent(event) or ""))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def request(self, op: str, **params: Any) -> int:
        self.next_id += 1
        self.conn.handle(json.dumps({"id": self.next_id, "op": op, **params}).encode())
        return self.next_id

    def reply(self, rid: int) -> dict | None:
        found = [m for m in map(json.loads, self.frames) if m.get("re") == rid]
        self.assertLessEqual(len(found), 1)
        return found[0] if found else None

    def run_cell(self, source: str, type: str = "shell") -> str:
        rid = self.request("cell.run", session=self.session.id, cell={"type": type, "source": source})
        reply = self.reply(rid)
        assert reply is not None and "run" in reply, reply
        return reply["run"]

    def events(self, run: str, kind: str | None = None) -> list[dict]:
        return [m for m in map(json.loads, self.frames)
                if "event" in m and m.get("run") == run and (kind is None or m["event"] == kind)]

    def output(self, run: str) -> str:
        return "".join(e["text"] for e in self.events(run, "stream"))

    def assert_no_leak(self, *secrets: str) -> None:
        """No form of any of ``secrets`` in any frame sent, event or row stored or line logged."""
        reference = Masker(secrets)
        store = self.manager.store
        stored = [b.decode() for events in store.events.values() for b in events.values()]
        stored += [str(params) for _, params in store.statements]
        for text in self.frames + stored + self.logged:
            self.assertEqual(reference.spans(text), [], text[:300])


class SecretsSetTests(Harness):
    def test_reply_and_kernel_wait_for_the_masker(self) -> None:
        rid = self.request("secrets.set", session=self.session.id, secrets={"K": PEM})
        self.assertIsNone(self.reply(rid))
        self.assertEqual(self.builds.started, 1)
        self.assertNotIn("K", self.session.secrets)  # what a new kernel would be given
        self.assertEqual(self.echo.kernel_secrets, [])
        self.builds.finish()
        self.assertEqual(self.reply(rid), {"re": rid, "ok": True})
        ((secrets, masker),) = self.echo.kernel_secrets
        self.assertEqual(secrets, {"K": PEM})
        self.assertFalse(masker.missing([PEM]))  # the kernel got it only once it was masked
        self.assertEqual(self.session.secrets, {"K": PEM})
        self.assert_no_leak(PEM)

    def test_run_using_a_pending_secret_starts_once_it_is_masked(self) -> None:
        for cell_type, source in (("shell", "echo '{{secret:K}}'"), ("python", "print({{secret:K|json}})"),
                                  ("shell", "printf %s {{secret:K|shquote}}")):
            with self.subTest(cell_type=cell_type, source=source):
                self.setUp()
                rid = self.request("secrets.set", session=self.session.id, secrets={"K": PEM})
                run = self.run_cell(source, cell_type)  # sent before the reply: sees the secret
                self.assertEqual(self.echo.started, [])
                self.assertEqual([e["event"] for e in self.events(run)], ["run.queued", "run.started"])
                self.builds.finish()
                # |json and |shquote forms that differ from the value are values too.
                while self.builds.pending:
                    self.assertEqual(self.echo.started, [])
                    self.builds.finish()
                ((expanded, masker),) = self.echo.started
                self.assertFalse(masker.missing([PEM]))
                self.assertIn(PEM.strip().split("\n")[3], expanded)
                self.assertIn(MASK, self.output(run))
                self.assertEqual(self.events(run, "run.finished")[0]["status"], "ok")
                self.assertEqual(self.reply(rid), {"re": rid, "ok": True})
                self.assert_no_leak(PEM)

    def test_run_using_an_environment_secret_starts_once_it_is_masked(self) -> None:
        run = self.run_cell("echo {{secret:ENV_SECRET}}")  # no such session secret: the environment's
        self.assertEqual(self.builds.started, 1)
        self.assertEqual(self.echo.started, [])
        self.builds.finish()
        self.assertEqual(self.output(run), "echo ***")
        again = self.run_cell("echo {{secret:ENV_SECRET}} twice")  # known now: no build, no wait
        self.assertEqual(self.builds.started, 1)
        self.assertEqual(self.output(again), "echo *** twice")
        self.assert_no_leak(ENV_VALUE)

    def test_values_already_masked_or_too_short_need_no_build(self) -> None:
        self.request("secrets.set", session=self.session.id, secrets={"K": TOKEN})
        self.builds.finish()
        for secrets in ({"SAME": TOKEN}, {"SHORT": "abc"}, {"EMPTY": ""}, {}):
            rid = self.request("secrets.set", session=self.session.id, secrets=secrets)
            self.assertEqual(self.reply(rid), {"re": rid, "ok": True})
        self.assertEqual(self.builds.started, 1)
        self.assertEqual(self.session.secrets, {"K": TOKEN, "SAME": TOKEN, "SHORT": "abc", "EMPTY": ""})

    def test_sets_while_a_build_runs_share_the_next_build(self) -> None:
        first = self.request("secrets.set", session=self.session.id, secrets={"A": TOKEN})
        second = self.request("secrets.set", session=self.session.id, secrets={"B": OTHER})
        third = self.request("secrets.set", session=self.session.id, secrets={"C": PEM})
        run = self.run_cell("{{secret:A}} {{secret:B}} {{secret:C}}")
        self.assertEqual(self.builds.started, 1)  # one at a time
        self.builds.finish()
        self.assertIsNotNone(self.reply(first))
        self.assertEqual((self.reply(second), self.reply(third), self.echo.started), (None, None, []))
        self.assertEqual(self.builds.started, 2)
        self.assertEqual(self.builds.pending[0][2], frozenset({OTHER, PEM}))  # both in one build
        self.builds.finish()
        self.assertIsNotNone(self.reply(second))
        self.assertIsNotNone(self.reply(third))
        self.assertEqual(self.output(run).replace("\n", ""), "*** *** ***")
        self.assertEqual(self.builds.started, 2)
        self.assert_no_leak(TOKEN, OTHER, PEM)

    def test_a_new_value_for_a_name_reaches_the_kernel_once_masked(self) -> None:
        self.request("secrets.set", session=self.session.id, secrets={"K": TOKEN})
        self.builds.finish()
        rid = self.request("secrets.set", session=self.session.id, secrets={"K": OTHER})
        self.assertEqual(self.session.secrets["K"], TOKEN)  # a kernel starting now gets the old value
        run = self.run_cell("echo {{secret:K}}")  # templates see the new one, and wait
        self.assertEqual(self.echo.started, [])
        self.builds.finish()
        self.assertEqual(self.session.secrets["K"], OTHER)
        self.assertEqual(self.output(run), "echo ***")
        self.assertIsNotNone(self.reply(rid))
        self.assert_no_leak(TOKEN, OTHER)

    def test_a_masker_that_cannot_be_built_sets_nothing_and_runs_nothing(self) -> None:
        self.request("secrets.set", session=self.session.id, secrets={"K": TOKEN})
        self.builds.finish()
        rid = self.request("secrets.set", session=self.session.id, secrets={"K": PEM, "J": OTHER})
        waiting = self.run_cell("echo {{secret:K}}")
        self.builds.fail()
        reply = self.reply(rid)
        assert reply is not None
        self.assertEqual(reply["error"]["code"], proto.INTERNAL)
        self.assertIn("not set", reply["error"]["message"])
        self.assertEqual(self.echo.started, [])  # the run that used the new value did not run
        finished = self.events(waiting, "run.finished")[0]
        self.assertEqual((finished["status"], finished["error"]["code"]), ("error", proto.INTERNAL))
        self.assertEqual(self.session.secrets, {"K": TOKEN})  # the old value stays
        self.assertEqual(self.echo.kernel_secrets[-1][0], {"K": TOKEN})
        unset = self.run_cell("echo {{secret:J}}")
        self.assertEqual(self.events(unset, "run.finished")[0]["error"]["code"], "template_error")
        self.assertTrue(any("MemoryError" in line for line in self.logged))
        # Later sets build again.
        later = self.request("secrets.set", session=self.session.id, secrets={"L": OTHER})
        self.builds.finish()
        self.assertEqual(self.reply(later), {"re": later, "ok": True})
        self.assert_no_leak(PEM, OTHER)

    def test_a_run_cancelled_while_it_waits_shows_nothing(self) -> None:
        self.request("secrets.set", session=self.session.id, secrets={"K": PEM})
        run = self.run_cell("echo {{secret:K}}")
        self.request("run.cancel", session=self.session.id, run=run)
        self.builds.finish()
        self.assertEqual(self.events(run, "run.finished")[0]["status"], "cancelled")
        self.assert_no_leak(PEM)

    @settings(max_examples=60, deadline=None)
    @given(st.lists(st.tuples(st.sampled_from(["set", "run", "finish", "fail"]), st.integers(0, 3)), max_size=14))
    def test_any_order_of_sets_runs_and_builds(self, steps: list[tuple[str, int]]) -> None:
        """Whatever interleaves, no frame ever shows a value, every set gets
        one reply and every run finishes (builds are finished at the end)."""
        self.setUp()
        values = [TOKEN, OTHER, "multi line value one\nmulti line value two\n", "w" + os.urandom(8).hex()]
        sets, runs = [], []
        for op, i in steps:
            if op == "set":
                sets.append(self.request("secrets.set", session=self.session.id, secrets={f"S{i}": values[i]}))
            elif op == "run":
                runs.append(self.run_cell(f"echo {{{{secret:S{i}}}}} {{{{secret:ENV_SECRET}}}}"))
            elif self.builds.pending:
                self.builds.finish() if op == "finish" else self.builds.fail()
        while self.builds.pending:
            self.builds.finish()
        for rid in sets:
            self.assertIsNotNone(self.reply(rid))
        for run in runs:
            self.assertEqual(len(self.events(run, "run.finished")), 1)
        for source, masker in self.echo.started:
            self.assertFalse(masker.missing([v for v in values + [ENV_VALUE] if v.strip() in source]))
        self.assert_no_leak(*values, ENV_VALUE)


class MaskerGrowthTests(unittest.TestCase):
    def test_missing(self) -> None:
        masker = Masker([TOKEN])
        self.assertEqual(masker.missing([TOKEN, "abc", "", None, 12, OTHER, PEM]), frozenset({OTHER, PEM}))
        self.assertEqual(Masker().missing(["abcd"]), frozenset({"abcd"}))

    def test_a_grown_masker_is_the_one_built_from_scratch_and_reuses_forms(self) -> None:
        old = Masker([PEM, TOKEN])
        self.assertIs(old.with_values([TOKEN, "ab"]), old)
        grown = old.with_values([OTHER, ENV_VALUE])
        fresh = Masker([PEM, TOKEN, OTHER, ENV_VALUE])
        self.assertEqual(grown.values, fresh.values)
        self.assertEqual((grown._pattern.pattern, grown._anchors, grown.holdback),
                         (fresh._pattern.pattern, fresh._anchors, fresh.holdback))
        self.assertIs(grown._forms[PEM], old._forms[PEM])  # not worked out again


class OffTheReactorTests(unittest.TestCase):
    """The production builder, on the real reactor and its thread pool."""

    def spy(self, block: threading.Event | None = None) -> list[threading.Thread]:
        threads: list[threading.Thread] = []
        real = masking.build_politely

        def spying(masker: Masker, values: frozenset[str]) -> Masker:
            threads.append(threading.current_thread())
            if block is not None:
                # Set by a reactor callLater: a build on the reactor thread would time out here.
                self.assertTrue(block.wait(10), "the reactor did not run while the masker was built")
            return real(masker, values)

        self.patch(masking, "build_politely", spying)
        return threads

    async def test_builds_in_a_thread_other_than_the_reactors(self) -> None:
        threads = self.spy()
        masker = await masking.build_in_thread(reactor)(Masker([TOKEN]), frozenset({PEM}))
        self.assertEqual(masker.mask("a " + PEM.strip().split("\n")[2] + " " + TOKEN), f"a {MASK} {MASK}")
        self.assertEqual(len(threads), 1)
        self.assertIsNot(threads[0], threading.main_thread())
        self.assertIsNot(threads[0], threading.current_thread())

    async def test_the_reactor_runs_while_secrets_set_waits_for_a_slow_build(self) -> None:
        block = threading.Event()
        threads = self.spy(block)
        manager = SessionManager(Store(), RunExecutor(RuntimeServices(reactor=reactor, home=self.mktemp(), environ={}), {}),
                                 {}, reactor, wallclock=lambda: 0.0)  # the default builder
        session = manager.create("t")
        done = Deferred.fromCoroutine(manager.set_secrets(session.id, {"K": PEM}))
        ticked = await deferLater(reactor, 0.05, lambda: (block.set(), done.called)[1])
        self.assertFalse(ticked)  # the reactor ran; secrets.set had not finished
        await done
        self.assertIsNot(threads[0], threading.main_thread())
        self.assertFalse(session.masker.missing([PEM]))
        self.assertEqual(session.secrets, {"K": PEM})


class PoliteBuildTests(unittest.TestCase):
    def test_gc_and_switch_interval_are_restored_after_overlapping_builds(self) -> None:
        interval = sys.getswitchinterval()
        self.assertTrue(gc.isenabled())
        inside, gate = [], threading.Barrier(2)

        class Slow(Masker):
            def with_values(self, values: Any) -> Masker:
                gate.wait(5)  # both builds are inside at once
                inside.append((gc.isenabled(), sys.getswitchinterval()))
                gate.wait(5)
                if "fail" in values:
                    raise ValueError("boom")
                return Masker(values)

        errors: list[BaseException] = []

        def build(values: frozenset[str]) -> None:
            try:
                masking.build_politely(Slow(), values)
            except ValueError as e:
                errors.append(e)

        workers = [threading.Thread(target=build, args=(frozenset({v}),)) for v in (TOKEN, "fail")]
        for w in workers:
            w.start()
        for w in workers:
            w.join(10)
        self.assertEqual(inside, [(False, min(masking.SWITCH_INTERVAL, interval))] * 2)
        self.assertEqual(len(errors), 1)
        self.assertTrue(gc.isenabled())
        self.assertEqual(sys.getswitchinterval(), interval)

    def test_gc_left_off_when_it_was_off(self) -> None:
        gc.disable()
        self.addCleanup(gc.enable)
        masking.build_politely(Masker(), frozenset({TOKEN}))
        self.assertFalse(gc.isenabled())


class MaskedOnceTests(Harness):
    def count_scans(self) -> list[int]:
        """Lengths of the texts Masker looks at, to count scans of big chunks."""
        sizes: list[int] = []
        real = Masker._maybe

        def counting(masker: Masker, text: str) -> bool:
            sizes.append(len(text))
            return real(masker, text)

        self.patch(Masker, "_maybe", counting)
        return sizes

    def test_stream_text_is_scanned_once(self) -> None:
        self.request("secrets.set", session=self.session.id, secrets={"K": PEM})
        self.builds.finish()
        chunk = "x" * 99 + "\n"
        body = chunk * 300 + PEM + chunk * 300
        self.echo.displays = False
        sizes = self.count_scans()
        run = self.run_cell(body)
        big = [n for n in sizes if n > 1000]
        # run.queued carries the cell's source (PROTOCOL.md section 10): masked whole, once
        # (when it is sent: once the processor has started, Session._release).
        self.assertEqual(big.count(len(body)), 1, big)
        big.remove(len(body))
        # Echo prints its source in two pieces: each is scanned once (the
        # second with the held-back end of the first), and the held-back end
        # of the second once more when the run ends (it is ~2,000 characters).
        half = len(body) // 2
        self.assertEqual(len(big), 3, big)
        self.assertEqual((big[0], big[1]), (half, len(body) - half + big[2]))
        self.assertEqual(self.output(run), self.session.masker.mask(body))
        self.assertIn(MASK, self.output(run))
        self.assert_no_leak(PEM)

    def test_stream_text_masked_with_an_older_masker_is_masked_again(self) -> None:
        self.request("secrets.set", session=self.session.id, secrets={"K": TOKEN})
        self.builds.finish()
        stale = Masker()
        self.session.emit_stream("run_x", "stdout", f"a {TOKEN} b", stale)
        self.session.emit_stream("run_x", f"name {TOKEN}", "text", self.session.masker)
        texts = [(e["name"], e["text"]) for e in self.events("run_x", "stream")]
        self.assertEqual(texts, [("stdout", f"a {MASK} b"), (f"name {MASK}", "text")])
        self.assert_no_leak(TOKEN)

    def test_every_other_event_is_still_masked(self) -> None:
        self.request("secrets.set", session=self.session.id, secrets={"K": PEM, "T": TOKEN})
        self.builds.finish()
        ctx = CellContext(run_id="run_y", session_id=self.session.id, emit=self.session.emit,
                          emit_stream=self.session.emit_stream, services=RuntimeServices(reactor=Clock(), home="", environ={}),
                          producers=None, masker=lambda: self.session.masker)
        ctx.display({"text/plain": PEM, TOKEN: 1}, {"m": [TOKEN]}, display_id=TOKEN)
        ctx.update_display(TOKEN, {"text/html": json.dumps(PEM)})
        ctx.result({"text/plain": repr(TOKEN)}, variable="v")
        ctx.clear()
        self.session.emit("kernel.status", state=TOKEN)
        self.session.set_variable("v", {"body": PEM})
        self.session.emit("run.finished", run="run_y", status="error",
                          error=proto.run_error("x", "Boom", f"failed with {TOKEN}", [PEM]))
        kinds = {json.loads(f).get("event") for f in self.frames}
        self.assertLessEqual({"display", "display.update", "result", "clear", "kernel.status", "variable.set",
                              "run.finished"}, kinds)
        self.assertIn(MASK, "".join(self.frames))
        self.assert_no_leak(PEM, TOKEN)

    def test_a_context_without_emit_stream_uses_emit(self) -> None:
        seen: list[tuple[str, dict]] = []
        ctx = CellContext(run_id="r", session_id="s", emit=lambda kind, **f: seen.append((kind, f)) or 0,
                          services=RuntimeServices(reactor=Clock(), home="", environ={}), producers=None,
                          masker=lambda: Masker([TOKEN]))
        ctx.stream("stdout", f"x {TOKEN} y")
        ctx.flush_streams()
        self.assertEqual("".join(f["text"] for _, f in seen), f"x {MASK} y")
        self.assertEqual({k for k, _ in seen}, {"stream"})

    @settings(max_examples=80, deadline=None)
    @given(st.lists(st.sampled_from(["plain text ", "\n", TOKEN, json.dumps(PEM), PEM, PEM.replace("\n", "\r\n"),
                                     base64.b64encode(PEM.encode()).decode()]), max_size=6),
           st.lists(st.integers(0, 10_000), max_size=5))
    def test_pieces_through_the_session_give_what_the_whole_gives(self, parts: list[str], cuts: list[int]) -> None:
        self.setUp()
        self.request("secrets.set", session=self.session.id, secrets={"K": PEM, "T": TOKEN})
        self.builds.finish()
        text = "".join(parts)
        ctx = CellContext(run_id="run_z", session_id=self.session.id, emit=self.session.emit,
                          emit_stream=self.session.emit_stream, services=RuntimeServices(reactor=Clock(), home="", environ={}),
                          producers=None, masker=lambda: self.session.masker)
        bounds = sorted({min(c, len(text)) for c in cuts} | {0, len(text)})
        for a, b in zip(bounds, bounds[1:]):
            ctx.stream("stdout", text[a:b])
        ctx.flush_streams()
        self.assertEqual(self.output("run_z"), self.session.masker.mask(text))
        self.assert_no_leak(PEM, TOKEN)
