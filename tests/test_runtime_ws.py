"""The runtime over a real WebSocket on 127.0.0.1: protocol, sessions, shell cells."""

from __future__ import annotations

import json
import os

from twisted.trial import unittest


from .support import Client, sleep, start_runtime, ws_url


def seqs(events: list[dict]) -> list[int]:
    return [e["seq"] for e in events]


class ProtocolTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        self.service = await start_runtime(self)
        self.url = ws_url(self.service)

    async def client(self, **kw) -> Client:
        client = await Client.connect(self.url, **kw)
        self.addCleanup(client.close)
        return client

    async def test_welcome_hello_ping(self) -> None:
        c = await self.client()
        welcome = await c.wait_for(lambda m: m.get("event") == "welcome")
        self.assertEqual(welcome["runtime"]["protocol"], 1)
        self.assertNotIn("seq", welcome)
        hello = await c.request("hello")
        self.assertTrue(hello["ok"])
        self.assertIn("shell", hello["runtime"]["cell_types"])
        self.assertEqual(hello["runtime"]["protocol"], 1)
        self.assertEqual(await c.request("ping"), {"re": "r2", "ok": True})

    async def test_bad_frames_get_errors_and_keep_the_connection(self) -> None:
        c = await self.client()
        cases = [
            (b"not json", "bad_json", None),
            (b"[1,2]", "bad_request", None),
            (b'{"op":"ping"}', "bad_request", None),
            (b'{"id":true,"op":"ping"}', "bad_request", None),
            (b'{"id":7}', "bad_request", 7),
            (b'{"id":8,"op":"nope"}', "unknown_op", 8),
            (b'{"id":9,"op":"session.attach"}', "bad_request", 9),
            (b'{"id":10,"op":"session.attach","session":"ss_x","since":-1}', "bad_request", 10),
            (b'{"id":11,"op":"session.attach","session":"ss_missing"}', "no_such_session", 11),
            (b'{"id":12,"op":"cell.run","session":"ss_x","cell":{"type":5}}', "bad_request", 12),
            (b'\xff\xfe', None, None),
        ]
        for payload, code, re in cases[:-1]:
            waiting = c.wait_new(lambda m: "re" in m)
            c.send_raw(payload)
            reply = await waiting
            self.assertEqual((reply["ok"], reply["error"]["code"], reply["re"]), (False, code, re), payload)
            self.assertTrue(reply["error"]["message"])
        waiting = c.wait_new(lambda m: "re" in m)
        c.send_raw(b"\x00\x01binary", binary=True)
        reply = await waiting
        self.assertEqual(reply["error"]["code"], "bad_frame")
        # Still usable afterwards.
        self.assertTrue((await c.request("ping"))["ok"])

    async def test_oversized_message_closes_1009_runtime_survives(self) -> None:
        await self.service.stopService()
        self.service = await start_runtime(self, "--max-message-size", "4096")
        self.url = ws_url(self.service)
        c = await self.client()
        c.send_raw(json.dumps({"id": 1, "op": "ping", "pad": "x" * 10000}))
        code = await c.closed
        self.assertEqual(code, 1009)
        other = await self.client()
        self.assertTrue((await other.request("ping"))["ok"])

    async def test_session_lifecycle(self) -> None:
        c = await self.client()
        created = await c.request("session.create", name="incident-42", variables={"region": "eu"})
        self.assertTrue(created["ok"], created)
        session = created["session"]
        self.assertTrue(session["id"].startswith("ss_"))
        self.assertEqual(session["name"], "incident-42")
        listed = await c.request("session.list")
        self.assertEqual([s["id"] for s in listed["sessions"]], [session["id"]])
        self.assertEqual(listed["sessions"][0]["state"], "open")
        variable = await c.wait_for(lambda m: m.get("event") == "variable.set")
        self.assertEqual((variable["name"], variable["preview"]), ("region", "eu"))
        closed = await c.request("session.close", session=session["id"])
        self.assertTrue(closed["ok"])
        await c.wait_for(lambda m: m.get("event") == "session.closed")
        refused = await c.request("cell.run", session=session["id"], cell={"type": "shell", "source": "true"})
        self.assertEqual(refused["error"]["code"], "session_closed")
        listed = await c.request("session.list")
        self.assertEqual(listed["sessions"][0]["state"], "closed")
        # History stays readable.
        other = await self.client()
        attached = await other.request("session.attach", session=session["id"])
        self.assertTrue(attached["ok"])
        await other.wait_for(lambda m: m.get("event") == "session.closed")
        self.assertEqual(seqs(other.events(session["id"])), list(range(1, attached["session"]["last_seq"] + 1)))

    async def test_shell_cell_streams_and_exit_code(self) -> None:
        c = await self.client()
        sid = (await c.request("session.create"))["session"]["id"]
        done = await c.run(sid, {"id": "c1", "type": "shell", "source": "echo out; echo err >&2; exit 3"})
        self.assertEqual(done["status"], "error")
        self.assertEqual(done["exit_code"], 3)
        self.assertEqual(c.output(done["run"]), "out\n")
        self.assertEqual(c.output(done["run"], "stderr"), "err\n")
        ok = await c.run(sid, {"type": "shell", "source": "printf '%s' \"$GREETING\"; pwd", "options": {"env": {"GREETING": "hi"}}})
        self.assertEqual(ok["status"], "ok")
        self.assertEqual(ok["exit_code"], 0)
        out = c.output(ok["run"])
        self.assertTrue(out.startswith("hi"))
        self.assertTrue(out.strip().endswith(os.path.join("sessions", sid)))
        kinds = [e["event"] for e in c.events(run=ok["run"])]
        self.assertEqual(kinds[0], "run.queued")
        self.assertEqual(kinds[1], "run.started")
        self.assertEqual(kinds[-1], "run.finished")

    async def test_stdin_is_at_end_of_file_from_the_start(self) -> None:
        """No stdin in v1: a cell that reads it gets end-of-file at once, and
        finishes, instead of waiting for input nobody can send; every run of
        the runtime's life gets the same (one /dev/null shared by them all)."""
        c = await self.client()
        sid = (await c.request("session.create"))["session"]["id"]
        for _ in range(2):
            done = await c.run(sid, {"type": "shell", "source": "cat; read -r line || echo eof; test -t 0 || echo not-a-tty"})
            self.assertEqual(done["status"], "ok")
            self.assertEqual(c.output(done["run"]), "eof\nnot-a-tty\n")

    async def test_a_session_directory_a_cell_removed_is_made_again(self) -> None:
        c = await self.client()
        sid = (await c.request("session.create"))["session"]["id"]
        first = await c.run(sid, {"type": "shell", "source": "pwd; rm -rf \"$PWD\""})
        self.assertEqual(first["status"], "ok")
        here = c.output(first["run"]).strip()
        self.assertFalse(os.path.exists(here))
        again = await c.run(sid, {"type": "shell", "source": "pwd; echo still-here > note; cat note"})
        self.assertEqual(again["status"], "ok", c.events(run=again["run"]))
        self.assertEqual(c.output(again["run"]), here + "\nstill-here\n")
        self.assertEqual(os.stat(here).st_mode & 0o777, 0o700)

    async def test_output_arrives_before_exit(self) -> None:
        c = await self.client()
        sid = (await c.request("session.create"))["session"]["id"]
        reply = await c.request("cell.run", session=sid, cell={"type": "shell", "source": "echo first; sleep 30; echo never"})
        first = await c.wait_for(lambda m: m.get("event") == "stream" and "first" in m["text"], timeout=5)
        self.assertEqual(first["run"], reply["run"])
        self.assertFalse(c.events(run=reply["run"], kind="run.finished"))
        await c.request("run.cancel", session=sid, run=reply["run"])
        done = await c.wait_for(lambda m: m.get("event") == "run.finished")
        self.assertEqual(done["status"], "cancelled")

    async def test_token_not_passed_to_cells(self) -> None:
        c = await self.client()
        sid = (await c.request("session.create"))["session"]["id"]
        done = await c.run(sid, {"type": "shell", "source": "echo \"[${SPIN_TOKEN:-unset}]\"; echo $SPIN_HOME_CHECK"})
        self.assertEqual(c.output(done["run"]).splitlines()[0], "[unset]")

    async def test_unknown_cell_type_and_bad_options(self) -> None:
        c = await self.client()
        sid = (await c.request("session.create"))["session"]["id"]
        done = await c.run(sid, {"type": "cobol", "source": ""})
        self.assertEqual((done["status"], done["error"]["code"]), ("error", "unknown_cell_type"))
        done = await c.run(sid, {"type": "shell", "source": "true", "options": {"timeout_s": "soon"}})
        self.assertEqual(done["error"]["code"], "bad_option")
        done = await c.run(sid, {"type": "shell", "source": "true", "options": {"cwd": "no/such/dir"}})
        self.assertEqual(done["error"]["code"], "bad_cwd")
        done = await c.run(sid, {"type": "shell", "source": "true", "options": {"shell": "no-such-shell"}})
        self.assertEqual(done["error"]["code"], "shell_not_found")
        done = await c.run(sid, {"type": "shell", "source": "true", "options": {"env": {"A": 1}}})
        self.assertEqual(done["error"]["code"], "bad_option")

    async def test_markdown_cell(self) -> None:
        c = await self.client()
        sid = (await c.request("session.create"))["session"]["id"]
        done = await c.run(sid, {"type": "markdown", "source": "# Runbook"})
        self.assertEqual(done["status"], "ok")
        (display,) = c.events(run=done["run"], kind="display")
        self.assertEqual(display["data"]["text/markdown"], "# Runbook")

    async def test_linked_chain_stops_on_error(self) -> None:
        c = await self.client()
        sid = (await c.request("session.create"))["session"]["id"]
        reply = await c.request("cells.run", session=sid, cells=[
            {"type": "shell", "source": "echo one"},
            {"type": "shell", "source": "exit 1"},
            {"type": "shell", "source": "echo three"},
            {"type": "shell", "source": "echo four"},
        ])
        runs = reply["runs"]
        self.assertEqual(len(runs), 4)
        finished = [await c.wait_for(lambda m, r=r: m.get("event") == "run.finished" and m["run"] == r) for r in runs]
        self.assertEqual([f["status"] for f in finished], ["ok", "error", "skipped", "skipped"])
        self.assertEqual(c.output(runs[2]), "")
        # Exactly one run.finished per run.
        self.assertEqual(len(c.events(kind="run.finished")), 4)

    async def test_chain_without_stop_on_error_runs_all(self) -> None:
        c = await self.client()
        sid = (await c.request("session.create"))["session"]["id"]
        reply = await c.request("cells.run", session=sid, stop_on_error=False, cells=[
            {"type": "shell", "source": "exit 1"},
            {"type": "shell", "source": "echo two"},
        ])
        last = await c.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == reply["runs"][1])
        self.assertEqual(last["status"], "ok")
        self.assertEqual(c.output(reply["runs"][1]), "two\n")

    async def test_cancel_queued_and_running(self) -> None:
        c = await self.client()
        sid = (await c.request("session.create"))["session"]["id"]
        first = (await c.request("cell.run", session=sid, cell={"type": "shell", "source": "sleep 30"}))["run"]
        second = (await c.request("cell.run", session=sid, cell={"type": "shell", "source": "echo no"}))["run"]
        await c.wait_for(lambda m: m.get("event") == "run.started" and m["run"] == first)
        self.assertTrue((await c.request("run.cancel", session=sid, run=second))["ok"])
        done2 = await c.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == second)
        self.assertEqual(done2["status"], "cancelled")
        self.assertTrue((await c.request("run.cancel", session=sid, run=first))["ok"])
        done1 = await c.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == first)
        self.assertEqual(done1["status"], "cancelled")
        self.assertLess(done1["duration_ms"], 5000)
        unknown = await c.request("run.cancel", session=sid, run=first)
        self.assertEqual(unknown["error"]["code"], "no_such_run")

    async def test_timeout_kills_the_process_group(self) -> None:
        c = await self.client()
        sid = (await c.request("session.create"))["session"]["id"]
        marker = os.path.join(os.path.abspath("."), f"grandchild-{sid}")
        # A grandchild that ignores SIGINT and SIGTERM must still die.
        script = f"(trap '' INT TERM; sleep 3; touch {marker}) & echo started; wait"
        done = await c.run(sid, {"type": "shell", "source": script, "options": {"timeout_s": 0.3}})
        self.assertEqual(done["status"], "timeout")
        self.assertEqual(done["error"]["code"], "timeout")
        await sleep(3.5)
        self.assertFalse(os.path.exists(marker), "the grandchild survived the timeout")

    async def test_two_clients_get_every_event_once_in_order(self) -> None:
        a = await self.client()
        b = await self.client()
        sid = (await a.request("session.create"))["session"]["id"]
        await b.request("session.attach", session=sid)
        done = await a.run(sid, {"type": "shell", "source": "for i in $(seq 1 200); do echo line $i; done"})
        await b.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == done["run"])
        self.assertEqual(seqs(a.events(sid)), seqs(b.events(sid)))
        self.assertEqual(seqs(a.events(sid)), list(range(1, len(a.events(sid)) + 1)))
        expected = "".join(f"line {i}\n" for i in range(1, 201))
        self.assertEqual(a.output(done["run"]), expected)
        self.assertEqual(b.output(done["run"]), expected)

    async def test_attach_since_replays_exactly_what_was_missed(self) -> None:
        a = await self.client()
        sid = (await a.request("session.create"))["session"]["id"]
        await a.run(sid, {"type": "shell", "source": "echo one"})
        seen = a.events(sid)[-1]["seq"]
        await a.close()
        b = await self.client()
        await b.request("session.attach", session=sid, since=seen)
        done = await b.run(sid, {"type": "shell", "source": "echo two; echo three"})
        last = done["seq"]
        again = await self.client()
        reply = await again.request("session.attach", session=sid, since=seen)
        self.assertEqual(reply["session"]["last_seq"], last)
        await again.wait_for(lambda m: m.get("seq") == last)
        self.assertEqual(seqs(again.events(sid)), list(range(seen + 1, last + 1)))
        self.assertEqual(again.output(done["run"]), "two\nthree\n")
        # since beyond the end is clamped: nothing replayed, live events follow.
        late = await self.client()
        await late.request("session.attach", session=sid, since=10**9)
        await late.run(sid, {"type": "shell", "source": "true"})
        self.assertEqual(late.events(sid)[0]["seq"], last + 1)

    async def test_detach_stops_events(self) -> None:
        a = await self.client()
        b = await self.client()
        sid = (await a.request("session.create"))["session"]["id"]
        await b.request("session.attach", session=sid)
        self.assertTrue((await b.request("session.detach", session=sid))["ok"])
        count = len(b.events(sid))
        await a.run(sid, {"type": "shell", "source": "echo hi"})
        await sleep(0.1)
        self.assertEqual(len(b.events(sid)), count)

    async def test_run_continues_after_client_disconnects(self) -> None:
        a = await self.client()
        sid = (await a.request("session.create"))["session"]["id"]
        reply = await a.request("cell.run", session=sid, cell={"type": "shell", "source": "sleep 0.3; echo done"})
        await a.close()
        b = await self.client()
        await b.request("session.attach", session=sid)
        done = await b.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == reply["run"])
        self.assertEqual(done["status"], "ok")
        self.assertEqual(b.output(reply["run"]), "done\n")
