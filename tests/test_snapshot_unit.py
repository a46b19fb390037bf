"""session.snapshot's fold: outputs as they stand, bounded per run and per snapshot."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st
from twisted.internet.defer import succeed
from twisted.trial import unittest

from spinrt import protocol as proto
from spinrt.sessions.outputs import RunOutputs, head_bytes, shrink_error, tail_bytes, utf8_len
from spinrt.sessions.snapshot import STEP, SnapshotFolder, _size, fold_history

from .test_session_unit import FakeStore, make_session


def queued(run: str = "r1", **extra: Any) -> dict[str, Any]:
    return {"event": "run.queued", "run": run, "cell_id": f"c-{run}", "type": "shell", **extra}


def out(run: str, text: str, name: str = "stdout") -> dict[str, Any]:
    return {"event": "stream", "run": run, "name": name, "text": text}


def display(run: str, data: Any, display_id: str | None = None) -> dict[str, Any]:
    event = {"event": "display", "run": run, "data": {"text/plain": data}, "metadata": {}}
    if display_id is not None:
        event["display_id"] = display_id
    return event


def update(run: str, display_id: str, data: Any) -> dict[str, Any]:
    return {"event": "display.update", "run": run, "display_id": display_id,
            "data": {"text/plain": data}, "metadata": {}}


def fold(events: list[dict[str, Any]], limit: int = 256 * 1024, **kw: Any) -> dict[str, Any]:
    folder = SnapshotFolder(limit, **kw)
    for event in events:
        folder.feed_event(event)
    # The budget counts what every run holds, cut-out outputs kept included.
    assert folder.held == sum(r.outputs.held for r in folder.runs.values()), folder.held
    assert folder.held <= folder.budget, folder.held
    assert all(r.outputs.middle_bytes <= limit for r in folder.runs.values())
    result = folder.result()
    json.dumps(result)  # the reply encodes
    return {r["run"]: r for r in result["runs"]} | {"_omitted": result["runs_omitted"]}


def texts(run: dict[str, Any]) -> list[tuple[str, Any]]:
    """The run's outputs as (kind, what): stream text, display text, cut bytes."""
    shown = []
    for o in run["outputs"]:
        if o["event"] == "stream":
            shown.append((o["name"], o["text"]))
        elif o["event"] in ("display", "result"):
            shown.append((o["event"], o["data"]["text/plain"]))
        elif o["event"] == "cut":
            shown.append(("cut", o["bytes"]))
        else:
            shown.append((o["event"], o["error"]["ename"]))
    return shown


