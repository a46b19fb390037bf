"""Presence, identity and session.snapshot at the op layer, with fakes (no sockets)."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.task import Clock
from twisted.trial import unittest

from spinrt import protocol as proto
from spinrt.sessions.session import Session
from spinrt.web.ops import ClientConnection

from .test_session_unit import FakeStore, ScriptedExecutor


class Manager:
    """Sessions in a dict, closed at once."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.store = FakeStore()
        self.sessions: dict[str, Session] = {}
        self.add("ss_a")

    def add(self, sid: str) -> Session:
        session = Session(id=sid, name=sid, created="now", store=self.store, clock=self.clock,
                          executor=ScriptedExecutor(), wallclock=lambda: 0.0)
        self.sessions[sid] = session
        return session

    def get(self, sid: str) -> Session:
        if sid not in self.sessions:
            raise proto.ProtocolError(proto.NO_SUCH_SESSION, f"no session {sid}")
        return self.sessions[sid]

    def create(self, name: Any, variables: Any) -> Session:
        return self.add(f"ss_{len(self.sessions)}")

    def list(self) -> list[dict[str, Any]]:
        return [s.describe() for s in self.sessions.values()]

    async def close(self, sid: str) -> None:
        worker = self.get(sid).close()
        if worker is not None:
            await worker


