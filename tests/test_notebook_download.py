"""GET /api/sessions/<id>/notebook.ipynb: a session's document with its outputs, as nbformat 4."""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

import nbformat
import treq
from twisted.internet import reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest
from twisted.web.client import HTTPConnectionPool

from spinrt.web import notebook_download

from .support import TOKEN, Client, start_runtime, ws_url

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = "hunter2-secret-value"

CELLS = [
    {"id": "intro", "type": "markdown", "source": "# Checking {{service}}"},
    {"id": "sh", "type": "shell", "source": "echo out {{service}}; echo err >&2", "output_variable": "shout"},
    {"id": "py", "type": "python",
     "source": "from IPython.display import display, HTML\nprint('py says', 6 * 7)\ndisplay(HTML('<b>bold</b>'))\n21 * 2"},
    {"id": "not an nbformat id!", "type": "shell", "source": "echo {{secret:TOKEN_X}}", "options": {"timeout_s": 30}},
    {"id": "boom", "type": "python", "source": "1 / 0"},
    {"id": "never", "type": "shell", "source": "echo never ran"},
    {"id": "note", "type": "raw", "source": "raw text"},
]
PARAMETERS = [{"name": "service", "kind": "static", "options": ["db", "web"], "default": "web"}]


def cells_of(document: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in cell.items() if k != "version"} for cell in document]


