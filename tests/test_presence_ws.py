"""Identity, presence and session.snapshot over real WebSockets on 127.0.0.1."""

from __future__ import annotations

import json
from typing import Any

from twisted.trial import unittest

from .support import Client, start_runtime, ws_url


def presences(client: Client, sid: str) -> list[list[str]]:
    return [[c["client"] for c in m["clients"]] for m in client.messages
            if m.get("event") == "presence" and m.get("session") == sid]


def text_of(run: dict[str, Any]) -> str:
    return "".join(o["text"] for o in run["outputs"] if o["event"] == "stream")


class PresenceTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.service = await start_runtime(self)
        self.url = ws_url(self.service)

    async def client(self) -> tuple[Client, str]:
        client = await Client.connect(self.url)
        self.addCleanup(client.close)
        welcome = await client.wait_for(lambda m: m.get("event") == "welcome")
        return client, welcome["you"]["client"]

    async def test_welcome_says_who_you_are(self) -> None:
        a, ida = await self.client()
        b, idb = await self.client()
        welcome = a.messages[0]
        self.assertEqual(welcome["event"], "welcome")
        self.assertEqual((welcome["you"]["name"], welcome["you"]["role"]), ("owner", "owner"))
        self.assertNotEqual(ida, idb)
        self.assertIn("presence", (await a.request("hello"))["runtime"]["features"])

    async def test_two_clients_see_each_other_come_and_go(self) -> None:
        a, ida = await self.client()
        b, idb = await self.client()
        created = await a.request("session.create", name="ops")
        sid = created["session"]["id"]
        self.assertEqual([c["client"] for c in created["clients"]], [ida])
        attached = await b.request("session.attach", session=sid)
        self.assertEqual(attached["clients"], [{"client": ida, "name": "owner", "role": "owner"},
                                               {"client": idb, "name": "owner", "role": "owner"}])
        await a.wait_for(lambda m: m.get("event") == "presence" and len(m["clients"]) == 2)
        listed = {s["id"]: s for s in (await a.request("session.list"))["sessions"]}
        self.assertEqual([c["client"] for c in listed[sid]["clients"]], [ida, idb])
        self.assertIn("notebook", listed[sid])
        # Leaving by detach, coming back, leaving by disconnecting.
        waiting = a.wait_new(lambda m: m.get("event") == "presence")
        await b.request("session.detach", session=sid)
        self.assertEqual([c["client"] for c in (await waiting)["clients"]], [ida])
        waiting = a.wait_new(lambda m: m.get("event") == "presence")
        await b.request("session.attach", session=sid)
        self.assertEqual([c["client"] for c in (await waiting)["clients"]], [ida, idb])
        waiting = a.wait_new(lambda m: m.get("event") == "presence")
        await b.close()
        self.assertEqual([c["client"] for c in (await waiting)["clients"]], [ida])
        self.assertEqual(presences(a, sid), [[ida], [ida, idb], [ida], [ida, idb], [ida]])
        # Presence is not history: a late joiner replaying from 0 gets none of it.
        late, idl = await self.client()
        await late.request("session.attach", session=sid, since=0)
        await a.wait_for(lambda m: m.get("event") == "presence" and idl in [c["client"] for c in m["clients"]])
        # The reply and the event after it may come in one read: the event is
        # parsed after the reply's waiter has resumed.
        await late.wait_for(lambda m: m.get("event") == "presence")
        self.assertEqual(presences(late, sid), [[ida, idl]])
        self.assertFalse([m for m in late.events(sid) if m["event"] == "presence"])
        # Closing the session: everyone leaves it.
        waiting = late.wait_new(lambda m: m.get("event") == "presence")
        await a.request("session.close", session=sid)
        self.assertEqual((await waiting)["clients"], [])
        await late.wait_for(lambda m: m.get("event") == "session.closed")
        listed = {s["id"]: s for s in (await a.request("session.list"))["sessions"]}
        self.assertEqual(listed[sid]["clients"], [])


