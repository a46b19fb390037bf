"""What the tests of integration cells share: run one cell and collect what it showed."""

from __future__ import annotations

from typing import Any

from .support import Client


async def run_cell(client: Client, sid: str, cell_type: str, source: str, variable: str | None = None, /,
                   **options: Any) -> tuple[dict[str, Any], list[str]]:
    """Run a ``cell_type`` cell; its run.finished event and the text/plain of its
    results and displays, in order."""
    cell: dict[str, Any] = {"id": cell_type[0], "type": cell_type, "source": source, "options": options}
    if variable:
        cell["output_variable"] = variable
    finished = await client.run(sid, cell)
    texts = [e["data"].get("text/plain", "") for e in client.events(run=finished["run"])
             if e["event"] in ("result", "display")]
    return finished, texts
