"""Nothing that cannot be stored gets in (PROTOCOL.md section 15).

Requests: every string of every op, key or value, that holds a lone UTF-16
surrogate is refused with ``bad_request`` naming the field; ``NaN``,
``Infinity`` and out-of-range numbers are ``bad_json``. Output: whatever a
process, a kernel or an HTTP server sends becomes valid UTF-8 (U+FFFD), so
every event and variable can be stored and read back after a restart.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet import reactor
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site

from spinrt import protocol as proto

from .support import Client, start_runtime, ws_url

SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff", "\udc00\ud800", "x\ud83d", "\ude00y"]

# Text that sometimes holds lone surrogates: hypothesis's own text() never does.
any_char = st.integers(0, 0x10FFFF).map(chr)
surrogate = st.integers(0xD800, 0xDFFF).map(chr)
wild_text = st.one_of(
    st.text(max_size=12),
    st.lists(st.one_of(any_char, surrogate), max_size=12).map("".join),
)


def has_surrogate(value: Any) -> bool:
    """Lone surrogates in ``value`` (for a message about to be sent, call it
    on ``sent(message)``: two surrogates that form a pair travel as one
    character)."""
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_surrogate(v) for v in value)
    return False


def frame(message: dict[str, Any]) -> str:
    return json.dumps(message)  # ensure_ascii: surrogates travel as \uXXXX escapes, as a browser sends them


def sent(message: dict[str, Any]) -> Any:
    """What the runtime receives for ``message``."""
    return json.loads(frame(message))


def refused(message: dict[str, Any] | str) -> proto.ProtocolError:
    try:
        proto.parse_request(message if isinstance(message, str) else frame(message))
    except proto.ProtocolError as e:
        return e
    raise AssertionError(f"accepted: {message!r}")


# A value for each kind of parameter check (by the check's name), and the
# places a surrogate can hide in it. A new kind of check fails these tests
# until it is listed here.
_CELL = {"id": "c", "type": "shell", "source": "x", "options": {"env": {"A": "b"}}, "output_variable": "out"}
_GOOD: dict[str, Any] = {
    "_string": "s", "_text": "t", "_nonneg_int": 0, "_port": 22, "_boolean": True,
    "_object": {"k": "v"}, "_variables": {"k": "v"}, "_string_list": ["a"], "_string_map": {"K": "value"},
    "_cell": _CELL, "_document_cell": _CELL, "_cells": [{"type": "shell", "source": "x"}],
    "_notebook_cells": [{"type": "shell", "source": "x"}], "_cell_id": "c1", "_cell_ids": ["c1"],
    "nullable": "c1", "check": "runbook", "_snapshot_bytes": 4096,
    "parse_parameters": [{"name": "p", "kind": "input"}], "_days": 7, "_scope": "runtime",
}


def good_value(check: Any) -> Any:
    return _GOOD[check.__name__]


def poisoned(check: Any, bad: str) -> list[tuple[Any, str]]:
    """(value, the path the refusal must name) for each place in this kind of value."""
    name = check.__name__
    if name in ("_string", "_text", "_cell_id", "nullable", "check"):
        return [(bad, ""), ("ok" + bad, "")]
    if name in ("_object", "_variables"):
        return [({"k": bad}, ".k"), ({bad: 1}, "."), ({"k": {"deep": [1, bad]}}, ".k.deep[1]")]
    if name in ("_string_list", "_cell_ids"):
        return [(["a", bad], "[1]")]
    if name == "_string_map":
        return [({"K": bad}, ".K"), ({bad: "v"}, ".")]
    if name in ("_cell", "_document_cell"):
        return [({"id": "c", "type": "shell", "source": bad}, ".source"), ({"id": "c", "type": bad, "source": ""}, ".type"),
                ({"id": bad, "type": "shell"}, ".id"),
                ({"id": "c", "type": "shell", "options": {"env": {"A": bad}}}, ".options.env.A"),
                ({"id": "c", "type": "shell", "options": {"headers": {bad: "v"}}}, ".options.headers."),
                ({"id": "c", "type": "shell", "output_variable": bad}, ".output_variable")]
    if name in ("_cells", "_notebook_cells"):
        return [([{"type": "shell"}, {"type": "shell", "source": bad}], "[1].source")]
    if name == "parse_parameters":
        return [([{"name": "p", "kind": "input", "label": bad}], "[0].label")]
    if name in ("_nonneg_int", "_port", "_boolean", "_snapshot_bytes", "_days", "_scope"):
        return []
    raise AssertionError(f"no poisoned values for the check {name}: list them here")


class RequestTests(unittest.TestCase):
    def test_the_reported_frame(self) -> None:
        e = refused('{"id":1,"op":"session.create","name":"\\ud800"}')
        self.assertEqual((e.code, e.re), (proto.BAD_REQUEST, 1))
        self.assertIn("'name'", e.message)
        json.loads(proto.encode(proto.failure(e.re, e.code, e.message)))  # the reply itself is sendable

    @staticmethod
    def good_request(op: str, name: str) -> dict[str, Any]:
        """A request of ``op`` that parses and carries ``name``: its required
        parameters and ``name``, plus the fewest others it needs (an op may
        need exactly one of two parameters, or one only with another)."""
        spec = proto.OPS[op]
        base = {"id": 7, "op": op, name: good_value(spec[name][0]),
                **{n: good_value(c) for n, (c, required) in spec.items() if required}}
        candidates = [dict(base)] + [{**base, other: good_value(c)} for other, (c, _) in spec.items() if other not in base]
        for message in candidates:
            try:
                proto.parse_request(frame(message))
            except proto.ProtocolError:
                continue
            return message
        raise AssertionError(f"no good {op} request carrying {name!r}: teach good_request")

    def test_every_field_of_every_op(self) -> None:
        checked = 0
        for op, spec in proto.OPS.items():
            for name, (check, _) in spec.items():
                base = self.good_request(op, name)
                for bad in SURROGATES:
                    for value, where in poisoned(check, bad):
                        e = refused({**base, name: value})
                        self.assertEqual((e.code, e.re), (proto.BAD_REQUEST, 7), (op, name, value))
                        self.assertIn(f"'{name}{where}", e.message, (op, name, value))
                        checked += 1
            # A field the op does not know is checked too: it must not carry poison either.
            e = refused({"id": 7, "op": op, "extra": {"x": "\udfff"}})
            self.assertIn("'extra.x'", e.message)
        self.assertGreater(checked, 300)

    def test_id_and_op_with_surrogates(self) -> None:
        e = refused({"id": "\ud800", "op": "ping"})
        self.assertEqual((e.code, e.re), (proto.BAD_REQUEST, None))  # the id itself cannot be echoed
        e = refused({"id": 1, "op": "pi\udc00ng"})
        self.assertEqual((e.code, e.re), (proto.BAD_REQUEST, 1))
        self.assertIn("'op'", e.message)

    def test_valid_pairs_and_escaped_backslashes_pass(self) -> None:
        for text in ("\U0001F600", "a\U0001F600b", "\\ud800 as text", "\U0010FFFF"):
            request = proto.parse_request(frame({"id": 1, "op": "session.create", "name": text}))
            self.assertEqual(request.params["name"], text)
        # A pair sent as two escapes is one character, not two surrogates.
        paired = proto.parse_request('{"id":1,"op":"session.create","name":"a\\ud83d\\ude00b"}')
        self.assertEqual(paired.params["name"], "a\U0001F600b")
        literal = '{"id":1,"op":"session.create","name":"\\\\ud800"}'  # an escaped backslash, not an escape
        self.assertEqual(proto.parse_request(literal).params["name"], "\\ud800")
        self.assertEqual(proto.parse_request('{"id":1,"op":"session.create","name":"\\uD83D\\uDE00"}')
                         .params["name"], "\U0001F600")

    def test_non_standard_numbers_are_bad_json(self) -> None:
        for text in ("NaN", "-NaN", "Infinity", "-Infinity", "1e400", "-1e400", "1.8e308", "123e999999"):
            for where in ('"id":%s,"op":"ping"', '"id":1,"op":"ping","x":%s',
                          '"id":1,"op":"cell.run","session":"s","cell":{"type":"shell","options":{"timeout_s":%s}}'):
                e = refused("{" + where % text + "}")
                self.assertEqual(e.code, proto.BAD_JSON, (text, where))
        # Large but finite numbers and big integers are fine.
        self.assertEqual(proto.parse_request('{"id":1,"op":"ping","x":1e308}').op, "ping")
        self.assertEqual(proto.parse_request('{"id":123456789012345678901234567890,"op":"ping"}').id,
                         123456789012345678901234567890)

    @settings(max_examples=400, deadline=None)
    @given(st.sampled_from(sorted(proto.OPS)), st.data())
    def test_arbitrary_unicode_in_every_field(self, op: str, data: Any) -> None:
        message: dict[str, Any] = {"id": 1, "op": op}
        for name, (check, _) in proto.OPS[op].items():
            kind = check.__name__
            if kind in ("_string", "_text", "_cell_id", "nullable", "check"):
                message[name] = data.draw(wild_text)
            elif kind in ("_object", "_variables", "_string_map"):
                message[name] = data.draw(st.dictionaries(wild_text, wild_text, max_size=3))
            elif kind in ("_string_list", "_cell_ids"):
                message[name] = data.draw(st.lists(wild_text, max_size=3))
            elif kind in ("_cell", "_document_cell", "_cells", "_notebook_cells"):
                cell = {"id": data.draw(wild_text), "type": data.draw(wild_text), "source": data.draw(wild_text),
                        "options": data.draw(st.dictionaries(wild_text, wild_text, max_size=3))}
                message[name] = cell if kind in ("_cell", "_document_cell") else [cell]
        text = frame(message)
        try:
            proto.parse_request(text)
        except proto.ProtocolError as e:
            self.assertEqual(e.re, 1)
            self.assertIn(e.code, {proto.BAD_REQUEST})
            reply = proto.encode(proto.failure(e.re, e.code, e.message))
            orjson.loads(reply)  # strict JSON, valid UTF-8
            if has_surrogate(sent(message)):
                self.assertIn("not valid Unicode", e.message)
        else:
            self.assertFalse(has_surrogate(sent(message)), text)


class EncodeTests(unittest.TestCase):
    json_like = st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), wild_text),
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(wild_text, inner, max_size=4)),
        max_leaves=20,
    )

    @settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(json_like)
    def test_every_event_is_strict_json_in_utf8(self, value: Any) -> None:
        data = proto.encode({"event": "stream", "text": value})
        parsed = orjson.loads(data)  # refuses NaN, Infinity, lone surrogates and bad UTF-8
        self.assertFalse(has_surrogate(parsed))

    def test_what_is_mended(self) -> None:
        data = json.loads(proto.encode({"t": "a\ud800b", "n": float("nan"), "i": float("-inf"),
                                        "k": {"\udc80": 1}, "big": 2**70, "ok": "\u00e9"}))
        self.assertEqual(data, {"t": "a\ufffdb", "n": "NaN", "i": "-Infinity", "k": {"\ufffd": 1},
                                "big": 2**70, "ok": "\u00e9"})


# -- end to end: the real runtime, a restart, and output from the outside world -----


def collect_frames(n: int) -> list[dict[str, Any]]:
    """Draw ``n`` requests with arbitrary Unicode in every string field of
    every op. ``$S`` / ``$T`` stand for two real sessions, filled in later.
    Cells are markdown or of no known type: nothing arbitrary is executed."""
    frames: list[dict[str, Any]] = []
    session = st.one_of(st.just("$S"), st.just("$S"), wild_text)
    cell = st.fixed_dictionaries(
        {"type": st.sampled_from(["markdown", "markdown", "no-such-type"]), "source": wild_text},
        optional={"id": wild_text, "options": st.dictionaries(wild_text, wild_text, max_size=3),
                  "output_variable": wild_text},
    )
    params = {
        "session.create": {"name": wild_text, "variables": st.dictionaries(wild_text, wild_text, max_size=3)},
        "session.attach": {"session": session, "since": st.integers(0, 5)},
        "session.detach": {"session": st.one_of(st.just("$T"), wild_text)},
        "session.close": {"session": st.one_of(st.just("$T"), wild_text)},
        "cell.run": {"session": session, "cell": cell},
        "cells.run": {"session": session, "cells": st.lists(cell, min_size=1, max_size=3)},
        "run.cancel": {"session": session, "run": wild_text},
        "variables.list": {"session": session},
        "variables.clear": {"session": session, "names": st.lists(wild_text, max_size=2)},
        "secrets.set": {"session": session, "secrets": st.dictionaries(wild_text, wild_text, max_size=2)},
        "runtime.configure": {"host_ssh": st.dictionaries(wild_text, wild_text, max_size=3)},
        "connections.set": {"name": wild_text, "host": wild_text, "username": wild_text,
                            "private_key": wild_text},
        "connections.delete": {"name": wild_text},
        "hello": {}, "ping": {}, "session.list": {}, "connections.list": {},
        "session.document": {"session": session},
        "session.snapshot": {"session": session},
        "cell.set": {"session": session, "cell": cell.map(lambda c: {"id": "c1", **c}),
                     "after": st.one_of(st.none(), wild_text)},
        "cell.delete": {"session": session, "cell_id": st.one_of(st.just("c1"), wild_text)},
        "cell.move": {"session": session, "cell_id": wild_text, "after": st.one_of(st.none(), wild_text)},
        "notebook.list": {},
        "notebook.get": {"name": wild_text},
        "notebook.save": {"name": wild_text, "cells": st.lists(cell, max_size=2)},
        "notebook.rename": {"name": wild_text, "new_name": wild_text},
        "notebook.delete": {"name": wild_text},
    }
    strategy = st.sampled_from(sorted(params)).flatmap(
        lambda op: st.fixed_dictionaries({"op": st.just(op), **params[op]}))

    @settings(max_examples=n, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def draw(message: dict[str, Any]) -> None:
        frames.append(message)

    draw()
    return frames


def fill_sessions(value: Any, sids: dict[str, str]) -> Any:
    if isinstance(value, str):
        return sids.get(value, value)
    if isinstance(value, dict):
        return {k: fill_sessions(v, sids) for k, v in value.items()}
    if isinstance(value, list):
        return [fill_sessions(v, sids) for v in value]
    return value


class Json(Resource):
    """Bodies no well-behaved server sends, exactly as bytes on the wire."""

    isLeaf = True
    bodies = {
        b"/surrogate": (b"application/json", b'{"s": "a\\ud800b", "n": NaN, "list": [Infinity]}'),
        b"/utf7": (b"text/plain; charset=utf-7", b"x+2AA-y"),  # decodes to a lone surrogate
        b"/bad-utf8": (b"text/plain; charset=utf-8", b"a\xff\xfeb\xed\xa0\x80c"),
    }

    def render_GET(self, request: Any) -> bytes:
        media, body = self.bodies[request.path]
        request.setHeader(b"content-type", media)
        return body


class EndToEndTests(unittest.TestCase):
    timeout = 240

    async def restart(self, service: Any) -> Any:
        home = service.config.home
        await service.stopService()
        return await start_runtime(self, home=home)

    async def test_arbitrary_frames_are_answered_stored_and_survive_a_restart(self) -> None:
        frames = collect_frames(300)
        service = await start_runtime(self)
        client = await Client.connect(ws_url(service))
        sids = {"$S": (await client.request("session.create", name="main"))["session"]["id"],
                "$T": (await client.request("session.create", name="spare"))["session"]["id"]}
        replies = []
        for i, message in enumerate(frames):
            message = fill_sessions(message, sids)
            rid = f"f{i}"
            waiting = client.wait_new(lambda m, rid=rid: m.get("re") == rid, timeout=30)
            client.send_raw(json.dumps({"id": rid, **message}))
            reply = await waiting
            replies.append(reply)
            if has_surrogate(sent(message)):
                self.assertEqual(reply["error"]["code"], "bad_request", (message, reply))
            elif not reply["ok"]:
                self.assertNotEqual(reply["error"]["code"], "internal_error", (message, reply))
        self.assertEqual(len(replies), len(frames))
        self.assertEqual(len([m for m in client.messages if str(m.get("re", "")).startswith("f")]), len(frames))
        self.assertTrue(any(r["ok"] for r in replies))
        self.assertTrue(any(not r["ok"] for r in replies))
        # Let every accepted run finish, then everything must be committed.
        manager = service.manager
        for sid in sids.values():
            while manager.get(sid).runs:
                await client.wait_new(lambda m: m.get("event") == "run.finished", timeout=30)
        await service.store.drain()
        self.assertIsNone(service.store.fault)
        self.assertEqual(service.store.rows_failed, 0)
        before = {sid: s.last_seq for sid, s in manager.sessions.items()}
        live = {m["seq"]: m for m in client.events(session=sids["$S"])}
        await client.close()
        again = await self.restart(service)
        self.assertEqual(set(again.manager.sessions), set(before))
        for sid, last in before.items():
            stored = await again.store.read_events(sid, 0, limit=1_000_000, max_bytes=1 << 30)
            self.assertEqual([s for s, _ in stored], list(range(1, last + 1)), sid)
            for seq, body in stored:
                event = orjson.loads(body)  # strict
                if sid == sids["$S"] and seq in live:
                    self.assertEqual(event, live[seq])

    async def test_output_from_outside_becomes_valid_unicode_and_survives_a_restart(self) -> None:
        server = reactor.listenTCP(0, Site(Json()), interface="127.0.0.1")
        self.addCleanup(server.stopListening)
        base = f"http://127.0.0.1:{server.getHost().port}"
        service = await start_runtime(self, environ={"REQUESTS_CA_BUNDLE": ""})
        client = await Client.connect(ws_url(service))
        sid = (await client.request("session.create", name="outside"))["session"]["id"]
        shell = await client.run(sid, {"type": "shell", "output_variable": "sh",
                                       "source": r"printf 'a\xff\xfeb\xed\xa0\x80c\n'; printf 'e\xed\xb0\x80' >&2"})
        self.assertEqual(client.output(shell["run"]), "a\ufffd\ufffdb\ufffd\ufffd\ufffdc\n")
        self.assertIn("\ufffd", client.output(shell["run"], "stderr"))
        runs = {}
        for path in ("surrogate", "utf7", "bad-utf8"):
            finished = await client.run(sid, {"type": "rest", "output_variable": path.replace("-", "_"),
                                              "options": {"url": f"{base}/{path}"}})
            self.assertEqual(finished["status"], "ok", finished)
            runs[path] = finished["run"]
        variables = service.manager.get(sid).variables
        self.assertEqual(variables["surrogate"]["json"], {"s": "a\ufffdb", "n": "NaN", "list": ["Infinity"]})
        self.assertEqual(variables["utf7"]["text"], "x\ufffdy")
        self.assertEqual(variables["bad_utf8"]["text"], "a\ufffd\ufffdb\ufffd\ufffd\ufffdc")
        [result] = client.events(run=runs["surrogate"], kind="result")
        self.assertEqual(result["data"]["application/json"]["s"], "a\ufffdb")
        await service.store.drain()
        self.assertIsNone(service.store.fault)
        self.assertEqual(service.store.rows_failed, 0)
        last = service.manager.get(sid).last_seq
        live = {m["seq"]: m for m in client.events(session=sid)}
        await client.close()
        again = await self.restart(service)
        stored = await again.store.read_events(sid, 0, limit=100_000, max_bytes=1 << 30)
        self.assertEqual([s for s, _ in stored], list(range(1, last + 1)))
        for seq, body in stored:
            self.assertEqual(orjson.loads(body), live[seq])
        restored = again.manager.get(sid).variables
        self.assertEqual(restored["surrogate"]["json"]["s"], "a\ufffdb")
        self.assertEqual(restored["sh"]["stdout"], "a\ufffd\ufffdb\ufffd\ufffd\ufffdc\n")

    async def test_python_output_with_lone_surrogates(self) -> None:
        service = await start_runtime(self)
        client = await Client.connect(ws_url(service))
        self.addCleanup(client.close)
        sid = (await client.request("session.create", name="py"))["session"]["id"]

        async def py(source: str) -> str:
            finished = await client.run(sid, {"type": "python", "source": source}, timeout=120)
            self.assertEqual(finished["status"], "ok", finished)
            return finished["run"]

        run = await py("import sys\nprint('p\\ud800q')\nsys.stderr.write('e\\udfff\\n')")
        self.assertEqual(client.output(run), "p\ufffdq\n")
        self.assertEqual(client.output(run, "stderr"), "e\ufffd\n")
        for text in ("d\\udc00", "d\\udcff", "d\\ud800"):  # in and out of surrogateescape's range
            run = await py(f"display({{'text/plain': '{text}'}}, raw=True)")
            [shown] = client.events(run=run, kind="display")
            self.assertEqual(shown["data"]["text/plain"], "d\ufffd")
        # NaN in JSON output: jupyter_client (orjson) already sends it as null.
        run = await py("display({'application/json': {'x': float('nan')}}, raw=True)")
        [shown] = client.events(run=run, kind="display")
        self.assertEqual(shown["data"]["application/json"], {"x": None})
        run = await py("g = 'glob\\ud800al'\nnan = float('nan')\n'r\\udbff'")
        [result] = client.events(run=run, kind="result")
        self.assertEqual(result["data"]["text/plain"], "'r\\udbff'")  # repr() escapes it already
        failed = await client.run(sid, {"type": "python", "source": "raise ValueError('v\\ud800')"})
        self.assertEqual(failed["error"]["evalue"], "v\ufffd")
        # Kernel globals in templates: mended before anything stores them.
        md = await client.run(sid, {"type": "markdown", "source": "{{g}} {{nan}}"})
        self.assertEqual(md["status"], "ok", md)
        [shown] = client.events(run=md["run"], kind="display")
        self.assertEqual(shown["data"]["text/markdown"], "glob\ufffdal NaN")
        await service.store.drain()
        self.assertIsNone(service.store.fault)
        self.assertEqual(service.store.rows_failed, 0)
        stored = await service.store.read_events(sid, 0, limit=100_000, max_bytes=1 << 30)
        self.assertEqual(len(stored), service.manager.get(sid).last_seq)
        for _, body in stored:
            orjson.loads(body)