class DownloadTests(unittest.TestCase):
    timeout = 120

    async def setUp(self) -> None:
        self.logged: list[str] = []

        def observe(event: dict) -> None:
            self.logged.append(formatEvent(event) or "")
            self.logged.append(repr(event))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.service = await start_runtime(self)
        self.url = ws_url(self.service)
        self.base = self.url.replace("ws://", "http://").rsplit("/", 1)[0]
        self.pool = HTTPConnectionPool(reactor, persistent=False)
        self.client = await Client.connect(self.url)
        self.addCleanup(self.client.close)

    async def ok(self, op: str, **params: Any) -> dict[str, Any]:
        reply = await self.client.request(op, **params)
        self.assertTrue(reply["ok"], reply)
        return reply

    async def get(self, path: str, headers: dict[str, str] | None = AUTH) -> tuple[Any, bytes]:
        response = await treq.get(self.base + path, headers=headers, pool=self.pool)
        return response, await response.content()

    async def download(self, sid: str) -> tuple[Any, nbformat.NotebookNode]:
        response, body = await self.get(f"/api/sessions/{sid}/notebook.ipynb")
        self.assertEqual(response.code, 200, body[:500])
        nb = nbformat.reads(body.decode("utf-8"), as_version=nbformat.NO_CONVERT)
        nbformat.validate(nb)  # raises if it is not a valid notebook
        self.assertEqual((nb.nbformat, nb.nbformat_minor), (4, 5))
        return response, nb

    async def run_all(self, sid: str, ids: list[str]) -> list[str]:
        runs = (await self.ok("cells.run", session=sid, cell_ids=ids, stop_on_error=True))["runs"]
        await self.client.wait_for(lambda m: m.get("event") == "run.finished" and m.get("run") == runs[-1], 60)
        return runs

    async def session_with_outputs(self) -> str:
        await self.ok("notebook.save", name="health check", cells=CELLS, parameters=PARAMETERS)
        sid = (await self.ok("session.create", name="incident 7", notebook="health check",
                             variables={"service": "db"}))["session"]["id"]
        await self.ok("secrets.set", session=sid, secrets={"TOKEN_X": SECRET})
        # "sh" runs twice: only the latest run's output goes in.
        await self.run_all(sid, ["sh"])
        await self.ok("cell.set", session=sid, cell={**CELLS[1], "source": "echo second {{service}}"})
        await self.run_all(sid, ["intro", "sh", "py", "not an nbformat id!", "boom", "never"])
        # An ad-hoc cell (not in the document) is not part of the notebook.
        await self.client.run(sid, {"id": "adhoc", "type": "shell", "source": "echo adhoc"})
        return sid

    async def test_the_document_with_its_latest_outputs(self) -> None:
        sid = await self.session_with_outputs()
        response, nb = await self.download(sid)
        headers = response.headers
        self.assertEqual(headers.getRawHeaders("content-type"), ["application/x-ipynb+json"])
        self.assertEqual(headers.getRawHeaders("cache-control"), ["no-store"])
        self.assertEqual(headers.getRawHeaders("x-content-type-options"), ["nosniff"])
        self.assertEqual(headers.getRawHeaders("content-disposition"),
                         ["attachment; filename=\"incident 7.ipynb\"; filename*=UTF-8''incident%207.ipynb"])
        self.assertEqual([c.cell_type for c in nb.cells], ["markdown", "code", "code", "code", "code", "code", "raw"])
        self.assertEqual(nb.metadata.kernelspec.name, "python3")
        self.assertEqual(nb.metadata.spin.parameters, PARAMETERS)
        intro, sh, py, odd, boom, never, raw = nb.cells
        # Markdown: rendered, the template kept (as spin run writes it).
        self.assertEqual(intro.source, "# Checking db")
        self.assertEqual(intro.metadata.spin.source, "# Checking {{service}}")
        # Shell: the second run only; stdout and stderr as stream outputs.
        self.assertEqual([(o.output_type, o.name, o.text) for o in sh.outputs],
                         [("stream", "stdout", "second db\n")])
        self.assertEqual(sh.metadata.spin.type, "shell")
        self.assertEqual(sh.metadata.spin.output_variable, "shout")
        self.assertEqual(sh.metadata.spin.run.status, "ok")
        self.assertEqual(sh.metadata.spin.run.by, "owner")
        self.assertIsInstance(sh.metadata.spin.run.duration_ms, int)
        sh_runs = [e["run"] for e in self.client.events(session=sid, kind="run.queued") if e["cell_id"] == "sh"]
        self.assertEqual(sh.metadata.spin.run.id, sh_runs[-1])
        # Python: stream, display and result (the kernel flushes stdout when it
        # likes), with execution counts in run order.
        outputs = {o.output_type: o for o in py.outputs}
        self.assertEqual(sorted(outputs), ["display_data", "execute_result", "stream"])
        self.assertEqual(len(py.outputs), 3)
        self.assertEqual(outputs["stream"].text, "py says 42\n")
        self.assertEqual(outputs["display_data"].data["text/html"], "<b>bold</b>")
        self.assertEqual(outputs["execute_result"].data["text/plain"], "42")
        self.assertEqual(py.execution_count, outputs["execute_result"].execution_count)
        self.assertEqual([sh.execution_count, py.execution_count, odd.execution_count, boom.execution_count],
                         [1, 2, 3, 4])  # the runs shown, in the order they ran
        # A protocol id that is no nbformat id, and the secret masked.
        self.assertEqual(odd.metadata.spin.id, "not an nbformat id!")
        self.assertEqual(odd.outputs[0].text, "***\n")
        # The error, as Jupyter shows it; the cell after it was skipped: no outputs.
        self.assertEqual(boom.outputs[-1].output_type, "error")
        self.assertEqual(boom.outputs[-1].ename, "ZeroDivisionError")
        self.assertTrue(boom.outputs[-1].traceback)
        self.assertEqual(boom.metadata.spin.run.status, "error")
        self.assertEqual((never.outputs, never.execution_count), ([], None))
        self.assertNotIn("run", never.metadata.get("spin", {}))
        self.assertEqual(raw.source, "raw text")
        text = json.dumps(nb)
        self.assertNotIn(SECRET, text)
        self.assertNotIn("adhoc", text)

    async def test_reimported_it_is_the_same_document(self) -> None:
        sid = await self.session_with_outputs()
        _, body = await self.get(f"/api/sessions/{sid}/notebook.ipynb")
        saved = await self.ok("notebook.save", name="imported", ipynb=json.loads(body))
        self.assertEqual(saved["notebook"]["name"], "imported")
        document = (await self.ok("session.document", session=sid))["document"]["cells"]
        got = (await self.ok("notebook.get", name="imported"))["notebook"]
        self.assertEqual(got["cells"], cells_of(document))
        self.assertEqual(got["parameters"], PARAMETERS)
        # And a session from it starts with the same cells.
        again = (await self.ok("session.create", notebook="imported"))["session"]["id"]
        self.assertEqual(cells_of((await self.ok("session.document", session=again))["document"]["cells"]),
                         cells_of(document))

    async def test_an_empty_session_a_closed_one_and_file_names(self) -> None:
        sid = (await self.ok("session.create", name="a/b\\c: \"d\" caf\u00e9 \u202e\u2603.ipynb"))["session"]["id"]
        response, nb = await self.download(sid)
        self.assertEqual(nb.cells, [])
        self.assertEqual(response.headers.getRawHeaders("content-disposition"),
                         ["attachment; filename=\"a_b_c_ _d_ caf_ __.ipynb\"; "
                          "filename*=UTF-8''a_b_c_%20_d_%20caf%C3%A9%20_%E2%98%83.ipynb"])
        await self.ok("cell.set", session=sid, cell={"id": "c", "type": "shell", "source": "echo kept"})
        await self.run_all(sid, ["c"])
        await self.ok("session.close", session=sid)
        _, nb = await self.download(sid)  # history stays readable
        self.assertEqual(nb.cells[0].outputs[0].text, "kept\n")

    async def test_a_long_output_is_cut_with_a_note(self) -> None:
        self.patch(notebook_download, "MAX_OUTPUT_BYTES", 2000)
        sid = (await self.ok("session.create"))["session"]["id"]
        await self.ok("cell.set", session=sid, cell={"id": "long", "type": "shell", "source": "seq 1 20000"})
        (run,) = await self.run_all(sid, ["long"])
        _, nb = await self.download(sid)
        (output,) = nb.cells[0].outputs
        self.assertTrue(output.text.startswith("1\n2\n3\n"))
        self.assertTrue(output.text.endswith("19999\n20000\n"))
        self.assertIn(f"bytes of output left out here; the run's whole text: "
                      f"GET /api/sessions/{sid}/runs/{run}/output", output.text)
        self.assertLess(len(output.text), 2000 + 300)

    async def test_unknown_sessions_and_paths(self) -> None:
        sid = (await self.ok("session.create"))["session"]["id"]
        for path in ("/api/sessions/ss_nope/notebook.ipynb", f"/api/sessions/{sid}/notebook",
                     f"/api/sessions/{sid}/notebook.ipynb/x", f"/api/sessions/{sid}/NOTEBOOK.IPYNB",
                     "/api/sessions/%00%ff/notebook.ipynb", "/api/sessions//notebook.ipynb"):
            response, body = await self.get(path)
            self.assertEqual(response.code, 404, path)
            self.assertEqual(json.loads(body)["error"]["code"], "not_found", path)
        response, _ = await self.get("/api/sessions/ss_nope/notebook.ipynb", None)
        self.assertEqual(response.code, 401)  # the unknown are told apart only with the token

    async def test_the_token_goes_in_a_header_only(self) -> None:
        sid = (await self.ok("session.create", name="guarded"))["session"]["id"]
        path = f"/api/sessions/{sid}/notebook.ipynb"
        for query, headers in [("", None), ("?token=" + urllib.parse.quote(TOKEN), None),
                               ("", {"Authorization": "Bearer wrong-token"}), ("", {"Authorization": TOKEN})]:
            started = time.monotonic()
            response, body = await self.get(path + query, headers)
            self.assertEqual(response.code, 401, (query, headers))
            self.assertGreaterEqual(time.monotonic() - started, 0.9)  # the throttle's delay
            self.assertEqual(json.loads(body)["error"]["code"], "unauthorized")
        for headers in (AUTH, {"Authorization": f"token {TOKEN}"}):
            response, _ = await self.get(path + "?token=wrong", headers)
            self.assertEqual(response.code, 200)
        self.assertNotIn(TOKEN, "\n".join(self.logged))
        self.assertIn("notebook.ipynb", "\n".join(self.logged))  # the access log was observed


class BuildTests(unittest.TestCase):
    def test_file_names(self) -> None:
        for name, plain in [("runbook", "runbook"), ("runbook.ipynb", "runbook"), ("..", "notebook"),
                            ("", "notebook"), (" x ", "x"), ("\x00\n", "__")]:
            header = notebook_download.file_name(name)
            self.assertTrue(header.startswith(f'attachment; filename="{plain}.ipynb"; filename*=UTF-8\'\''), header)
            self.assertTrue(header.isascii())
            self.assertNotRegex(header, r"[\x00-\x1f/\\]")
