"""A session's working document, folded from its log (PROTOCOL.md section 10).

Pure: no I/O, no Twisted. The document is the ordered list of cells a
session is working on. It lives in the session's event log: three events
change it, and folding them in seq order gives the document.

- ``cell.set {cell, after, version, by}``: the cell (a protocol cell dict)
  is now as given and stands right after the cell ``after`` (null: at the
  top). Its ``version`` becomes this event's ``seq``.
- ``cell.deleted {cell_id, by}``: the cell is gone.
- ``cell.moved {cell_id, after, by}``: the cell stands right after ``after``
  (null: the top). A move keeps the cell's ``version``: ``version`` guards
  the cell's content (``base_version``), and a teammate reordering cells
  must not make a text edit conflict.

The ops (``cell.set`` etc.) may leave ``after`` out; :meth:`Document.plan_set`
resolves it (keep the place, or append a new cell), so every event in the
log names the place explicitly and a client's fold is as simple as this
one. An event naming a cell that is not there (possible only in a damaged
log, e.g. a row the store had to skip) is folded without failing: a set or
move after an unknown cell goes to the end, a delete or move of an unknown
cell does nothing.

Cells are a doubly linked list keyed by id, so an insert, move or delete is
O(1) whatever the document's size; listing them is O(n).
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Iterator, Mapping, Sequence

from .. import protocol as proto

MAX_CELLS = 10_000
# The cells' JSON, summed: a document always fits one 16 MiB message (the
# default --max-message-size), e.g. a notebook.save of it.
MAX_BYTES = 16 * 1024 * 1024
KINDS = frozenset({"cell.set", "cell.deleted", "cell.moved"})


class _Absent:
    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()  # ``after`` not given: unlike None, which is the top


class DocumentError(Exception):
    """An edit that cannot be made; nothing changed. ``code`` is
    ``no_such_cell``, ``conflict`` (``current``: the cell as it is now, with
    its version, or None when it does not exist), ``document_full`` or
    ``bad_request``."""

    def __init__(self, code: str, message: str, current: Any = ABSENT) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.current = current

    def details(self) -> dict[str, Any]:
        """Extra fields for the reply's error object."""
        return {} if self.current is ABSENT else {"current": self.current}


def cell_dict(cell: proto.Cell | Mapping[str, Any]) -> dict[str, Any]:
    """The protocol cell ``{id, type, source, options, output_variable?}``."""
    if isinstance(cell, proto.Cell):
        out = {"id": cell.id, "type": cell.type, "source": cell.source, "options": dict(cell.options)}
        if cell.output_variable is not None:
            out["output_variable"] = cell.output_variable
        return out
    out = {"id": cell["id"], "type": cell["type"], "source": cell.get("source", ""),
           "options": dict(cell.get("options") or {})}
    if cell.get("output_variable") is not None:
        out["output_variable"] = cell["output_variable"]
    return out


def as_cell(cell: Mapping[str, Any]) -> proto.Cell:
    """A document's cell dict as the Cell a run takes."""
    return proto.Cell(id=cell["id"], type=cell["type"], source=cell.get("source", ""),
                      options=dict(cell.get("options") or {}), output_variable=cell.get("output_variable"))


def _size(cell: Mapping[str, Any]) -> int:
    return len(proto.encode(cell))


def _shown(cell_id: Any) -> str:
    return repr(cell_id[:64] if isinstance(cell_id, str) else cell_id)


