"""Ops for the notebook library: notebook.list/get/save/rename/delete/parameters.

PROTOCOL.md sections 10 and 12. The library (``spinrt.notebooks``) is
``conn.manager.notebooks``; names and parameters arrive already checked by
the protocol layer (``spinrt.protocol.OPS``). A ``conflict`` failure carries
``current``: the notebook's current version (null when it does not exist).
"""

from __future__ import annotations

import asyncio
import inspect
import weakref
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from .. import protocol as proto
from ..notebooks import NotebookError, NotebookLibrary

if TYPE_CHECKING:
    from .ops import ClientConnection

_log = Logger()

FORMS = ("cells", "ipynb", "session")
_evaluators: "weakref.WeakKeyDictionary[Any, Any]" = weakref.WeakKeyDictionary()


def _library(conn: "ClientConnection") -> NotebookLibrary:
    library = getattr(conn.manager, "notebooks", None)
    if library is None:
        raise proto.ProtocolError(proto.INTERNAL, "this runtime has no notebook library")
    return library


async def _call(pending: Any) -> Any:
    """Await a library coroutine; its errors as failure replies."""
    try:
        return await pending
    except NotebookError as e:
        details = {"current": e.current} if e.code == "conflict" else {}
        raise proto.ProtocolError(e.code, e.message, details=details) from None
    except OSError as e:
        _log.error("notebook library: {e}", e=e)
        raise proto.ProtocolError(proto.INTERNAL, f"the notebook library cannot do that: "
                                                  f"{e.strerror or e}") from None


async def notebook_list(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    return {"notebooks": await _call(_library(conn).list())}


async def notebook_get(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    return {"notebook": await _call(_library(conn).get(req.params["name"]))}


async def _document_cells(conn: "ClientConnection", sid: str) -> list[dict[str, Any]]:
    session = conn.manager.get(sid)
    cells = getattr(session, "document_cells", None)
    if cells is None:
        raise proto.ProtocolError(proto.BAD_REQUEST, "saving a session's document is not available yet")
    result = cells()
    if inspect.isawaitable(result):
        result = await result
    return list(result)


async def notebook_save(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    params = req.params
    given = [form for form in FORMS if form in params]
    if len(given) != 1:
        raise proto.ProtocolError(proto.BAD_REQUEST, "'notebook.save' needs exactly one of 'cells', "
                                                     "'ipynb' or 'session'")
    if "parameters" in params and given != ["cells"]:
        raise proto.ProtocolError(proto.BAD_REQUEST, "'parameters' goes with 'cells' (an imported "
                                                     "notebook brings its own metadata.spin.parameters)")
    library, name, version = _library(conn), params["name"], params.get("version")
    if "ipynb" in params:
        saved = await _call(library.save_ipynb(name, params["ipynb"], version))
    else:
        cells = params["cells"] if "cells" in params else await _document_cells(conn, params["session"])
        saved = await _call(library.save(name, cells, params.get("parameters"), version))
    _log.info("notebook {name} saved (version {version})", name=saved["name"], version=saved["version"])
    return {"notebook": saved}


async def notebook_rename(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    p = req.params
    renamed = await _call(_library(conn).rename(p["name"], p["new_name"], p.get("version")))
    _log.info("notebook {name} renamed to {new}", name=p["name"], new=renamed["name"])
    return {"notebook": renamed}


async def notebook_delete(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    await _call(_library(conn).delete(req.params["name"], req.params.get("version")))
    _log.info("notebook {name} deleted", name=req.params["name"])
    return {}


def _evaluator(conn: "ClientConnection") -> Any:
    from ..cells.parameter_eval import ParameterEvaluator

    kernels = getattr(conn.manager, "kernels", None)
    if kernels is None:
        return ParameterEvaluator(None)
    evaluator = _evaluators.get(kernels)
    if evaluator is None:
        evaluator = _evaluators[kernels] = ParameterEvaluator(kernels)
    return evaluator


async def notebook_parameters(conn: "ClientConnection", req: proto.Request) -> dict[str, Any]:
    notebook = await _call(_library(conn).get(req.params["name"]))
    evaluating = asyncio.ensure_future(_evaluator(conn).evaluate(notebook["parameters"]))
    return {"parameters": await Deferred.fromFuture(evaluating)}
