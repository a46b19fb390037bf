"""The spin.v1 client that .ci/check-image drives a containerised runtime with.

It runs on the CI machine, in the project's own venv, and talks to the
container only through its published loopback port, over the same client
code ``spin run --url`` uses (spinrt/cli/client.py). The token comes from
SPIN_TOKEN; it is never printed.

    python .ci/image_client.py cells URL [--ca-file PEM] [--name NAME] [--leave-running]
        Creates a session, runs a shell cell and a python cell and checks
        their output (both run as uid 10001). Prints one JSON line:
        {"session": ID, "outputs": {cell_id: text}, "running": RUN|null}.
        --leave-running queues `sleep 600` and returns once it has started.
    python .ci/image_client.py history URL RECORD... [--ca-file PEM] [--interrupted] [--expect-version V]
        Each RECORD is a line printed by `cells`: the session must still be
        listed and its snapshot must hold the same cells' output. With
        --interrupted, the run left running must have finished `cancelled`:
        a graceful stop cancels running cells and records it. With
        --expect-version, the runtime's welcome must name that version.

Exit status 0 when every check holds, 1 with the reason on stderr otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from twisted.internet import task
from twisted.internet.defer import Deferred, ensureDeferred, succeed

from spinrt.cli.client import Connection
from spinrt.cli.main import trust_root

RUN_TIMEOUT = 120.0  # a first python cell starts a kernel; 2 cores shared by all

CELLS = [
    {"id": "sh", "type": "shell", "source": "echo shell-ok uid=$(id -u)"},
    {"id": "py", "type": "python",
     "source": "import os, sys\nprint('python-ok uid=%d' % os.getuid(), sys.version_info[:2])"},
]
EXPECTED = {"sh": "shell-ok uid=10001", "py": "python-ok uid=10001"}


class Failed(Exception):
    pass


def text_of(outputs: list[dict[str, Any]]) -> str:
    return "".join(o.get("text", "") for o in outputs if o.get("event", "stream") == "stream")


async def connect(reactor: Any, url: str, ca_file: str | None) -> Connection:
    trust = trust_root(ca_file, "--ca-file") if ca_file else None
    return await Connection.open(reactor, url, os.environ["SPIN_TOKEN"], trust, timeout=30.0)


async def cells(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    conn = await connect(reactor, args.url, args.ca_file)
    # Events of a run may arrive before the reply naming it: keep them all.
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    waiting: dict[tuple[str, str], Deferred[dict[str, Any]]] = {}
    output: dict[str, str] = {}

    def on_event(event: dict[str, Any]) -> None:
        run = event.get("run")
        if event["event"] == "stream":
            output[run] = output.get(run, "") + event["text"]
        elif event["event"] in ("run.started", "run.finished"):
            seen[(run, event["event"])] = event
            d = waiting.pop((run, event["event"]), None)
            if d is not None:
                d.callback(event)

    def wait(run: str, name: str) -> Deferred[dict[str, Any]]:
        if (run, name) in seen:
            return succeed(seen[(run, name)])
        d: Deferred[dict[str, Any]] = Deferred()
        waiting[(run, name)] = d
        return d.addTimeout(RUN_TIMEOUT, reactor)

    conn.on_event = on_event
    try:
        session = (await conn.request("session.create", name=args.name))["session"]["id"]
        runs = {}
        for cell in CELLS:
            run = (await conn.request("cell.run", session=session, cell=cell))["run"]
            runs[cell["id"]] = run
        record: dict[str, Any] = {"session": session, "outputs": {}, "running": None}
        for cell_id, run in runs.items():
            done = await wait(run, "run.finished")
            text = output.get(run, "")
            if done.get("status") != "ok" or EXPECTED[cell_id] not in text:
                raise Failed(f"cell {cell_id}: status {done.get('status')} {done.get('error')}, output {text!r}")
            record["outputs"][cell_id] = text
        if args.leave_running:
            cell = {"id": "long", "type": "shell", "source": "echo long-started; sleep 600"}
            run = (await conn.request("cell.run", session=session, cell=cell))["run"]
            await wait(run, "run.started")
            record["running"] = run
        return record
    finally:
        await conn.close()


async def history(reactor: Any, args: argparse.Namespace) -> dict[str, Any]:
    records = [json.loads(r) for r in args.records]
    conn = await connect(reactor, args.url, args.ca_file)
    version = conn.runtime.get("version")
    try:
        if args.expect_version and version != args.expect_version:
            raise Failed(f"the runtime is version {version}, not {args.expect_version}: not the newer build")
        listed = {s["id"] for s in (await conn.request("session.list"))["sessions"]}
        for record in records:
            session = record["session"]
            if session not in listed:
                raise Failed(f"session {session} is gone (listed: {sorted(listed)})")
            snap = await conn.request("session.snapshot", session=session)
            by_cell = {r["cell_id"]: r for r in snap["runs"]}
            for cell_id, text in record["outputs"].items():
                run = by_cell.get(cell_id)
                if run is None or run["status"] != "ok" or text_of(run["outputs"]) != text:
                    raise Failed(f"session {session}: cell {cell_id} lost its run or output: {run!r}")
            if record["running"] and args.interrupted:
                run = next((r for r in snap["runs"] if r["run"] == record["running"]), None)
                if run is None or run["status"] != "cancelled":
                    raise Failed(f"session {session}: the run left running is {run!r}, "
                                 "not finished 'cancelled' by the graceful stop")
        return {"version": version, "sessions": len(listed), "checked": [r["session"] for r in records]}
    finally:
        await conn.close()


def main(reactor: Any, argv: list[str]) -> Deferred[None]:
    parser = argparse.ArgumentParser(prog="image_client.py")
    sub = parser.add_subparsers(dest="command", required=True)
    c = sub.add_parser("cells")
    c.add_argument("url")
    c.add_argument("--ca-file")
    c.add_argument("--name", default="check-image")
    c.add_argument("--leave-running", action="store_true")
    h = sub.add_parser("history")
    h.add_argument("url")
    h.add_argument("records", nargs="+")
    h.add_argument("--ca-file")
    h.add_argument("--interrupted", action="store_true")
    h.add_argument("--expect-version")
    args = parser.parse_args(argv)

    async def go() -> None:
        try:
            result = await (cells if args.command == "cells" else history)(reactor, args)
        except Exception as e:  # one line for the CI log, whatever failed
            print(f"image_client.py {args.command}: {type(e).__name__}: {e}", file=sys.stderr)
            raise SystemExit(1)
        print(json.dumps(result))

    return ensureDeferred(go())


if __name__ == "__main__":
    task.react(main, (sys.argv[1:],))
