"""Ops on session documents (PROTOCOL.md section 10): session.document,
cell.set / cell.delete / cell.move, the runs of document cells (``cell.run``
and ``cells.run`` in both forms) and ``session.create`` from a notebook.

An edit is planned against the session's document (:mod:`spinrt.sessions.document`:
checks only, nothing changes), then becomes an event in the session's log
(``Session.edit_document``), masked like every event; every attached
client, the editor included, learns of it from the log. A failed edit
changes nothing; a ``conflict`` failure carries ``current``: the cell as it
is now, with its version (null when it does not exist).

Edits of a closed session are refused with ``session_closed``: its log ends
with ``session.closed`` and stays a record; its document can still be read
(``session.document``) and saved as a notebook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import protocol as proto
from ..notebooks import NotebookError
from ..parameters import check_parameter_values
from ..sessions.document import ABSENT, DocumentError, as_cell
from ..sessions.session import Session

if TYPE_CHECKING:
    from .ops import ClientConnection


def _by(conn: "ClientConnection") -> str:
    """The name of the connection's identity (``by`` in events)."""
    return str(conn.identity["name"])


def _refused(e: DocumentError) -> proto.ProtocolError:
    return proto.ProtocolError(e.code, e.message, details=e.details())


def _open_session(conn: "ClientConnection", req: proto.Request) -> Session:
    session = conn.manager.get(req.params["session"])
    session.check_open()
    return session


def session_document(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    session = conn.manager.get(req.params["session"])
    return {"document": {"notebook": session.notebook, "cells": session.document.cells()}}


def cell_set(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    """-> ``{version}``: the cell's new version (the seq of its event)."""
    session = _open_session(conn, req)
    p = req.params
    try:
        plan = session.document.plan_set(p["cell"], p.get("after", ABSENT), p.get("base_version"))
    except DocumentError as e:
        raise _refused(e) from None
    return {"version": session.edit_document("cell.set", plan, _by(conn))["version"]}


def cell_delete(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    session = _open_session(conn, req)
    try:
        plan = session.document.plan_delete(req.params["cell_id"])
    except DocumentError as e:
        raise _refused(e) from None
    session.edit_document("cell.deleted", plan, _by(conn))
    return {}


def cell_move(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    session = _open_session(conn, req)
    try:
        plan = session.document.plan_move(req.params["cell_id"], req.params["after"])
    except DocumentError as e:
        raise _refused(e) from None
    session.edit_document("cell.moved", plan, _by(conn))
    return {}


def _cells_to_run(conn: "ClientConnection", session: Session, cells: list[proto.Cell] | None,
                  cell_ids: list[str] | None) -> list[proto.Cell]:
    """The cells a run request names, the document brought up to date first:
    by id, the document's cells as they are now (``no_such_cell`` for an id
    it does not hold); whole cells whose id the document holds are applied
    to it as ``cell.set`` (the others run ad hoc). Nothing changes when the
    request is refused."""
    if cell_ids is not None:
        found = []
        for cell_id in cell_ids:
            cell = session.document.get(cell_id)
            if cell is None:
                raise proto.ProtocolError(proto.NO_SUCH_CELL, f"no cell {cell_id[:64]!r} in this session's "
                                                              "document")
            found.append(as_cell(cell))
        session.check_room(len(found))
        return found
    assert cells is not None
    session.check_room(len(cells))
    try:
        plans = session.document.plan_updates(cells)
    except DocumentError as e:
        raise _refused(e) from None
    for plan in plans:
        session.edit_document("cell.set", plan, _by(conn))
    return cells


def cell_run(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    """``{session, cell}`` or ``{session, cell_id}`` -> ``{run}``."""
    session = conn.manager.get(req.params["session"])
    cell, cell_id = req.params.get("cell"), req.params.get("cell_id")
    cells = _cells_to_run(conn, session, None if cell is None else [cell], None if cell_id is None else [cell_id])
    (run,) = session.enqueue(cells, by=_by(conn))
    return {"run": run.id}


def cells_run(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    """``{session, cells | cell_ids, stop_on_error?}`` -> ``{runs}``: a linked chain."""
    session = conn.manager.get(req.params["session"])
    cells = _cells_to_run(conn, session, req.params.get("cells"), req.params.get("cell_ids"))
    runs = session.enqueue(cells, stop_on_error=req.params.get("stop_on_error", True), linked=True,
                           by=_by(conn))
    return {"runs": [run.id for run in runs]}


async def session_create(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    """``session.create`` with ``notebook``: the document starts as the
    notebook's cells. ``variables`` are checked against its parameters
    (``bad_request`` naming the parameter, PROTOCOL.md section 12); a
    parameter given no value gets its ``default``, when it declares one."""
    library = getattr(conn.manager, "notebooks", None)
    if library is None:
        raise proto.ProtocolError(proto.INTERNAL, "this runtime has no notebook library")
    try:
        notebook = await library.get(req.params["notebook"])
    except NotebookError as e:
        raise proto.ProtocolError(e.code, e.message) from None
    variables = dict(req.params.get("variables") or {})
    try:
        check_parameter_values(notebook["parameters"], variables)
    except ValueError as e:
        raise proto.ProtocolError(proto.BAD_REQUEST, str(e)) from None
    for parameter in notebook["parameters"]:
        if parameter["name"] not in variables and parameter.get("default") is not None:
            variables[parameter["name"]] = parameter["default"]
    try:
        session = conn.manager.create(req.params.get("name"), variables, notebook=notebook, by=_by(conn))
    except DocumentError as e:
        raise _refused(e) from None
    described = session.describe()
    described.pop("state")
    clients = conn.attach(session.id, 0)  # after the last await: see ClientConnection.attach
    return {"session": described, "clients": clients}
