"""Tables as integrations show them: plain text like kubectl's, HTML, JSON.

A :class:`Table` becomes one MIME bundle: ``text/plain`` (columns padded
with three spaces, as ``kubectl get`` prints them), ``text/html`` (a plain
``<table>``, every cell escaped) and ``application/json`` (the rows as
objects keyed by column). At most :data:`DISPLAY_ROWS` rows are shown; the
output variable keeps everything.
"""

from __future__ import annotations

import html
import json
from typing import Any, Sequence

import attrs

DISPLAY_ROWS = 1000
CELL_WIDTH = 120  # characters of one cell in the text form


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return str(value)


def _cut(text: str) -> str:
    text = " ".join(text.split()) if "\n" in text or "\t" in text else text
    return text if len(text) <= CELL_WIDTH else text[:CELL_WIDTH - 1] + "…"


@attrs.frozen
class Table:
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]
    # Shown when there are no rows, e.g. "No resources found in default namespace."
    empty: str = "(no rows)"

    def records(self) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, row)) for row in self.rows]

    def _shown(self) -> tuple[Sequence[Sequence[Any]], str]:
        if len(self.rows) <= DISPLAY_ROWS:
            return self.rows, ""
        return self.rows[:DISPLAY_ROWS], f"… {len(self.rows) - DISPLAY_ROWS} more rows"

    def text(self) -> str:
        if not self.rows:
            return self.empty
        rows, more = self._shown()
        cells = [[_cut(_text(v)) for v in row] for row in rows]
        widths = [len(c) for c in self.columns]
        for row in cells:
            for i, v in enumerate(row):
                widths[i] = max(widths[i], len(v))
        lines = []
        for row in [list(self.columns), *cells]:
            line = "   ".join(v.ljust(widths[i]) for i, v in enumerate(row))
            lines.append(line.rstrip())
        if more:
            lines.append(more)
        return "\n".join(lines)

    def html(self) -> str:
        if not self.rows:
            return f"<p>{html.escape(self.empty)}</p>"
        rows, more = self._shown()
        head = "".join(f"<th>{html.escape(c)}</th>" for c in self.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(_text(v))}</td>" for v in row) + "</tr>" for row in rows)
        tail = f"<p>{html.escape(more)}</p>" if more else ""
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{tail}"

    def bundle(self, variable: str | None = None) -> dict[str, Any]:
        rows, more = self._shown()
        text = self.text()
        if more and variable:
            text += f" (all of them are in the variable {variable})"
        return {"text/plain": text, "text/html": self.html(),
                "application/json": [dict(zip(self.columns, row)) for row in rows]}