class Conn:
    """A ClientConnection and what it was sent."""

    def __init__(self, manager: Manager) -> None:
        self.clock = manager.clock
        self.sent: list[dict[str, Any]] = []
        self.conn = ClientConnection(manager, lambda f: self.sent.append(json.loads(f)), {"version": "t"})
        self._id = 0

    def request(self, op: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self.conn.handle(json.dumps({"id": self._id, "op": op, **params}).encode())
        for _ in range(10_000):  # work done in slices (session.snapshot) runs on the clock
            if not self.clock.getDelayedCalls():
                break
            self.clock.advance(0)
        replies = [m for m in self.sent if m.get("re") == self._id]
        assert replies, f"no reply to {op}"
        return replies[0]

    def presences(self, sid: str = "ss_a") -> list[list[str]]:
        return [[c["client"] for c in m["clients"]] for m in self.sent
                if m.get("event") == "presence" and m["session"] == sid]

    def events(self) -> list[dict[str, Any]]:
        return [m for m in self.sent if "seq" in m]


class IdentityTests(unittest.TestCase):
    def test_every_connection_is_the_owner_with_its_own_client_id(self) -> None:
        manager = Manager()
        a, b = Conn(manager).conn, Conn(manager).conn
        self.assertEqual(a.identity, {"name": "owner", "role": "owner"})
        self.assertNotEqual(a.client, b.client)
        self.assertTrue(a.client.startswith("cl_"))
        self.assertEqual(a.you(), {"client": a.client, "name": "owner", "role": "owner"})

    def test_welcome_carries_you(self) -> None:
        welcome = proto.welcome("1.0", {"client": "cl_x", "name": "owner", "role": "owner"})
        self.assertEqual(welcome["you"], {"client": "cl_x", "name": "owner", "role": "owner"})
        self.assertNotIn("seq", welcome)
        self.assertNotIn("you", proto.welcome("1.0"))


class PresenceTests(unittest.TestCase):
    def setUp(self) -> None:
        self.manager = Manager()
        self.session = self.manager.sessions["ss_a"]
        self.a, self.b = Conn(self.manager), Conn(self.manager)
        self.ida, self.idb = self.a.conn.client, self.b.conn.client

    def test_attach_reply_and_everyone_see_who_joins_in_order(self) -> None:
        reply = self.a.request("session.attach", session="ss_a")
        self.assertEqual(reply["clients"], [{"client": self.ida, "name": "owner", "role": "owner"}])
        reply = self.b.request("session.attach", session="ss_a")
        self.assertEqual([c["client"] for c in reply["clients"]], [self.ida, self.idb])
        self.assertEqual(self.a.presences(), [[self.ida], [self.ida, self.idb]])
        self.assertEqual(self.b.presences(), [[self.ida, self.idb]])
        presence = [m for m in self.b.sent if m.get("event") == "presence"][0]
        self.assertEqual(set(presence), {"event", "session", "clients"})  # no seq, no ts

    def test_presence_is_not_history(self) -> None:
        self.a.request("session.attach", session="ss_a")
        self.b.request("session.attach", session="ss_a")
        self.b.request("session.detach", session="ss_a")
        self.assertEqual(self.session.last_seq, 0)
        self.assertEqual(self.manager.store.events, {})
        late = Conn(self.manager)
        late.request("session.attach", session="ss_a", since=0)
        self.assertEqual(late.events(), [])  # nothing replayed

    def test_detach_tells_the_others(self) -> None:
        self.a.request("session.attach", session="ss_a")
        self.b.request("session.attach", session="ss_a")
        self.b.request("session.detach", session="ss_a")
        self.assertEqual(self.a.presences()[-1], [self.ida])
        self.assertEqual(len(self.b.presences()), 1)  # only its own join
        # Detaching again (not attached) tells nobody anything.
        count = len(self.a.presences())
        self.b.request("session.detach", session="ss_a")
        self.assertEqual(len(self.a.presences()), count)

    def test_disconnect_tells_the_others(self) -> None:
        self.a.request("session.attach", session="ss_a")
        self.b.request("session.attach", session="ss_a")
        other = self.manager.add("ss_b")
        self.b.request("session.attach", session="ss_b")
        watcher = Conn(self.manager)
        watcher.request("session.attach", session="ss_b")
        self.b.conn.closed()
        self.assertEqual(self.a.presences()[-1], [self.ida])
        self.assertEqual(watcher.presences("ss_b")[-1], [watcher.conn.client])
        self.assertEqual(len(other.subscribers), 1)

    def test_reattach_is_not_a_join(self) -> None:
        self.a.request("session.attach", session="ss_a")
        self.b.request("session.attach", session="ss_a")
        before = len(self.b.presences())
        reply = self.a.request("session.attach", session="ss_a", since=0)
        self.assertEqual([c["client"] for c in reply["clients"]], [self.ida, self.idb])
        self.assertEqual(len(self.b.presences()), before)
        self.assertEqual(len(self.session.subscribers), 2)

    def test_create_reply_carries_clients(self) -> None:
        reply = self.a.request("session.create")
        sid = reply["session"]["id"]
        self.assertEqual([c["client"] for c in reply["clients"]], [self.ida])
        self.assertEqual(self.a.presences(sid), [[self.ida]])

    def test_session_list_shows_clients_and_notebook(self) -> None:
        self.a.request("session.attach", session="ss_a")
        self.b.request("session.attach", session="ss_a")
        self.manager.add("ss_empty")
        sessions = {s["id"]: s for s in self.a.request("session.list")["sessions"]}
        self.assertEqual([c["client"] for c in sessions["ss_a"]["clients"]], [self.ida, self.idb])
        self.assertEqual(sessions["ss_a"]["clients"][0]["name"], "owner")
        self.assertEqual(sessions["ss_empty"]["clients"], [])
        self.assertIsNone(sessions["ss_a"]["notebook"])
        self.session.notebook = "runbook"  # type: ignore[attr-defined]
        sessions = {s["id"]: s for s in self.a.request("session.list")["sessions"]}
        self.assertEqual(sessions["ss_a"]["notebook"], "runbook")

    def test_close_ends_every_attachment_after_session_closed(self) -> None:
        self.a.request("session.attach", session="ss_a")
        self.b.request("session.attach", session="ss_a")
        self.b.conn.pause()  # b lags behind
        self.a.request("session.close", session="ss_a")
        self.assertEqual(self.a.presences()[-1], [])
        self.assertEqual([e["event"] for e in self.a.events()], ["session.closed"])
        self.assertEqual(self.b.events(), [])
        self.b.conn.resume()
        self.assertEqual([e["event"] for e in self.b.events()], ["session.closed"])
        self.assertEqual(self.b.presences()[-1], [])
        self.assertEqual(self.session.subscribers, set())
        listed = self.a.request("session.list")["sessions"][0]
        self.assertEqual(listed["clients"], [])
        # A closed session's history can still be read: attaching is a join again.
        reply = self.b.request("session.attach", session="ss_a")
        self.assertEqual([c["client"] for c in reply["clients"]], [self.idb])
        self.assertEqual([e["event"] for e in self.b.events()], ["session.closed", "session.closed"])
        # Closing it again does not send anyone away.
        self.a.request("session.close", session="ss_a")
        self.assertEqual(len(self.session.subscribers), 1)

    def test_a_full_socket_gets_the_latest_presence_once_it_drains(self) -> None:
        self.a.request("session.attach", session="ss_a")
        self.a.conn.pause()
        self.session.emit("x")
        for _ in range(5):
            self.b.request("session.attach", session="ss_a")
            self.b.request("session.detach", session="ss_a")
        self.b.request("session.attach", session="ss_a")
        self.assertEqual(self.a.presences(), [[self.ida]])
        self.a.conn.resume()
        self.assertEqual(self.a.presences(), [[self.ida], [self.ida, self.idb]])
        kinds = [m.get("event") for m in self.a.sent if "event" in m]
        self.assertEqual(kinds[-2:], ["presence", "x"])  # the presence first, then the backlog

    def test_bad_requests_change_no_presence(self) -> None:
        reply = self.a.request("session.attach", session="ss_missing")
        self.assertEqual(reply["error"]["code"], "no_such_session")
        reply = self.a.request("session.detach", session="ss_missing")
        self.assertEqual(reply["error"]["code"], "no_such_session")
        self.assertEqual(self.a.presences(), [])


class SnapshotOpTests(unittest.TestCase):
    def setUp(self) -> None:
        self.manager = Manager()
        self.session = self.manager.sessions["ss_a"]
        self.c = Conn(self.manager)

    def test_reply_shape_and_last_seq(self) -> None:
        (run,) = self.session.enqueue([proto.Cell(id="c1", type="shell", source="x", options={})])
        self.session.emit("stream", run=run.id, name="stdout", text="hello")
        reply = self.c.request("session.snapshot", session="ss_a")
        self.assertTrue(reply["ok"], reply)
        self.assertEqual(reply["last_seq"], self.session.last_seq)
        self.assertEqual(set(reply["document"]), {"notebook", "cells"})
        (described,) = reply["runs"]
        self.assertEqual((described["run"], described["cell_id"], described["type"], described["status"]),
                         (run.id, "c1", "shell", "running"))
        self.assertEqual(described["outputs"], [{"event": "stream", "name": "stdout", "text": "hello"}])
        self.assertEqual(described["truncated"], {"bytes_total": 5, "bytes_shown": 5})
        # Attaching since last_seq replays nothing the snapshot holds.
        self.c.request("session.attach", session="ss_a", since=reply["last_seq"])
        self.session.emit("stream", run=run.id, name="stdout", text="more")
        self.assertEqual([e["seq"] for e in self.c.events()], [reply["last_seq"] + 1])

    def test_the_fold_runs_in_slices_on_the_clock(self) -> None:
        """Nothing is folded inside the request's call: every slice is a
        separate call of the reactor (the clock here), so others get their turn."""
        (run,) = self.session.enqueue([proto.Cell(id="c1", type="shell", source="x", options={})])
        for i in range(3000):
            self.session.emit("stream", run=run.id, name="stdout", text=f"{i}\n")
        self.c.conn.handle(b'{"id": "s", "op": "session.snapshot", "session": "ss_a"}')
        self.assertEqual([m for m in self.c.sent if m.get("re") == "s"], [])
        self.assertTrue(self.manager.clock.getDelayedCalls())
        while self.manager.clock.getDelayedCalls():
            self.manager.clock.advance(0)
        (reply,) = [m for m in self.c.sent if m.get("re") == "s"]
        self.assertEqual(reply["runs"][0]["outputs"][0]["text"], "".join(f"{i}\n" for i in range(3000)))

    def test_max_output_bytes_is_checked(self) -> None:
        for bad in (0, -1, 1023, 8 * 1024 * 1024 + 1, "256", True, 1.5, [1], {}):
            reply = self.c.request("session.snapshot", session="ss_a", max_output_bytes=bad)
            self.assertEqual(reply["error"]["code"], "bad_request", bad)
            self.assertIn("max_output_bytes", reply["error"]["message"])
        for good in (1024, 8 * 1024 * 1024, None):  # null: the default, as for every optional parameter
            self.assertTrue(self.c.request("session.snapshot", session="ss_a", max_output_bytes=good)["ok"])

    def test_max_output_bytes_is_applied(self) -> None:
        (run,) = self.session.enqueue([proto.Cell(id="c1", type="shell", source="x", options={})])
        self.session.emit("stream", run=run.id, name="stdout", text="x" * 5000)
        reply = self.c.request("session.snapshot", session="ss_a", max_output_bytes=1024)
        self.assertEqual([o["event"] for o in reply["runs"][0]["outputs"]], ["stream", "cut", "stream"])
        self.assertEqual(reply["runs"][0]["truncated"], {"bytes_total": 5000, "bytes_shown": 1024})

    def test_the_reply_fits_the_largest_message(self) -> None:
        for i in range(10):
            (run,) = self.session.enqueue([proto.Cell(id=f"c{i}", type="shell", source="x", options={})])
            self.session.emit("stream", run=run.id, name="stdout", text="y" * 100_000)
        self.c.conn.max_message_size = 300_000  # type: ignore[attr-defined]
        reply = self.c.request("session.snapshot", session="ss_a")
        self.assertLess(len(json.dumps(reply)), 300_000)
        shown = [r["truncated"]["bytes_shown"] for r in reply["runs"]]
        self.assertEqual(shown[-2:], [100_000, 100_000])
        self.assertEqual(shown[0], 0)
        self.assertEqual(len(reply["runs"]), 10)
        # A document larger than a message: told so, not a reply that never arrives.
        self.session.document_snapshot = lambda: {"notebook": None, "cells": [{"source": "z" * 400_000}]}  # type: ignore[attr-defined]
        reply = self.c.request("session.snapshot", session="ss_a")
        self.assertEqual(reply["error"]["code"], "too_large")

    def test_unknown_session(self) -> None:
        for params in ({"session": "ss_nope"}, {}):
            reply = self.c.request("session.snapshot", **params)
            self.assertFalse(reply["ok"])
        self.assertEqual(self.c.request("session.snapshot", session="ss_nope")["error"]["code"], "no_such_session")