class FoldTests(unittest.TestCase):
    def test_adjacent_stream_text_merges_per_name(self) -> None:
        runs = fold([queued(), out("r1", "a"), out("r1", "b"), out("r1", "E", "stderr"), out("r1", "c"),
                     out("r1", "d"), display("r1", "img"), out("r1", "e")])
        self.assertEqual(texts(runs["r1"]), [("stdout", "ab"), ("stderr", "E"), ("stdout", "cd"),
                                             ("display", "img"), ("stdout", "e")])
        self.assertEqual(runs["r1"]["truncated"], {"bytes_total": runs["r1"]["truncated"]["bytes_shown"],
                                                   "bytes_shown": runs["r1"]["truncated"]["bytes_total"]})

    def test_clear_empties_the_run_at_once(self) -> None:
        runs = fold([queued(), out("r1", "old"), display("r1", "x"),
                     {"event": "clear", "run": "r1", "wait": False}, out("r1", "new")])
        self.assertEqual(texts(runs["r1"]), [("stdout", "new")])
        self.assertEqual(runs["r1"]["truncated"]["bytes_total"], 3)

    def test_clear_with_wait_waits_for_the_next_output(self) -> None:
        clear = {"event": "clear", "run": "r1", "wait": True}
        # Nothing after it: the outputs stay.
        runs = fold([queued(), out("r1", "10%"), clear])
        self.assertEqual(texts(runs["r1"]), [("stdout", "10%")])
        # A display.update is not an output: it does not trigger the clear.
        runs = fold([queued(), display("r1", "bar", "d"), clear, update("r1", "d", "bar2")])
        self.assertEqual(texts(runs["r1"]), [("display", "bar2")])
        for following, expected in [(out("r1", "50%"), ("stdout", "50%")),
                                    (display("r1", "pic"), ("display", "pic")),
                                    ({"event": "result", "run": "r1", "data": {"text/plain": "42"}},
                                     ("result", "42"))]:
            runs = fold([queued(), out("r1", "10%"), clear, following])
            self.assertEqual(texts(runs["r1"]), [expected])
        # The error of run.finished is an output too.
        runs = fold([queued(), out("r1", "10%"), clear,
                     {"event": "run.finished", "run": "r1", "status": "error",
                      "error": {"ename": "Boom", "evalue": "", "traceback": []}}])
        self.assertEqual(texts(runs["r1"]), [("error", "Boom")])

    def test_clear_is_per_run(self) -> None:
        runs = fold([queued("a"), queued("b"), out("a", "A"), out("b", "B"),
                     {"event": "clear", "run": "a", "wait": False}])
        self.assertEqual(texts(runs["a"]), [])
        self.assertEqual(texts(runs["b"]), [("stdout", "B")])

    def test_display_update_applies_to_every_display_with_its_id(self) -> None:
        runs = fold([queued("a"), queued("b"), display("a", "v1", "d"), display("b", "v1", "d"),
                     display("b", "other", "e"), update("b", "d", "v2"), update("b", "nope", "zzz")])
        self.assertEqual(texts(runs["a"]), [("display", "v2")])
        self.assertEqual(texts(runs["b"]), [("display", "v2"), ("display", "other")])
        self.assertEqual(runs["a"]["outputs"][0]["display_id"], "d")

    def test_display_update_of_a_cleared_display_does_nothing(self) -> None:
        runs = fold([queued(), display("r1", "v1", "d"), {"event": "clear", "run": "r1", "wait": False},
                     out("r1", "x"), update("r1", "d", "v2")])
        self.assertEqual(texts(runs["r1"]), [("stdout", "x")])

    def test_long_stream_keeps_head_and_tail_with_the_cut_marked(self) -> None:
        limit = 1000
        text = "".join(f"{i:09}\n" for i in range(1000))  # 10,000 bytes
        chunks = [text[i:i + 333] for i in range(0, len(text), 333)]
        runs = fold([queued(), *(out("r1", c) for c in chunks)], limit)
        outputs = runs["r1"]["outputs"]
        self.assertEqual([o["event"] for o in outputs], ["stream", "cut", "stream"])
        self.assertEqual(outputs[0]["text"], text[:500])
        self.assertEqual(outputs[2]["text"], text[-500:])
        self.assertEqual(outputs[1]["bytes"], 9000)
        self.assertEqual(runs["r1"]["truncated"], {"bytes_total": 10000, "bytes_shown": 1000})

    def test_one_huge_chunk_is_cut_too(self) -> None:
        runs = fold([queued(), out("r1", "a" * 10 + "b" * 100_000 + "c" * 10)], 20)
        self.assertEqual(texts(runs["r1"]), [("stdout", "a" * 10), ("cut", 100_000), ("stdout", "c" * 10)])

    def test_cuts_never_split_a_character_and_count_utf8_bytes(self) -> None:
        text = "é€😀" * 1000  # 2 + 3 + 4 bytes
        runs = fold([queued(), out("r1", text)], 101)
        first, cut, last = runs["r1"]["outputs"]
        self.assertTrue(text.startswith(first["text"]))
        self.assertTrue(text.endswith(last["text"]))
        self.assertLessEqual(utf8_len(first["text"]), 50)
        self.assertLessEqual(utf8_len(last["text"]), 50)
        self.assertEqual(utf8_len(first["text"]) + cut["bytes"] + utf8_len(last["text"]), 9000)
        self.assertEqual(runs["r1"]["truncated"]["bytes_total"], 9000)

    def test_stdout_and_stderr_interleaved_past_the_limit(self) -> None:
        events = [queued()]
        for i in range(200):
            events.append(out("r1", f"o{i:03}\n"))
            events.append(out("r1", f"e{i:03}\n", "stderr"))
        runs = fold(events, 100)
        shown = texts(runs["r1"])
        self.assertEqual(shown[0], ("stdout", "o000\n"))
        self.assertEqual(shown[-1], ("stderr", "e199\n"))
        self.assertEqual(sum(1 for kind, _ in shown if kind == "cut"), 1)
        self.assertLessEqual(runs["r1"]["truncated"]["bytes_shown"], 100)
        self.assertEqual(runs["r1"]["truncated"]["bytes_total"], 2000)

    def test_an_output_alone_over_the_limit_is_a_marker(self) -> None:
        big = "x" * 5000
        runs = fold([queued(), out("r1", "before"), display("r1", big, "d"),
                     {"event": "result", "run": "r1", "data": {"text/plain": big}}, out("r1", "after")], 1000)
        outputs = runs["r1"]["outputs"]
        self.assertEqual(outputs[1]["event"], "cut")
        self.assertEqual((outputs[1]["output"], outputs[1]["display_id"]), ("display", "d"))
        self.assertGreater(outputs[1]["bytes"], 5000)
        self.assertEqual((outputs[2]["event"], outputs[2]["output"]), ("cut", "result"))
        self.assertEqual(texts(runs["r1"])[-1], ("stdout", "after"))
        # An update that fits brings it back; one over the limit hides it again.
        runs = fold([queued(), display("r1", big, "d"), update("r1", "d", "small")], 1000)
        self.assertEqual(texts(runs["r1"]), [("display", "small")])
        runs = fold([queued(), display("r1", "small", "d"), update("r1", "d", big)], 1000)
        self.assertEqual(runs["r1"]["outputs"][0]["event"], "cut")

    def test_displays_under_the_limit_stay_whole(self) -> None:
        body = "y" * 700
        runs = fold([queued(), *(display("r1", f"{i}{body}") for i in range(10))], 1000)
        shown = texts(runs["r1"])
        self.assertEqual(shown[0], ("display", "0" + body))
        self.assertEqual(shown[-1], ("display", "9" + body))
        self.assertEqual(shown[1][0], "cut")
        self.assertLessEqual(runs["r1"]["truncated"]["bytes_shown"], 2000)

    def test_an_error_over_the_limit_is_shortened_not_dropped(self) -> None:
        error = {"code": "x", "ename": "Huge", "evalue": "v" * 10_000,
                 "traceback": [f"line {i} " + "t" * 100 for i in range(1000)]}
        runs = fold([queued(), out("r1", "o" * 5000),
                     {"event": "run.finished", "run": "r1", "status": "error", "error": error}], 2000)
        last = runs["r1"]["outputs"][-1]
        self.assertEqual(last["event"], "error")
        self.assertTrue(last["truncated"])
        self.assertEqual(last["error"]["ename"], "Huge")
        self.assertEqual(last["error"]["traceback"][0], error["traceback"][0])
        self.assertEqual(last["error"]["traceback"][-1], error["traceback"][-1])
        self.assertLess(len(json.dumps(last)), 3000)
        # Lines too long for the budget on their own.
        shrunk = shrink_error({"event": "error", "error": {"ename": "E", "evalue": "",
                                                           "traceback": ["z" * 50_000]}}, 1000)
        self.assertLess(len(json.dumps(shrunk)), 1000)

    def test_run_states_and_fields(self) -> None:
        runs = fold([
            queued("done", by="owner", seq=7), queued("running", seq=8), queued("waiting", seq=9),
            {"event": "run.started", "run": "done", "ts": "t1"},
            {"event": "run.finished", "run": "done", "status": "ok", "ts": "t2"},
            {"event": "run.started", "run": "running", "ts": "t3"}, out("running", "so far"),
        ])
        self.assertEqual({k: runs["done"][k] for k in ("status", "started", "finished", "by", "cell_id", "type",
                                                       "queued_seq")},
                         {"status": "ok", "started": "t1", "finished": "t2", "by": "owner",
                          "cell_id": "c-done", "type": "shell", "queued_seq": 7})
        self.assertEqual([runs[r]["queued_seq"] for r in ("running", "waiting")], [8, 9])
        self.assertEqual((runs["running"]["status"], runs["running"]["finished"]), ("running", None))
        self.assertEqual(texts(runs["running"]), [("stdout", "so far")])
        self.assertEqual((runs["waiting"]["status"], runs["waiting"]["started"], runs["waiting"]["by"]),
                         ("queued", None, None))

    def test_events_of_unknown_runs_and_bad_fields_are_skipped(self) -> None:
        runs = fold([out("ghost", "x"), {"event": "display.update", "display_id": 5}, queued(),
                     {"event": "stream", "run": "r1", "name": "stdout", "text": 7},
                     {"event": "stream", "run": ["r1"], "text": "x"}, out("r1", "ok")])
        self.assertEqual(set(runs), {"r1", "_omitted"})
        self.assertEqual(texts(runs["r1"]), [("stdout", "ok")])

    def test_outputs_that_fit_again_after_an_update_are_shown_whole(self) -> None:
        # Found by test_past_the_limit_the_bounds_hold: 77 + 78 + 1 bytes are
        # over 155, so the middle display was cut; the update (from run a: it
        # reaches every display "d1") takes one byte off the first, and the
        # 155 bytes that remain fit: the replay shows them all.
        events = [queued("a"), queued("b"), display("b", "0", "d1"), display("b", "00\x1f\x1f\x1f"),
                  out("b", "0"), update("a", "d1", "")]
        self.assertEqual(texts(fold(events[:-1], 155)["b"]),
                         [("display", "0"), ("cut", 78), ("stdout", "0")])
        runs = fold(events, 155)
        self.assertEqual(texts(runs["b"]), [("display", ""), ("display", "00\x1f\x1f\x1f"), ("stdout", "0")])
        self.assertEqual(runs["b"]["truncated"], {"bytes_total": 155, "bytes_shown": 155})
        # Cut stream text comes back too, in its place.
        events = [queued(), display("r1", "y" * 100, "d"), out("r1", "s" * 150), update("r1", "d", "")]
        self.assertEqual(texts(fold(events[:-1], 250)["r1"])[1:], [("cut", 25), ("stdout", "s" * 125)])
        self.assertEqual(texts(fold(events, 250)["r1"]), [("display", ""), ("stdout", "s" * 150)])
        # More than the limit cut from between is let go (memory stays bounded):
        # an update of those displays is not counted, and the run does not fit.
        events = [queued(), display("r1", "0"), *[display("r1", "\x1f" * 45, "d")] * 3, display("r1", "1")]
        runs = fold([*events, update("r1", "d", "")], 400)
        self.assertEqual(texts(runs["r1"]), [("display", "0"), ("cut", 1035), ("display", "1")])
        self.assertEqual(runs["r1"]["truncated"], {"bytes_total": 1153, "bytes_shown": 118})
        # Text that alone is over the limit is never needed again: nothing is kept.
        folder = SnapshotFolder(250)
        for event in [queued(), display("r1", "y", "d"), out("r1", "s" * 300)]:
            folder.feed_event(event)
        self.assertEqual(folder.runs["r1"].outputs.middle_bytes, 0)

    def test_a_head_display_that_grows_within_the_limit_stays_shown(self) -> None:
        # The head is over the limit once the display grows: what follows it
        # in the head joins the cut; the display itself (136 bytes of 200) is
        # shown, not an output's own marker (those are for one alone over it).
        runs = fold([queued(), display("r1", "a", "d"), display("r1", "b" * 30), out("r1", "x" * 200),
                     update("r1", "d", "g" * 60)], 200)
        self.assertEqual(texts(runs["r1"]), [("display", "g" * 60), ("cut", 188), ("stdout", "x" * 100)])
        # Across runs, with the budget spent while the update is applied: the
        # oldest run gives way, and its display (let go) is not updated after.
        folder = SnapshotFolder(1024, budget=4096)
        for event in [queued("a"), queued("b"), queued("c"), queued("e"), display("b", "v1", "d"),
                      display("a", "v1", "d"), out("a", "x" * 900), out("b", "y" * 900), out("c", "z" * 3000),
                      out("e", "w" * 3000), update("c", "d", "u" * 900)]:
            folder.feed_event(event)
        runs = {r["run"]: r for r in folder.result()["runs"]}
        self.assertEqual(texts(runs["a"]), [("cut", 977)])
        self.assertEqual(texts(runs["b"]), [("display", "u" * 900), ("cut", 435), ("stdout", "y" * 465)])
        self.assertEqual(folder.held, sum(r.outputs.held for r in folder.runs.values()))
        self.assertLessEqual(folder.held, 4096)

    def test_older_runs_give_way_to_the_budget(self) -> None:
        events = []
        for i in range(10):
            events += [queued(f"r{i}"), out(f"r{i}", "x" * 1000)]
        runs = fold(events, 1024, budget=4096)
        shown = [runs[f"r{i}"]["truncated"]["bytes_shown"] for i in range(10)]
        self.assertEqual(shown[-4:], [1000] * 4)
        self.assertEqual(shown[:6], [0] * 6)
        self.assertEqual(texts(runs["r0"]), [("cut", 1000)])
        self.assertEqual(runs["r0"]["truncated"]["bytes_total"], 1000)
        # An evicted run keeps counting; a clear resets it.
        folder = SnapshotFolder(1024, budget=4096)
        for e in events + [out("r0", "more"), {"event": "clear", "run": "r9", "wait": False}]:
            folder.feed_event(e)
        self.assertEqual(folder.runs["r0"].outputs.total, 1004)
        self.assertLessEqual(folder.shown, 4096)
        self.assertEqual(folder.shown, sum(r.outputs.shown for r in folder.runs.values()))

    def test_only_the_newest_runs_are_listed(self) -> None:
        runs = fold([queued(f"r{i}") for i in range(30)] + [display("r0", "gone", "d"), update("r29", "d", "x")],
                    max_runs=10)
        self.assertEqual(runs["_omitted"], 20)
        self.assertEqual(sorted(k for k in runs if k != "_omitted"), sorted(f"r{i}" for i in range(20, 30)))

    def test_the_result_fits_one_message(self) -> None:
        folder = SnapshotFolder(64 * 1024)
        for i in range(20):
            folder.feed_event(queued(f"r{i}"))
            folder.feed_event(out(f"r{i}", "\x01" * 20_000))  # JSON writes each as \u0001: 6 bytes
        for max_bytes in (10_000_000, 500_000, 150_000, 20_000, 2_000, 100):
            result = folder.result(max_bytes)
            self.assertLessEqual(len(json.dumps(result, separators=(",", ":"))), max_bytes, max_bytes)
            runs = result["runs"]
            self.assertEqual(len(runs) + result["runs_omitted"], 20)
            if runs:  # the newest run is the last to go
                self.assertEqual(runs[-1]["run"], "r19")
            shown = [r["truncated"]["bytes_shown"] for r in runs]
            self.assertEqual(shown, sorted(shown))  # the oldest gave way first
        self.assertEqual(folder.result(100)["runs"], [])

    def test_feeding_yields_every_few_events(self) -> None:
        frames = [(1, proto.encode(queued()))] + [(i, proto.encode(out("r1", "x"))) for i in range(2, 1001)]
        folder = SnapshotFolder()
        steps = sum(1 for _ in folder.feeding(frames))
        self.assertEqual(steps, 1000 // STEP)
        self.assertEqual(folder.last_seq, 1000)
        self.assertEqual(folder.result()["runs"][0]["truncated"]["bytes_total"], 999)

    def test_frames_are_decoded_and_bad_ones_skipped(self) -> None:
        folder = SnapshotFolder()
        folder.feed([(1, proto.encode(queued())), (2, b"not json"), (3, b"[1]"),
                     (4, proto.encode(out("r1", "x")))])
        self.assertEqual(folder.last_seq, 4)
        self.assertEqual(texts(folder.result()["runs"][0]), [("stdout", "x")])


class ByteCutTests(unittest.TestCase):
    @given(st.text(), st.integers(min_value=0, max_value=64))
    def test_head_and_tail_bytes(self, text: str, n: int) -> None:
        text = text.encode("utf-8", "replace").decode("utf-8", "replace") if text else text
        head, tail = head_bytes(text, n), tail_bytes(text, n)
        self.assertTrue(text.startswith(head))
        self.assertTrue(text.endswith(tail))
        self.assertLessEqual(utf8_len(head), n)
        self.assertLessEqual(utf8_len(tail), n)
        # The longest such: one more character would not fit.
        if len(head) < len(text):
            self.assertGreater(utf8_len(text[:len(head) + 1]), n)
        if len(tail) < len(text):
            self.assertGreater(utf8_len(text[len(text) - len(tail) - 1:]), n)


# -- a plain replay to compare with ------------------------------------------------


def replay(events: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """What a client replaying every event shows (no bounds)."""
    runs: dict[str, list[dict[str, Any]]] = {}
    pending: set[str] = set()
    displays: dict[str, list[dict[str, Any]]] = {}

    def add(run: str, output: dict[str, Any]) -> None:
        if run in pending:
            pending.discard(run)
            runs[run].clear()
        last = runs[run][-1] if runs[run] else None
        if output["event"] == "stream" and last and last["event"] == "stream" and last["name"] == output["name"]:
            last["text"] += output["text"]
        else:
            runs[run].append(output)

    for e in events:
        kind, run = e["event"], e.get("run")
        if kind == "run.queued":
            runs[run] = []
        elif kind == "stream":
            add(run, {"event": "stream", "name": e["name"], "text": e["text"]})
        elif kind == "display":
            output = {k: v for k, v in e.items() if k != "run"}
            add(run, output)
            if "display_id" in e:
                displays.setdefault(e["display_id"], []).append(output)
        elif kind == "display.update":
            for output in displays.get(e["display_id"], []):
                output["data"], output["metadata"] = e["data"], e["metadata"]
        elif kind == "clear":
            if e["wait"]:
                pending.add(run)
            else:
                pending.discard(run)
                runs[run].clear()
    return runs


def size_of(output: dict[str, Any]) -> int:
    return utf8_len(output["text"]) if output["event"] == "stream" else _size(output)


RUNS = ["a", "b"]
event_strategy = st.one_of(
    st.builds(lambda r, t, n: out(r, t, n), st.sampled_from(RUNS), st.text(min_size=1, max_size=40),
              st.sampled_from(["stdout", "stderr"])),
    st.builds(lambda r, t, d: display(r, t, d), st.sampled_from(RUNS), st.text(max_size=60),
              st.sampled_from([None, "d1", "d2"])),
    st.builds(lambda r, t, d: update(r, d, t), st.sampled_from(RUNS), st.text(max_size=60),
              st.sampled_from(["d1", "d2"])),
    st.builds(lambda r, w: {"event": "clear", "run": r, "wait": w}, st.sampled_from(RUNS), st.booleans()),
)


class AgainstReplayTests(unittest.TestCase):
    @settings(max_examples=300, deadline=None)
    @given(st.lists(event_strategy, max_size=60))
    def test_within_the_limit_the_snapshot_is_the_replay(self, events: list[dict[str, Any]]) -> None:
        events = [queued(r) for r in RUNS] + events
        expected = replay(json.loads(json.dumps(events)))
        runs = fold(events, 1 << 20)
        for run in RUNS:
            self.assertEqual(runs[run]["outputs"], expected[run])
            total = sum(size_of(o) for o in expected[run])
            self.assertEqual(runs[run]["truncated"], {"bytes_total": total, "bytes_shown": total})

    @settings(max_examples=300, deadline=None)
    @given(st.lists(event_strategy, max_size=80), st.integers(min_value=2, max_value=400))
    # Cut when it did not fit; an update of the head's display then made it fit (155 bytes).
    @example(events=[display("b", "0", "d1"), display("b", "00\x1f\x1f\x1f"), out("b", "0"), update("a", "d1", "")],
             limit=155)
    # More than the limit cut from between (let go), then updated to fit: the
    # replay's 346 bytes would fit 400, but the let-go displays' updates do not count.
    @example(events=[display("b", "0"), *[display("b", "\x1f" * 45, "d1")] * 3, display("b", "1"),
                     update("b", "d1", "")], limit=400)
    def test_past_the_limit_the_bounds_hold(self, events: list[dict[str, Any]], limit: int) -> None:
        events = [queued(r) for r in RUNS] + events
        expected = replay(json.loads(json.dumps(events)))
        runs = fold(events, limit)
        for run in RUNS:
            total = sum(size_of(o) for o in expected[run])
            truncated = runs[run]["truncated"]
            if not any(e["event"] == "display.update" for e in events):
                # (an update of a display already cut out is not counted)
                self.assertEqual(truncated["bytes_total"], total)
            self.assertLessEqual(truncated["bytes_shown"], 2 * limit)
            shown = sum(size_of(o) for o in runs[run]["outputs"] if o["event"] != "cut")
            self.assertEqual(shown, truncated["bytes_shown"])
            if total <= limit:
                if truncated["bytes_total"] == total:
                    self.assertEqual(runs[run]["outputs"], expected[run])
                else:
                    # docs/protocol.rst, Snapshots: "An update of a display
                    # that was cut out for good (...) is not counted in
                    # bytes_total" (a bounded fold cannot keep every cut
                    # display); by that count these outputs do not fit.
                    self.assertGreater(truncated["bytes_total"], limit)
            # A stream shown first or last is the replay's first or last, maybe cut down.
            outputs = runs[run]["outputs"]
            if outputs and outputs[0]["event"] == "stream":
                self.assertEqual(expected[run][0]["name"], outputs[0]["name"])
                self.assertTrue(expected[run][0]["text"].startswith(outputs[0]["text"]))
            if outputs and outputs[-1]["event"] == "stream":
                self.assertEqual(expected[run][-1]["name"], outputs[-1]["name"])
                self.assertTrue(expected[run][-1]["text"].endswith(outputs[-1]["text"]))
            self.assertLessEqual(sum(1 for o in outputs if o["event"] == "cut" and "output" not in o), 1)
            # An output's own marker stands only for one alone over the limit.
            for o in outputs:
                if o["event"] == "cut" and "output" in o:
                    self.assertGreater(o["bytes"], limit)


class HistoryTests(unittest.TestCase):
    """fold_history reads exactly 1..upto, from the store and the in-memory tail."""

    def test_store_then_tail_and_nothing_past_upto(self) -> None:
        store = FakeStore()
        session = make_session(store)
        session.emit("run.queued", run="r", cell_id="c", type="shell")
        for i in range(50):
            session.emit("stream", run="r", name="stdout", text=f"{i},")
        store.flush()  # 1..51 committed
        for i in range(50, 60):
            session.emit("stream", run="r", name="stdout", text=f"{i},")  # 52..61 only in memory
        upto = session.last_seq
        folder = SnapshotFolder()
        fed: list[int] = []

        def fold(frames: list[tuple[int, bytes]]) -> Any:
            fed.extend(seq for seq, _ in frames)
            folder.feed(frames)
            session.emit("stream", run="r", name="stdout", text="late,")  # while the snapshot is built
            return succeed(None)

        # Force small batches, so reads interleave with new events.
        last = fold_history(session, upto, fold, batch_bytes=300)
        self.assertEqual(self.successResultOf(_deferred(last)), upto)
        self.assertEqual(fed, list(range(1, upto + 1)))
        text = folder.result()["runs"][0]["outputs"][0]["text"]
        self.assertEqual(text, "".join(f"{i}," for i in range(60)))

    def test_a_store_gap_is_skipped(self) -> None:
        store = FakeStore()
        session = make_session(store)
        session.emit("run.queued", run="r", cell_id="c", type="shell")
        for i in range(5):
            session.emit("stream", run="r", name="stdout", text=str(i))
        store.flush()
        del store.events["ss_t"][3]  # a row the store could not write
        session._tail.clear()
        folder = SnapshotFolder()
        last = fold_history(session, session.last_seq, lambda frames: succeed(folder.feed(frames)))
        self.assertEqual(self.successResultOf(_deferred(last)), 6)
        self.assertEqual(folder.result()["runs"][0]["outputs"][0]["text"], "0234")


def _deferred(coro: Any) -> Any:
    from twisted.internet.defer import Deferred

    return Deferred.fromCoroutine(coro)