class SnapshotTests(unittest.TestCase):
    timeout = 120

    async def setUp(self) -> None:
        self.service = await start_runtime(self)
        self.url = ws_url(self.service)
        self.a = await Client.connect(self.url)
        self.addCleanup(self.a.close)
        self.sid = (await self.a.request("session.create"))["session"]["id"]

    async def test_snapshot_then_attach_since_last_seq_misses_nothing(self) -> None:
        script = "for i in $(seq 1 40); do seq $((i*1000)) $((i*1000+999)); echo e$i >&2; sleep 0.02; done"
        run = (await self.a.request("cell.run", session=self.sid,
                                    cell={"id": "c", "type": "shell", "source": script}))["run"]
        await self.a.wait_for(lambda m: m.get("event") == "stream" and m.get("run") == run)
        b = await Client.connect(self.url)
        self.addCleanup(b.close)
        snapshot = await b.request("session.snapshot", session=self.sid, max_output_bytes=8 * 1024 * 1024)
        last_seq = snapshot["last_seq"]
        (described,) = snapshot["runs"]
        self.assertEqual(described["status"], "running")  # taken while the run printed
        self.assertIsNone(described["finished"])
        await b.request("session.attach", session=self.sid, since=last_seq)
        finished = await b.wait_for(lambda m: m.get("event") == "run.finished" and m.get("run") == run)
        await self.a.wait_for(lambda m: m.get("event") == "run.finished")
        seqs = [e["seq"] for e in b.events(self.sid)]
        self.assertEqual(seqs, list(range(last_seq + 1, finished["seq"] + 1)))
        # The snapshot plus what followed it is the whole output, once.
        for name in ("stdout", "stderr"):
            before = "".join(o["text"] for o in described["outputs"] if o["event"] == "stream" and o["name"] == name)
            self.assertEqual(before + b.output(run, name), self.a.output(run, name))
        self.assertEqual(self.a.output(run).count("\n"), 40_000)

    async def test_a_long_history_gives_a_bounded_snapshot(self) -> None:
        runs = []
        for i in range(12):
            done = await self.a.run(self.sid, {"id": f"c{i}", "type": "shell", "source": f"seq 1 {40_000 + i}"})
            runs.append(done["run"])
        big = await self.a.run(self.sid, {"id": "big", "type": "shell",
                                          "source": "seq 1 1000000; echo oops >&2; exit 2"})
        runs.append(big["run"])
        snapshot = await self.a.request("session.snapshot", session=self.sid)
        self.assertEqual(snapshot["last_seq"], big["seq"])
        by_run = {r["run"]: r for r in snapshot["runs"]}
        self.assertEqual(list(by_run), runs)
        error = {"event": "error", "error": big["error"]}
        for run in runs:
            truncated = by_run[run]["truncated"]
            printed = len(self.a.output(run).encode()) + len(self.a.output(run, "stderr").encode())
            if run == big["run"]:  # its error is an output too
                printed += len(json.dumps(error, separators=(",", ":"), ensure_ascii=False).encode())
            self.assertEqual(truncated["bytes_total"], printed)
            self.assertLessEqual(truncated["bytes_shown"], 256 * 1024)
        last = by_run[big["run"]]
        self.assertEqual(last["status"], "error")
        self.assertEqual([o["event"] for o in last["outputs"]], ["stream", "cut", "stream", "stream", "error"])
        self.assertEqual(last["outputs"][4], error)
        self.assertTrue(self.a.output(big["run"]).startswith(last["outputs"][0]["text"]))
        self.assertTrue(self.a.output(big["run"]).endswith(last["outputs"][2]["text"]))
        self.assertEqual(last["outputs"][3], {"event": "stream", "name": "stderr", "text": "oops\n"})
        self.assertEqual(text_of(by_run[runs[0]]), self.a.output(runs[0]))  # 229 KB: under the limit, whole
        size = len(json.dumps(snapshot))
        self.assertLess(size, 14 * 300 * 1024)  # ~256 KiB a run, whatever the history holds
        # Attaching from last_seq replays nothing the snapshot holds.
        b = await Client.connect(self.url)
        self.addCleanup(b.close)
        await b.request("session.attach", session=self.sid, since=snapshot["last_seq"])
        done = await self.a.run(self.sid, {"id": "next", "type": "shell", "source": "echo next"})
        await b.wait_for(lambda m: m.get("event") == "run.finished" and m.get("run") == done["run"])
        self.assertEqual(b.events(self.sid)[0]["seq"], snapshot["last_seq"] + 1)

    async def test_unknown_session_and_bad_limits(self) -> None:
        reply = await self.a.request("session.snapshot", session="ss_missing")
        self.assertEqual(reply["error"]["code"], "no_such_session")
        for bad in (0, 100, 2 ** 40, "1024", 1024.5, False):
            reply = await self.a.request("session.snapshot", session=self.sid, max_output_bytes=bad)
            self.assertEqual(reply["error"]["code"], "bad_request", bad)
        empty = await self.a.request("session.snapshot", session=self.sid)
        self.assertEqual((empty["runs"], empty["runs_omitted"]), ([], 0))
        self.assertEqual(empty["document"]["cells"], [])
