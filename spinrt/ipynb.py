"""The ``.ipynb`` file as SPIN uses it: read and validate, cells both ways, write atomically.

Shared by ``spin run`` (``spinrt.cli.notebook``) and the runtime's notebook
library (``spinrt.notebooks``). nbformat 4 (the Jupyter notebook format,
https://nbformat.readthedocs.io/): a code cell runs as Python unless
``metadata.spin.type`` names another cell type (``shell``, ``rest``,
``llm``, ...), with ``metadata.spin.options`` and
``metadata.spin.output_variable``; markdown cells are ``markdown`` cells
(``metadata.spin.source``, when present, holds the template an executed
notebook rendered); raw cells are ``raw`` cells, which never run.
Template parameters are ``metadata.spin.parameters`` of the notebook
(``spinrt.parameters``).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import warnings
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from .parameters import parse_parameters
from .protocol import MAX_ID_LENGTH, parse_cell
from .templates import reserved_name

if TYPE_CHECKING:
    from nbformat import NotebookNode

# nbformat is imported where it is used, not here: importing it pulls in
# jsonschema, whose format checkers build dozens of parsers at import when
# optional packages are installed (seconds of a daemon's start, most of it).
# Every use in the runtime is on a thread (spinrt.notebooks,
# spinrt.web.notebook_download), so the first one imports it there.

DEFAULT_TYPE = "python"
# nbformat 4.5's cell id (its JSON schema: 1-64 of these characters).
CELL_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
NEW_METADATA = {
    "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
    "language_info": {"name": "python"},
}


class IpynbError(ValueError):
    """Not a notebook SPIN can read or write as given (one line for the user)."""


def first_line(e: object) -> str:
    text = str(e).strip() or type(e).__name__
    line = text.splitlines()[0]
    return line if len(line) <= 200 else line[:199] + "\u2026"


# -- reading -------------------------------------------------------------------------------


def parse(text: str, where: str, *, upgrade: bool = False) -> NotebookNode:
    """Any nbformat version as a validated version 4 notebook, or IpynbError
    whose message starts with ``where``.

    Cells without a valid id of their own (or with one an earlier cell has)
    get ``cell-<position>``, made unique (``assign_ids``). ``upgrade``: also
    bring a notebook older than 4.5 to 4.5, as the library stores every notebook."""
    import nbformat
    try:
        raw = nbformat.reader.parse_json(text)
    except Exception as e:  # NotJSONError
        raise IpynbError(f"{where} is not a readable notebook: {first_line(e)}") from None
    # nbformat reads an object without "nbformat" as version 1: any JSON object would do.
    if not isinstance(raw, dict) or "nbformat" not in raw:
        raise IpynbError(f"{where} is not a readable notebook: it has no 'nbformat' version (a Jupyter "
                         "notebook is a JSON object with nbformat, nbformat_minor, metadata and cells)")
    major, minor = raw["nbformat"], raw.get("nbformat_minor") or 0
    if not isinstance(major, int) or isinstance(major, bool) or major not in nbformat.versions:
        raise IpynbError(f"{where} is not a readable notebook: unsupported nbformat version "
                         f"{json.dumps(major)[:20]} (1 to 4 can be read)")
    if not isinstance(minor, int) or isinstance(minor, bool) or minor < 0:
        raise IpynbError(f"{where} is not a readable notebook: nbformat_minor must be a whole number")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # nbformat warns (and fixes) e.g. missing cell ids
            # nbformat.reader.reads, without parsing the text a second time.
            nb = nbformat.versions[major].to_notebook_json(raw, minor=minor)
            nb = nbformat.convert(nb, 4)
    except Exception as e:
        # The conversion trips over something the schema of the notebook's own version names best.
        if major >= 3:  # nbformat has no schema for 1 and 2
            validate(nbformat.from_dict(raw), where)
        what = f"it lacks {str(e.args[0])[:64]!r}" if isinstance(e, KeyError) and e.args else first_line(e)
        raise IpynbError(f"{where} is not a readable notebook: {what}") from None
    _ids(nb, old=(major, minor) < (4, 5), upgrade=upgrade)
    validate(nb, where)
    return nb


def _ids(nb: NotebookNode, old: bool, upgrade: bool) -> None:
    """Cell ids (nbformat 4.5). A 4.5 notebook's missing, repeated or
    malformed ids are made anew. With ``upgrade``, a notebook from before
    cell ids existed (nbformat's own conversion of v3 makes random ones)
    becomes 4.5 with all-new ids."""
    if not isinstance(nb.get("cells"), list) or (old and not upgrade):
        return  # validate() says what is wrong, or ids do not belong in it
    if isinstance(nb.get("nbformat_minor"), int) and nb["nbformat_minor"] < 5:
        nb["nbformat_minor"] = 5
    cells = [c for c in nb["cells"] if isinstance(c, dict)]
    ids = assign_ids([c.get("id") if not old and isinstance(c.get("id"), str) and CELL_ID.match(c["id"])
                      else None for c in cells])
    for cell, cid in zip(cells, ids):
        cell["id"] = cid


def assign_ids(given: Sequence[str | None]) -> list[str]:
    """Cell ids, one per cell: a given id unless an earlier cell has it; the
    others ``cell-<position>`` (1-based), with ``-2``, ``-3``... when taken."""
    taken: set[str] = set()
    keep: list[str | None] = []
    for cid in given:
        keep.append(cid if cid is not None and cid not in taken else None)
        if cid is not None:
            taken.add(cid)
    out = []
    for i, cid in enumerate(keep):
        if cid is None:
            cid, n = f"cell-{i + 1}", 1
            while cid in taken:
                n += 1
                cid = f"cell-{i + 1}-{n}"
            taken.add(cid)
        out.append(cid)
    return out


def validate(nb: Any, where: str) -> None:
    """nbformat's schema check (which never changes the notebook), or
    IpynbError naming the first place that is wrong."""
    import nbformat
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            error = next(iter(nbformat.validator.iter_validate(nb)), None)
    except Exception as e:  # e.g. a version nbformat has no schema for
        error = e
    if isinstance(error, nbformat.ValidationError):
        at = "/".join(str(p) for p in error.absolute_path) or "top level"
        raise IpynbError(f"{where} is not a valid notebook (at {at}): {first_line(error.message)}")
    if error is not None:
        raise IpynbError(f"{where} is not a valid notebook: {first_line(error)}")


def parameters_of(nb: NotebookNode, where: str) -> list[dict[str, Any]]:
    """The notebook's checked ``metadata.spin.parameters`` ([] when none), or IpynbError."""
    spin = nb.get("metadata", {}).get("spin", {})
    if not isinstance(spin, dict):
        raise IpynbError(f"{where}: metadata.spin must be an object")
    try:
        declared = spin.get("parameters")
        return parse_parameters("metadata.spin.parameters", [] if declared is None else declared)
    except ValueError as e:
        raise IpynbError(f"{where}: {e}") from None


# -- cells: nbformat -> protocol -----------------------------------------------------------


def spin_cell(nbcell: NotebookNode, index: int, *, raw: bool = False) -> dict[str, Any] | None:
    """The protocol cell ``{id, type, source, options, output_variable?}`` of
    a notebook cell, None for a raw cell (unless ``raw``), or IpynbError
    for bad ``metadata.spin``. ``index`` is the 0-based position."""
    kind = nbcell.get("cell_type")
    if kind not in ("code", "markdown", "raw") or (kind == "raw" and not raw):
        return None
    where = f"cell {index + 1}"
    spin = nbcell.get("metadata", {}).get("spin", {})
    if not isinstance(spin, dict):
        raise IpynbError(f"{where}: metadata.spin must be an object")
    source = nbcell.get("source", "")
    if kind == "markdown":
        ctype = "markdown"
        template = spin.get("source")
        if isinstance(template, str):
            source = template
    elif kind == "raw":
        ctype = "raw"
    else:
        ctype = spin.get("type", DEFAULT_TYPE)
        if not isinstance(ctype, str) or not ctype.strip():
            raise IpynbError(f"{where}: metadata.spin.type must be a cell type name, e.g. \"shell\"")
    options = spin.get("options", {})
    if not isinstance(options, dict):
        raise IpynbError(f"{where}: metadata.spin.options must be an object")
    cid = spin.get("id")  # a protocol id that is not an nbformat one (notebook_of)
    if cid is not None and (not isinstance(cid, str) or not cid or len(cid) > MAX_ID_LENGTH):
        raise IpynbError(f"{where}: metadata.spin.id must be a string of 1-{MAX_ID_LENGTH} characters")
    cell: dict[str, Any] = {
        "id": cid if cid is not None else str(nbcell.get("id") or f"cell-{index + 1}"),
        "type": ctype.strip(),
        "source": source,
        "options": options,
    }
    variable = spin.get("output_variable")
    if variable is not None:
        if not isinstance(variable, str) or not variable.isidentifier() or reserved_name(variable):
            raise IpynbError(f"{where}: metadata.spin.output_variable must be an identifier "
                             f"(and not a Go template keyword), not {variable!r}")
        cell["output_variable"] = variable
    return cell


def spin_cells(nb: NotebookNode, where: str) -> list[dict[str, Any]]:
    """Every cell of a notebook (raw ones too) as protocol cells; IpynbError
    for bad ``metadata.spin`` or two cells with one id."""
    cells: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for index, nbcell in enumerate(nb.cells):
        try:
            cell = spin_cell(nbcell, index, raw=True)
        except IpynbError as e:
            raise IpynbError(f"{where}: {e}") from None
        if cell is None:
            continue
        if cell["id"] in seen:
            raise IpynbError(f"{where}: cells {seen[cell['id']] + 1} and {index + 1} have the same id "
                             f"{cell['id'][:64]!r}")
        seen[cell["id"]] = index
        cells.append(cell)
    return cells


# -- cells: protocol -> nbformat -----------------------------------------------------------


def notebook_of(cells: Sequence[Mapping[str, Any]], parameters: list[dict[str, Any]] | None,
                previous: NotebookNode | None = None, field: str = "cells") -> NotebookNode:
    """A validated notebook of protocol cells, or IpynbError naming the field.

    Cell ids: any protocol cell id (a string of 1-256 characters, or an
    integer, which becomes its decimal string) survives the round trip. One
    that is also an nbformat 4.5 id (1-64 letters, digits, ``-``, ``_``) is
    the cell's id; another is kept in ``metadata.spin.id`` and the cell gets
    the nbformat id ``cell-<position>``, as does a cell without an id.
    ``parameters`` None keeps ``previous``'s. From ``previous`` (the notebook
    being overwritten) come its notebook metadata and, for a cell of the same
    id, its other metadata (tags, collapsed...) and, when type and source are
    unchanged, its outputs: saving the cells loses nothing else. A cell may
    carry ``outputs`` (nbformat output objects) and ``execution_count`` of its own."""
    from nbformat.v4 import new_notebook
    old: dict[str, NotebookNode] = {}
    for i, before in enumerate(previous.cells if previous is not None else []):
        try:
            known = spin_cell(before, i, raw=True)
        except IpynbError:
            continue
        if known is not None:
            old.setdefault(known["id"], before)
    ids: list[str | None] = []
    for i, cell in enumerate(cells):
        try:
            parse_cell(cell, f"{field}[{i}]")
        except ValueError as e:
            raise IpynbError(str(e)) from None
        cid = cell.get("id")
        if isinstance(cid, int):
            cid = str(cid)
        if cid is not None and (not cid or len(cid) > MAX_ID_LENGTH):
            raise IpynbError(f"'{field}[{i}].id' must be a string of 1-{MAX_ID_LENGTH} characters")
        if cid is not None and cid in ids:
            raise IpynbError(f"'{field}[{i}].id' {cid!r} is the id of {field}[{ids.index(cid)}] too")
        ids.append(cid)
    nb = new_notebook(metadata=json.loads(json.dumps(previous.metadata)) if previous is not None
                      else json.loads(json.dumps(NEW_METADATA)))
    nb_ids = assign_ids([cid if cid is not None and CELL_ID.match(cid) else None for cid in ids])
    for cell, cid, nb_id in zip(cells, ids, nb_ids):
        nbcell = notebook_cell(cell, nb_id, cid)
        before = old.get(cid if cid is not None else nb_id)
        if before is not None:
            _carry_over(before, nbcell, cell)
        nb.cells.append(nbcell)
    spin = nb.metadata.get("spin")
    spin = dict(spin) if isinstance(spin, dict) else {}
    if parameters is not None:
        spin["parameters"] = parameters
    if not spin.get("parameters"):
        spin.pop("parameters", None)
    nb.metadata.pop("spin", None)
    if spin:
        nb.metadata["spin"] = spin
    validate(nb, field)
    return nb


def notebook_cell(cell: Mapping[str, Any], nb_id: str, cid: str | None = None) -> NotebookNode:
    """One protocol cell (already checked) as a notebook cell of id ``nb_id``;
    ``cid``, its protocol id when that is not ``nb_id``, goes in ``metadata.spin.id``."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_raw_cell
    ctype, source = cell["type"], cell.get("source", "")
    spin: dict[str, Any] = {}
    if ctype == "markdown":
        nbcell = new_markdown_cell(source)
    elif ctype == "raw":
        nbcell = new_raw_cell(source)
    else:
        nbcell = new_code_cell(source)
        if ctype != DEFAULT_TYPE:
            spin["type"] = ctype
        if isinstance(cell.get("outputs"), list):
            nbcell.outputs = [nbformat.from_dict(o) for o in cell["outputs"]]
        if "execution_count" in cell:
            nbcell.execution_count = cell["execution_count"]
    if cell.get("options"):
        spin["options"] = dict(cell["options"])
    if cell.get("output_variable") is not None:
        spin["output_variable"] = cell["output_variable"]
    if cid is not None and cid != nb_id:
        spin["id"] = cid
    if spin:
        nbcell.metadata["spin"] = spin
    nbcell.id = nb_id
    return nbcell


def _carry_over(before: NotebookNode, after: NotebookNode, cell: Mapping[str, Any]) -> None:
    for key, value in before.get("metadata", {}).items():
        if key != "spin":
            after.metadata[key] = value
    try:
        same = (before.get("cell_type") == after.cell_type and
                spin_cell(before, 0, raw=True) == spin_cell(after, 0, raw=True))
    except IpynbError:
        same = False
    if same and after.cell_type == "code" and "outputs" not in cell:
        after.outputs = before.get("outputs", [])
        after.execution_count = before.get("execution_count")
        run = before.get("metadata", {}).get("spin", {}).get("run")
        if run is not None:  # spin run's record of those outputs
            after.metadata["spin"] = {**after.metadata.get("spin", {}), "run": run}


# -- writing ---------------------------------------------------------------------------------


def dumps(nb: NotebookNode) -> bytes:
    """The file's bytes, as nbformat writes them (sorted keys, one-space indent)."""
    import nbformat
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        text = nbformat.writes(nb)
    return (text if text.endswith("\n") else text + "\n").encode("utf-8")


def write_atomic(path: str, data: bytes, *, mode: int | None = None, durable: bool = True) -> os.stat_result:
    """Replace ``path`` with ``data`` so that a reader (and a crash) sees the
    old file or the new one, never a mix: a temporary file in the same
    directory (``.spin-*.tmp``), fsync, rename over ``path``, fsync the
    directory (rename(2) is atomic; the fsyncs make it durable). ``mode``
    None: what open() would create (0666 less the umask). The new file's stat."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".spin-", suffix=".tmp")
    try:
        if mode is None:
            mask = os.umask(0)
            os.umask(mask)
            mode = 0o666 & ~mask
        os.fchmod(fd, mode)  # not mkstemp's 0600
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
            stat = os.fstat(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if durable:
        fsync_dir(directory)
    return stat


def fsync_dir(directory: str) -> None:
    """Make a rename or unlink in ``directory`` durable (POSIX: fsync the directory)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
