"""``splunk`` cells: an SPL search, its results streamed as they arrive.

Connection: ``url`` (splunkd's management port, e.g.
``https://splunk.example:8089``), ``token`` (a Splunk authentication token,
``Authorization: Bearer``) or ``username`` and ``password``, ``ca`` (splunkd's
own CA; its default certificate is self-signed: give that CA, or the
runtime's ``REQUESTS_CA_BUNDLE`` policy applies).

The source is SPL (``search`` is added in front unless it starts with
``search`` or ``|``); options ``earliest`` (default ``-1h``) and ``latest``
(default ``now``): Splunk's time modifiers (``-15m@m``) as they are, or
our times (``now-1h``, RFC 3339, Unix seconds) sent as Unix seconds.

API: https://docs.splunk.com/Documentation/Splunk/latest/RESTREF/RESTsearch
("search/jobs/export": POST, the search streamed as it runs; with
``output_mode=json`` one JSON object a line: ``{"preview", "offset",
"result"}``, ``{"lastrow": true}``, ``{"messages": [{"type", "text"}]}``);
https://docs.splunk.com/Documentation/Splunk/latest/RESTUM/RESTusing
("Authentication and authorization": tokens as Bearer, basic; errors as
``{"messages": [{"type", "text"}]}``); "server/info" for connections.test.
The export endpoint has no job id: cancelling the cell closes the stream,
which ends the search on splunkd.
"""

from __future__ import annotations

import json
from typing import Any

from ..cells.base import Outcome
from ..cells.httpio import Aborted
from .base import IntegrationError
from .cell import IntegrationRun
from .http import HttpApi
from .http_integration import HttpIntegration
from .tables import Table
from .times import parse_time

FIRST_COLUMNS = ("_time", "host", "source", "sourcetype", "_raw")


def columns_of(rows: list[dict[str, Any]]) -> list[str]:
    """Splunk's usual order: _time, host, source, sourcetype, _raw first
    (those present), then the other fields in the order they appear,
    internal ones (``_cd``, ``_bkt``...) left out."""
    seen: list[str] = []
    for row in rows:
        for key in row:
            if key not in seen and (not key.startswith("_") or key in FIRST_COLUMNS):
                seen.append(key)
    return [c for c in FIRST_COLUMNS if c in seen] + [c for c in seen if c not in FIRST_COLUMNS]


class Splunk(HttpIntegration):
    name = "splunk"
    description = "Splunk Enterprise or Cloud (splunkd's REST API): SPL searches, streamed"
    url_example = "https://splunk.example:8089"
    test_path = "/services/server/info?output_mode=json"
    options = {
        "earliest": "earliest time (default -1h): a Splunk time modifier, or now-1h, RFC 3339, Unix seconds",
        "latest": "latest time (default now)",
    }

    def test_detail(self, data: Any, api: HttpApi) -> str:
        try:
            content = data["entry"][0]["content"]
        except (KeyError, IndexError, TypeError):
            raise IntegrationError("bad_response", "splunkd's server/info answer has no entry") from None
        return f"Splunk {content.get('version', '?')} at {api.base_url} ({content.get('serverName', '?')})"

    def _time(self, run: IntegrationRun, name: str, default: str) -> str:
        value = run.options.get(name, default)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)) or not str(value).strip():
            raise IntegrationError("bad_option", f"options.{name} must be a time such as -1h, now-1h or "
                                                 "2026-11-30T10:00:00Z")
        if str(value).strip() == "now":
            return "now"  # the same word in Splunk's modifiers
        try:
            return f"{parse_time(value, name, run.reactor.seconds()):.3f}"
        except ValueError:
            return str(value).strip()  # one of Splunk's modifiers (-15m@m, @d): splunkd checks it

    async def execute(self, run: IntegrationRun) -> Outcome:
        spl = run.cell.source.strip()
        if not spl:
            raise IntegrationError("bad_option", "the source is an SPL search, e.g. index=web status>=500")
        if not (spl.startswith("|") or spl.split(None, 1)[0].lower() == "search"):
            spl = "search " + spl
        form = {"search": spl, "earliest_time": self._time(run, "earliest", "-1h"),
                "latest_time": self._time(run, "latest", "now"), "output_mode": "json"}
        api = await self.api(run.services, run.connection, run)
        rows: list[dict[str, Any]] = []
        batch: list[dict[str, Any]] = []
        messages: list[dict[str, Any]] = []
        state: dict[str, Any] = {"flush": None, "batches": 0, "error": None}

        def flush() -> None:
            state["flush"] = None
            if batch:
                state["batches"] += 1
                shown = Table(columns_of(batch), [[r.get(c) for c in columns_of(batch)] for r in batch])
                run.ctx.display(shown.bundle())
                batch.clear()

        def read(text: str) -> None:
            if not text.strip():
                return
            try:
                item = json.loads(text)
            except ValueError:
                raise IntegrationError("bad_response", f"splunkd sent a line that is not JSON: {text[:200]!r}") from None
            if not isinstance(item, dict):
                raise IntegrationError("bad_response", f"splunkd sent {type(item).__name__}, not an object")
            for message in item.get("messages") or []:
                messages.append(message)
                if isinstance(message, dict) and message.get("type") in ("FATAL", "ERROR"):
                    raise IntegrationError("search_error", f"{message.get('type')}: {message.get('text')}",
                                           value={"result": rows, "messages": messages})
            result = item.get("result")
            if isinstance(result, dict) and not item.get("preview"):
                rows.append(result)
                batch.append(result)
                if state["flush"] is None:
                    # The lines of one arriving chunk make one output.
                    state["flush"] = run.reactor.callLater(0, flush)

        def line(text: str) -> None:
            # Called as data arrives: a failure ends the stream, and is raised below.
            if state["error"] is not None:
                return
            try:
                read(text)
            except IntegrationError as e:
                state["error"] = e
                api.stop("search_error")

        try:
            await api.lines("POST", "/services/search/jobs/export", line, form=form)
        except Aborted:
            if state["error"] is None:
                raise
        finally:
            if state["flush"] is not None and state["flush"].active():
                state["flush"].cancel()
        flush()
        if state["error"] is not None:
            raise state["error"]
        for message in messages:
            run.warn(f"{message.get('type')}: {message.get('text')}")
        run.show({"text/plain": f"{len(rows)} results ({form['earliest_time']} to {form['latest_time']})"})
        return Outcome(status="ok", value={"result": rows, "count": len(rows), "messages": messages, "search": spl,
                                           "earliest": form["earliest_time"], "latest": form["latest_time"]})


splunk = Splunk()