class Document:
    def __init__(self) -> None:
        self._cells: dict[str, dict[str, Any]] = {}  # id -> cell dict with "version"
        self._prev: dict[str, str | None] = {}
        self._next: dict[str, str | None] = {}
        self._head: str | None = None
        self._tail: str | None = None
        self._sizes: dict[str, int] = {}
        self.bytes = 0

    # -- reading ---------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._cells)

    def __contains__(self, cell_id: Any) -> bool:
        return isinstance(cell_id, str) and cell_id in self._cells

    def ids(self) -> Iterator[str]:
        cell_id = self._head
        while cell_id is not None:
            yield cell_id
            cell_id = self._next[cell_id]

    def get(self, cell_id: Any) -> dict[str, Any] | None:
        """The cell with its ``version`` (a copy), or None."""
        cell = self._cells.get(cell_id) if isinstance(cell_id, str) else None
        return None if cell is None else dict(cell)

    def after_of(self, cell_id: str) -> str | None:
        """The id of the cell before ``cell_id`` (None: it is at the top)."""
        return self._prev[cell_id]

    def cells(self, versions: bool = True) -> list[dict[str, Any]]:
        """The cells in order, each a protocol cell dict (with ``version``)."""
        if versions:
            return [dict(self._cells[i]) for i in self.ids()]
        return [{k: v for k, v in self._cells[i].items() if k != "version"} for i in self.ids()]

    # -- planning an edit: checks only, nothing changes --------------------------------

    def plan_set(self, cell: proto.Cell | Mapping[str, Any], after: Any = ABSENT,
                 base_version: int | None = None) -> dict[str, Any]:
        """The fields of the ``cell.set`` event that makes the document hold
        ``cell``: ``{cell, after}``, ``after`` resolved (absent: the cell's
        place, or the end for a new cell). DocumentError: ``conflict`` when
        ``base_version`` is given and is not the cell's version (0 stands
        for "the cell does not exist yet"), ``no_such_cell`` for an unknown
        ``after``, ``bad_request`` for a cell placed after itself,
        ``document_full`` beyond MAX_CELLS cells or MAX_BYTES."""
        new = cell_dict(cell)
        cell_id = new["id"]
        problem = proto.cell_id_problem(cell_id)
        if problem is not None:
            raise DocumentError(proto.BAD_REQUEST, f"'cell.id' {problem}")
        current = self._cells.get(cell_id)
        if base_version is not None:
            version = current["version"] if current is not None else 0
            if base_version != version:
                shown = dict(current) if current is not None else None
                what = (f"is at version {version}" if current is not None
                        else "does not exist (deleted, or never added)")
                raise DocumentError(proto.CONFLICT, f"cell {_shown(cell_id)} {what}, not {base_version}; "
                                                    "nothing was changed", shown)
        if after is ABSENT:
            after = self._prev[cell_id] if current is not None else self._tail
        else:
            self._check_after(cell_id, after)
        if current is None and len(self._cells) >= MAX_CELLS:
            raise DocumentError(proto.DOCUMENT_FULL, f"the document already holds {MAX_CELLS} cells, "
                                                     "the most a session document may hold")
        size = _size(new)
        total = self.bytes - self._sizes.get(cell_id, 0) + size
        if total > MAX_BYTES:
            raise DocumentError(proto.DOCUMENT_FULL, f"with this cell ({size} bytes) the document would "
                                                     f"hold {total} bytes of cells, more than {MAX_BYTES}")
        return {"cell": new, "after": after}

    def plan_updates(self, cells: Sequence[proto.Cell | Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``cell.set`` fields for each of ``cells`` whose id is in the
        document and whose content is not the document's (``cell.run`` with
        whole cells: what runs is what the document shows), each keeping its
        place; the others run as ad-hoc cells and are not planned. All or
        nothing: DocumentError ``document_full`` when together they would
        pass MAX_BYTES."""
        plans, sizes = [], {}
        for cell in cells:
            new = cell_dict(cell)
            current = self._cells.get(new["id"]) if isinstance(new["id"], str) else None
            if current is None or {k: v for k, v in current.items() if k != "version"} == new:
                continue
            plans.append({"cell": new, "after": self._prev[new["id"]]})
            sizes[new["id"]] = _size(new)
        total = self.bytes + sum(size - self._sizes[cell_id] for cell_id, size in sizes.items())
        if total > MAX_BYTES:
            raise DocumentError(proto.DOCUMENT_FULL, f"with these cells the document would hold {total} "
                                                     f"bytes of cells, more than {MAX_BYTES}")
        return plans

    def plan_delete(self, cell_id: str) -> dict[str, Any]:
        """``{cell_id}`` for ``cell.deleted``; ``no_such_cell``."""
        self._require(cell_id)
        return {"cell_id": cell_id}

    def plan_move(self, cell_id: str, after: str | None) -> dict[str, Any]:
        """``{cell_id, after}`` for ``cell.moved``; ``no_such_cell`` (the
        cell or ``after``), ``bad_request`` for a move after itself."""
        self._require(cell_id)
        self._check_after(cell_id, after)
        return {"cell_id": cell_id, "after": after}

    def _require(self, cell_id: str) -> None:
        if cell_id not in self:
            raise DocumentError(proto.NO_SUCH_CELL, f"no cell {_shown(cell_id)} in this session's document")

    def _check_after(self, cell_id: str, after: Any) -> None:
        if after is None:
            return
        if after == cell_id:
            raise DocumentError(proto.BAD_REQUEST, f"cell {_shown(cell_id)} cannot be placed after itself")
        if after not in self:
            raise DocumentError(proto.NO_SUCH_CELL, f"'after': no cell {_shown(after)} in this "
                                                    "session's document")

    # -- folding -----------------------------------------------------------------------

    def apply(self, event: Mapping[str, Any]) -> bool:
        """Fold one event (a decoded log event with ``event`` and ``seq``);
        False when it is not a document event or names nothing usable."""
        kind = event.get("event")
        if kind == "cell.set":
            cell = event.get("cell")
            if not isinstance(cell, dict) or not isinstance(cell.get("id"), str):
                return False
            cell_id = cell["id"]
            new = {**cell, "version": event.get("seq", event.get("version", 0))}
            size = _size(cell)
            self.bytes += size - self._sizes.get(cell_id, 0)
            self._sizes[cell_id] = size
            if cell_id in self._cells:
                self._unlink(cell_id)
            self._cells[cell_id] = new
            self._link(cell_id, event.get("after"))
            return True
        cell_id = event.get("cell_id")
        if not isinstance(cell_id, str) or cell_id not in self._cells:
            return False
        if kind == "cell.deleted":
            self._unlink(cell_id)
            del self._cells[cell_id]
            self.bytes -= self._sizes.pop(cell_id)
            return True
        if kind == "cell.moved":
            after = event.get("after")
            if after != cell_id:
                self._unlink(cell_id)
                self._link(cell_id, after)
            return True
        return False

    def _unlink(self, cell_id: str) -> None:
        prev, nxt = self._prev.pop(cell_id), self._next.pop(cell_id)
        if prev is None:
            self._head = nxt
        else:
            self._next[prev] = nxt
        if nxt is None:
            self._tail = prev
        else:
            self._prev[nxt] = prev

    def _link(self, cell_id: str, after: Any) -> None:
        if after is not None and (not isinstance(after, str) or after not in self._prev):
            after = self._tail  # a damaged log: keep the cell, at the end
        nxt = self._head if after is None else self._next[after]
        self._prev[cell_id], self._next[cell_id] = after, nxt
        if after is None:
            self._head = cell_id
        else:
            self._next[after] = cell_id
        if nxt is None:
            self._tail = cell_id
        else:
            self._prev[nxt] = cell_id

    # -- snapshots ---------------------------------------------------------------------

    def snapshot(self) -> bytes:
        """The document as JSON ``{"cells": [cell + version]}``: a restart
        loads it instead of folding the events it sums up."""
        return proto.encode({"cells": self.cells()})

    @classmethod
    def from_snapshot(cls, body: bytes | str) -> "Document":
        """ValueError when ``body`` is not a snapshot."""
        data = json.loads(body)
        cells = data.get("cells") if isinstance(data, dict) else None
        if not isinstance(cells, list):
            raise ValueError("not a document snapshot")
        doc = cls()
        for cell in cells:
            if not isinstance(cell, dict):
                raise ValueError("not a document snapshot")
            fields = {k: v for k, v in cell.items() if k != "version"}
            doc.apply({"event": "cell.set", "seq": cell.get("version", 0), "cell": fields, "after": doc._tail})
        return doc


def fold(events: Iterable[Mapping[str, Any] | bytes | str], document: Document | None = None) -> Document:
    """The document the events make (in seq order), starting from
    ``document`` (default: an empty one). Events may be encoded frames;
    other kinds and undecodable frames are skipped."""
    doc = Document() if document is None else document
    for event in events:
        if not isinstance(event, Mapping):
            try:
                event = json.loads(event)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
        doc.apply(event)
    return doc


def initial_cells(cells: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A notebook's cells as a new document's: each a protocol cell dict
    whose id is a usable cell id, unique (an id that is not, or repeats an
    earlier one, is replaced by ``cell-<n>``). DocumentError
    ``document_full`` beyond MAX_CELLS cells or MAX_BYTES."""
    if len(cells) > MAX_CELLS:
        raise DocumentError(proto.DOCUMENT_FULL, f"the notebook has {len(cells)} cells; a session "
                                                 f"document holds at most {MAX_CELLS}")
    taken = {c.get("id") for c in cells if isinstance(c.get("id"), str)}
    seen: set[str] = set()
    out = []
    total = 0
    n = 0
    for cell in cells:
        new = cell_dict(cell)
        if proto.cell_id_problem(new["id"]) is not None or new["id"] in seen:
            n += 1
            while f"cell-{n}" in taken or f"cell-{n}" in seen:
                n += 1
            new["id"] = f"cell-{n}"
        seen.add(new["id"])
        total += _size(new)
        out.append(new)
    if total > MAX_BYTES:
        raise DocumentError(proto.DOCUMENT_FULL, f"the notebook's cells hold {total} bytes; a session "
                                                 f"document holds at most {MAX_BYTES}")
    return out
