"""Session documents over a real WebSocket on 127.0.0.1 (PROTOCOL.md section 10)."""

from __future__ import annotations

import os
import tempfile
from typing import Any

from twisted.trial import unittest

from spinrt.sessions.document import fold

from .support import Client, start_runtime, ws_url


def cell(cell_id: Any, source: str = "", ctype: str = "shell", **extra: Any) -> dict[str, Any]:
    return {"id": cell_id, "type": ctype, "source": source, "options": {}, **extra}


def is_event(kind: str, **fields: Any) -> Any:
    return lambda m: m.get("event") == kind and all(m.get(k) == v for k, v in fields.items())


class DocumentsOverWebSocketTests(unittest.TestCase):
    timeout = 90

    async def setUp(self) -> None:
        self.home = tempfile.mkdtemp(prefix="spin-home-", dir=os.path.abspath("."))
        self.service = await start_runtime(self, home=self.home)
        self.url = ws_url(self.service)

    async def client(self) -> Client:
        client = await Client.connect(self.url)
        self.addCleanup(client.close)
        return client

    async def ok(self, client: Client, op: str, **params: Any) -> dict[str, Any]:
        reply = await client.request(op, **params)
        self.assertTrue(reply["ok"], reply)
        return reply

    async def new_session(self, client: Client, **params: Any) -> str:
        return (await self.ok(client, "session.create", **params))["session"]["id"]

    async def test_hello_lists_documents(self) -> None:
        c = await self.client()
        self.assertIn("documents", (await self.ok(c, "hello"))["runtime"]["features"])

    async def test_two_clients_see_each_others_edits_live(self) -> None:
        alice, bob = await self.client(), await self.client()
        sid = await self.new_session(alice)
        await self.ok(bob, "session.attach", session=sid)
        seeing = bob.wait_new(is_event("cell.set", session=sid))
        version = (await self.ok(alice, "cell.set", session=sid, cell=cell("a", "echo from alice")))["version"]
        event = await seeing
        self.assertEqual((event["cell"], event["after"], event["version"], event["by"]),
                         (cell("a", "echo from alice"), None, version, "owner"))
        # Alice sees her own edit from the log too.
        await alice.wait_for(is_event("cell.set", session=sid, seq=version))
        seeing = alice.wait_new(is_event("cell.moved", session=sid))
        await self.ok(bob, "cell.set", session=sid, cell=cell("b", "echo from bob"))
        await self.ok(bob, "cell.move", session=sid, cell_id="b", after=None)
        self.assertEqual((await seeing)["cell_id"], "b")
        seeing = bob.wait_new(is_event("cell.deleted", session=sid))
        await self.ok(alice, "cell.delete", session=sid, cell_id="a")
        self.assertEqual((await seeing)["cell_id"], "a")
        for c in (alice, bob):
            document = (await self.ok(c, "session.document", session=sid))["document"]
            self.assertEqual([x["id"] for x in document["cells"]], ["b"])
            self.assertEqual(fold(c.events(session=sid)).cells(), document["cells"])

    async def test_a_late_joiner_rebuilds_the_document_by_replay(self) -> None:
        alice = await self.client()
        sid = await self.new_session(alice)
        for i in range(20):
            await self.ok(alice, "cell.set", session=sid, cell=cell(f"c{i}", f"echo {i}"),
                          **({"after": None} if i % 3 == 0 else {}))
        await self.ok(alice, "cell.move", session=sid, cell_id="c19", after="c0")
        await self.ok(alice, "cell.delete", session=sid, cell_id="c5")
        finished = await alice.run(sid, cell("c1", "echo run"))  # applied, then run
        self.assertEqual(finished["status"], "ok")
        expected = (await self.ok(alice, "session.document", session=sid))["document"]["cells"]
        late = await self.client()
        last_seq = (await self.ok(late, "session.attach", session=sid))["session"]["last_seq"]
        await late.wait_for(lambda m: m.get("session") == sid and m.get("seq") == last_seq)
        self.assertEqual(fold(late.events(session=sid)).cells(), expected)
        self.assertEqual(next(c for c in expected if c["id"] == "c1")["source"], "echo run")

    async def test_the_document_survives_a_restart(self) -> None:
        c = await self.client()
        await self.ok(c, "notebook.save", name="runbook", cells=[cell("n1", "echo one"), cell("n2", "echo two")])
        sid = await self.new_session(c, notebook="runbook")
        await self.ok(c, "cell.set", session=sid, cell=cell("n3", "echo three"), after="n1")
        before = (await self.ok(c, "session.document", session=sid))["document"]
        self.assertEqual(before["notebook"], "runbook")
        self.assertEqual([x["id"] for x in before["cells"]], ["n1", "n3", "n2"])
        await c.close()
        await self.service.stopService()
        self.service = await start_runtime(self, home=self.home)
        self.url = ws_url(self.service)
        c = await self.client()
        self.assertEqual((await self.ok(c, "session.document", session=sid))["document"], before)
        listed = (await self.ok(c, "session.list"))["sessions"]
        self.assertEqual([s["notebook"] for s in listed if s["id"] == sid], ["runbook"])
        # Editing goes on with versions that follow the log.
        reply = await self.ok(c, "cell.set", session=sid, cell=cell("n2", "echo 2"),
                              base_version=before["cells"][2]["version"])
        self.assertGreater(reply["version"], before["cells"][2]["version"])

    async def test_conflicts(self) -> None:
        alice, bob = await self.client(), await self.client()
        sid = await self.new_session(alice)
        base = (await self.ok(alice, "cell.set", session=sid, cell=cell("a", "v0")))["version"]
        mine = (await self.ok(alice, "cell.set", session=sid, cell=cell("a", "alice"), base_version=base))["version"]
        reply = await bob.request("cell.set", session=sid, cell=cell("a", "bob"), base_version=base)
        self.assertFalse(reply["ok"])
        self.assertEqual(reply["error"]["code"], "conflict")
        self.assertEqual(reply["error"]["current"], {**cell("a", "alice"), "version": mine})
        document = (await self.ok(bob, "session.document", session=sid))["document"]
        self.assertEqual([x["source"] for x in document["cells"]], ["alice"])

    async def test_run_by_cell_id(self) -> None:
        c = await self.client()
        sid = await self.new_session(c)
        await self.ok(c, "cell.set", session=sid, cell=cell("greet", "echo hello-{{who}}"))
        await self.ok(c, "cell.set", session=sid, cell=cell("fail", "exit 3"))
        await self.ok(c, "cell.set", session=sid, cell=cell("never", "echo never"))
        await self.ok(c, "session.create")  # another session meanwhile: no effect on this one
        run = (await self.ok(c, "cell.run", session=sid, cell_id="greet"))["run"]
        finished = await c.wait_for(is_event("run.finished", run=run))
        self.assertEqual(finished["status"], "error")  # {{who}} is not set
        self.assertEqual(finished["error"]["code"], "template_error")
        queued = (await c.wait_for(is_event("run.queued", run=run)))
        self.assertEqual((queued["cell_id"], queued["source"], queued["options"], queued["by"]),
                         ("greet", "echo hello-{{who}}", {}, "owner"))
        await self.ok(c, "cell.set", session=sid, cell=cell("greet", "echo hello-doc"))
        run = (await self.ok(c, "cell.run", session=sid, cell_id="greet"))["run"]
        self.assertEqual((await c.wait_for(is_event("run.finished", run=run)))["status"], "ok")
        self.assertEqual(c.output(run), "hello-doc\n")
        runs = (await self.ok(c, "cells.run", session=sid, cell_ids=["greet", "fail", "never"]))["runs"]
        last = await c.wait_for(is_event("run.finished", run=runs[2]))
        statuses = [(await c.wait_for(is_event("run.finished", run=r)))["status"] for r in runs]
        self.assertEqual(statuses, ["ok", "error", "skipped"])
        self.assertEqual(last["status"], "skipped")
        reply = await c.request("cell.run", session=sid, cell_id="ghost")
        self.assertEqual(reply["error"]["code"], "no_such_cell")

    async def test_bad_input_keeps_the_connection_and_the_document(self) -> None:
        c = await self.client()
        sid = await self.new_session(c)
        await self.ok(c, "cell.set", session=sid, cell=cell("a", "echo a"))
        before = (await self.ok(c, "session.document", session=sid))["document"]
        c.send_raw('{"id": "lone", "op": "cell.set", "session": "%s", "cell": {"id": "\\udc00", "type": "shell"}}' % sid)
        reply = await c.wait_for(lambda m: m.get("re") == "lone")
        self.assertEqual(reply["error"]["code"], "bad_request")
        for params, code in (({"cell": cell("x" * 257)}, "bad_request"), ({"cell": cell("a"), "after": "a"}, "bad_request"),
                             ({"cell": cell("b"), "after": "ghost"}, "no_such_cell"),
                             ({"cell": cell("a"), "base_version": 10**6}, "conflict")):
            reply = await c.request("cell.set", session=sid, **params)
            self.assertEqual(reply["error"]["code"], code, params)
        self.assertEqual((await self.ok(c, "session.document", session=sid))["document"], before)
        await self.ok(c, "session.close", session=sid)
        reply = await c.request("cell.set", session=sid, cell=cell("b"))
        self.assertEqual(reply["error"]["code"], "session_closed")
        self.assertEqual((await self.ok(c, "session.document", session=sid))["document"], before)
