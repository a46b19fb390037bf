"""splunk cells against tests/splunk_api.py (a stand-in splunkd answering as
Splunk's REST reference documents; each shape cites it), over TLS with
splunkd's own CA given on the connection: results shown batch by batch as
they arrive (previews left out), earliest/latest, a token or a user and
password, a search cancelled in the middle of its stream (the stream is
closed), 401, a search splunkd refuses, an error message inside the stream,
a line that is not JSON, and no credential in any event."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from twisted.trial import unittest

from . import tls
from .integration_support import run_cell
from .splunk_api import PASSWORD, TOKEN, USER, FakeSplunk
from .support import Client, eventually, start_runtime, ws_url


class SplunkTests(unittest.TestCase):
    timeout = 60

    async def setUp(self) -> None:
        directory = tempfile.mkdtemp(prefix="splunk-", dir=os.path.abspath("."))
        self.pki = tls.make_pki(directory, "Splunk CA")
        self.api = FakeSplunk()
        _, port = tls.listen_https(self, self.api, self.pki.server, self.pki.intermediate)
        self.url = f"https://localhost:{port}"
        other = tls.make_pki(directory, "Runtime CA")
        self.service = await start_runtime(self, environ={"REQUESTS_CA_BUNDLE": other.bundle,
                                                          "SPLUNK_TOKEN": TOKEN})
        self.client = await Client.connect(ws_url(self.service))
        self.addCleanup(self.client.close)
        for name, fields in (("sp", {"token": "{{secret:SPLUNK_TOKEN}}"}),
                             ("basic", {"username": USER, "password": PASSWORD})):
            reply = await self.client.request("connections.set", name=name, type="splunk", url=self.url,
                                              ca=self.pki.root.cert_path, **fields)
            self.assertTrue(reply["ok"], reply)
        self.sid = (await self.client.request("session.create", name="sp"))["session"]["id"]

    async def sp(self, source: str, variable: str | None = None, **options: Any) -> tuple[dict[str, Any], list[str]]:
        options.setdefault("connection", "sp")
        return await run_cell(self.client, self.sid, "splunk", source, variable, **options)

    async def test_search_streams_batches(self) -> None:
        reply = await self.client.request("connections.test", name="sp")
        self.assertEqual(reply.get("detail"), f"Splunk 9.3.1 at {self.url} (splunk-1)", reply)
        finished, texts = await self.sp("index=web status>=500", variable="events", earliest="-15m@m")
        self.assertEqual(finished["status"], "ok", finished)
        sent = self.api.requests[-1]
        self.assertEqual(sent["args"]["search"], ["search index=web status>=500"])
        self.assertEqual((sent["args"]["earliest_time"], sent["args"]["latest_time"], sent["args"]["output_mode"]),
                         (["-15m@m"], ["now"], ["json"]))
        self.assertEqual(sent["authorization"], f"Bearer {TOKEN}")
        # Two outputs, one per arriving batch, then the summary.
        self.assertEqual(len(texts), 3, texts)
        self.assertEqual(texts[0].splitlines()[0].split(), ["_time", "host", "source", "sourcetype", "_raw", "status",
                                                            "index"])
        self.assertEqual([t.count("GET /pay 502") for t in texts[:2]], [2, 2])
        self.assertEqual(texts[2], "4 results (-15m@m to now)")
        events = self.service.manager.get(self.sid).variables["events"]
        self.assertEqual([e["host"] for e in events["result"]], ["web-0", "web-1", "web-2", "web-3"])
        # Our times are sent as Unix seconds; a pipeline as it is; basic authentication.
        finished, _ = await self.sp("| tstats count where index=web", earliest="now-1h", latest=1796036400,
                                    connection="basic")
        sent = self.api.requests[-1]
        self.assertEqual(sent["args"]["search"], ["| tstats count where index=web"])
        self.assertEqual(sent["args"]["latest_time"], ["1796036400.000"])
        self.assertLess(abs(float(sent["args"]["earliest_time"][0]) + 3600 - self.service.reactor.seconds()), 30)
        self.assertTrue(sent["authorization"].startswith("Basic "))
        dumped = json.dumps(self.client.messages)
        self.assertNotIn(TOKEN, dumped)
        self.assertNotIn(PASSWORD, dumped)

    async def test_cancel_closes_the_stream(self) -> None:
        reply = await self.client.request("cell.run", session=self.sid, cell={
            "id": "s", "type": "splunk", "source": "index=web slow", "options": {"connection": "sp"}})
        run = reply["run"]
        await eventually(lambda: "web-1" in json.dumps(self.client.events(run=run)), timeout=10)  # the first batch
        self.assertEqual(self.api.open_streams, 1)
        await self.client.request("run.cancel", session=self.sid, run=run)
        finished = await self.client.wait_for(lambda m: m.get("event") == "run.finished" and m["run"] == run)
        self.assertEqual(finished["status"], "cancelled")
        await eventually(lambda: self.api.open_streams == 0, timeout=10)  # splunkd ends the search

    async def test_errors(self) -> None:
        await self.client.request("connections.set", name="wrong", type="splunk", url=self.url, token="nope",
                                  ca=self.pki.root.cert_path)
        await self.client.request("connections.set", name="noca", type="splunk", url=self.url, token=TOKEN)
        cases = [
            ("index=web", {"connection": "wrong"}, "remote_unauthorized", "401 Unauthorized: call not properly "
                                                                          "authenticated"),
            ("index=web | badcommand", {}, "http_error", "400 Bad Request: Unknown search command 'badcommand'."),
            ("index=web autocancel", {}, "search_error", "ERROR: Search auto-canceled"),
            ("index=web garbage", {}, "bad_response", "not JSON: '<html>maintenance</html>'"),
            ("index=web", {"connection": "noca"}, "tls_error", "localhost"),
            ("", {}, "bad_option", "the source is an SPL search"),
            ("index=web", {"earliest": ""}, "bad_option", "options.earliest must be a time"),
        ]
        for source, options, code, words in cases:
            options.setdefault("connection", "sp")
            finished, _ = await self.sp(source, **options)
            self.assertEqual((finished["status"], finished["error"]["code"]), ("error", code), (source, finished))
            self.assertIn(words, finished["error"]["evalue"], (source, finished["error"]["evalue"]))
        reply = await self.client.request("connections.test", name="wrong")
        self.assertEqual(reply["error"]["code"], "remote_unauthorized")
        self.assertNotIn(TOKEN, json.dumps(self.client.messages))
