"""The notebook library: the ``.ipynb`` files in ``SPIN_HOME/notebooks`` (PROTOCOL.md section 10).

Files are nbformat 4.5 notebooks in the format ``spin run`` reads and writes
(``spinrt.ipynb``); names follow ``spinrt.notebook_names``. Every method is a
coroutine to run with ``Deferred.fromCoroutine`` (it awaits Deferreds): all
file I/O and nbformat work happens in the reactor's thread pool, never on
the reactor thread.

Writes are atomic (``ipynb.write_atomic``: temporary file, fsync, rename,
fsync of the directory) and serialised within the runtime, so a version
check and the write it guards cannot interleave with another write. A
``version`` is opaque: a hash of the file's bytes plus its inode and
modification time, so it changes on every write (a write makes a new inode
while the old file still exists) and also when someone edits the file by
hand. A ``version`` that is not the current one is a ``conflict`` and
nothing is written.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import unicodedata
from typing import TYPE_CHECKING, Any, Callable

from twisted.internet.defer import DeferredLock
from twisted.internet.threads import deferToThreadPool

from . import ipynb
from . import notebook_names as names
from .parameters import parse_parameters
from .protocol import timestamp

if TYPE_CHECKING:
    from nbformat import NotebookNode

NO_SUCH_NOTEBOOK = "no_such_notebook"
CONFLICT = "conflict"
BAD_REQUEST = "bad_request"
STALE_TEMPORARY = 3600.0  # seconds after which a crashed write's temporary file is removed
FILE_MODE = 0o600


class NotebookError(Exception):
    """A library operation that cannot be done: ``code`` is ``no_such_notebook``,
    ``conflict`` (``current``: the notebook's current version, None when it
    does not exist) or ``bad_request``; ``message`` is one line for the user."""

    def __init__(self, code: str, message: str, current: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.current = current


def _bad(e: Exception) -> NotebookError:
    return NotebookError(BAD_REQUEST, str(e))


def _canonical(value: Any, field: str) -> str:
    try:
        return names.canonical(value, field)
    except ValueError as e:
        raise _bad(e) from None


def version_of(data: bytes, stat: os.stat_result) -> str:
    return f"{hashlib.sha256(data).hexdigest()[:20]}-{stat.st_ino:x}-{stat.st_mtime_ns:x}"


class NotebookLibrary:
    """The notebooks of one directory (created 0700 when missing)."""

    def __init__(self, directory: str, reactor: Any) -> None:
        self.directory = directory
        self.reactor = reactor
        self._writes = DeferredLock()
        # path -> ((ino, mtime_ns, size, ctime_ns), version, cell_count): list() reads
        # only the files that changed since it last looked.
        self._seen: dict[str, tuple[tuple[int, int, int, int], str, int]] = {}

    def _thread(self, f: Callable[..., Any], *args: Any) -> Any:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    async def _write(self, f: Callable[..., Any], *args: Any) -> Any:
        return await self._writes.run(self._thread, f, *args)

    # -- reading ---------------------------------------------------------------------

    async def list(self) -> list[dict[str, Any]]:
        """``[{name, modified (ISO 8601 UTC), version, cell_count}]`` sorted by
        name. A file that is not a valid notebook is listed with
        ``cell_count`` null and ``error`` (why it cannot be opened)."""
        result: list[dict[str, Any]] = await self._thread(self._list)
        return result

    async def get(self, name: str) -> dict[str, Any]:
        """``{name, version, cells: [{id, type, source, options, output_variable?}],
        parameters: [...]}``; NotebookError ``no_such_notebook``, or
        ``bad_request`` when the file is not a valid notebook."""
        name = _canonical(name, "name")
        result: dict[str, Any] = await self._thread(self._get, name)
        return result

    # -- writing ---------------------------------------------------------------------

    async def save(self, name: str, cells: list[dict[str, Any]], parameters: list[Any] | None = None,
                   version: str | None = None) -> dict[str, str]:
        """Store protocol cells as the notebook ``name`` (created when missing)
        -> ``{name, version}``. ``parameters`` None keeps the stored ones; a
        cell with the id of a stored cell keeps that cell's other metadata and,
        unchanged, its outputs (``ipynb.notebook_of``). ``version``: the
        version the client last read; not the current one (or given for a
        notebook that does not exist) -> ``conflict``, nothing written."""
        name = _canonical(name, "name")
        if not isinstance(cells, list):
            raise NotebookError(BAD_REQUEST, "'cells' must be a list of cells")
        if parameters is not None:
            try:
                parameters = parse_parameters("parameters", parameters)
            except ValueError as e:
                raise _bad(e) from None

        def build(previous: NotebookNode | None) -> NotebookNode:
            return ipynb.notebook_of(cells, parameters, previous)

        result: dict[str, str] = await self._write(self._store, name, build, version)
        return result

    async def save_ipynb(self, name: str, notebook: dict[str, Any], version: str | None = None) -> dict[str, str]:
        """Import a whole notebook (a JSON object, any nbformat version, outputs
        kept): upgraded to nbformat 4.5, every cell given an id, validated.
        ``bad_request`` naming what is wrong; ``version`` as for ``save``."""
        name = _canonical(name, "name")
        if not isinstance(notebook, dict):
            raise NotebookError(BAD_REQUEST, "'ipynb' must be a notebook (a JSON object)")

        def build(previous: NotebookNode | None) -> NotebookNode:
            try:
                text = json.dumps(notebook, ensure_ascii=False, allow_nan=False)
            except (TypeError, ValueError, RecursionError) as e:
                raise ipynb.IpynbError(f"'ipynb' is not JSON: {ipynb.first_line(e)}") from None
            nb = ipynb.parse(text, "'ipynb'", upgrade=True)
            ipynb.parameters_of(nb, "'ipynb'")
            ipynb.spin_cells(nb, "'ipynb'")
            return nb

        result: dict[str, str] = await self._write(self._store, name, build, version)
        return result

    async def rename(self, name: str, new_name: str, version: str | None = None) -> dict[str, str]:
        """-> ``{name: new_name, version}`` (a rename keeps the version: the
        file is not rewritten). ``no_such_notebook``; ``conflict`` when
        ``version`` is not current or ``new_name`` is taken."""
        name = _canonical(name, "name")
        new_name = _canonical(new_name, "new_name")
        result: dict[str, str] = await self._write(self._rename, name, new_name, version)
        return result

    async def delete(self, name: str, version: str | None = None) -> None:
        """``no_such_notebook``; ``conflict`` when ``version`` is not current."""
        name = _canonical(name, "name")
        await self._write(self._delete, name, version)

    # -- in the thread pool -------------------------------------------------------------

    def _entries(self) -> list[os.DirEntry[str]]:
        try:
            return list(os.scandir(self.directory))
        except FileNotFoundError:
            return []

    def _find(self, name: str) -> str | None:
        """The file of a notebook, also when it was put there by hand with a
        name in another normalisation form (NFD from macOS, say)."""
        path = os.path.join(self.directory, names.file_name(name))
        if os.path.isfile(path):
            return path
        for entry in self._entries():
            if names.name_of_file(entry.name) == name and entry.is_file():
                return entry.path
        return None

    def _read(self, path: str) -> tuple[bytes, str]:
        with open(path, "rb") as f:
            data = f.read()
            return data, version_of(data, os.fstat(f.fileno()))

    def _current(self, path: str | None) -> str | None:
        if path is None:
            return None
        try:
            return self._read(path)[1]
        except FileNotFoundError:
            return None

    @staticmethod
    def _parse(data: bytes, name: str) -> NotebookNode:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ipynb.IpynbError(f"notebook {name!r} is not UTF-8 text") from None
        return ipynb.parse(text, f"notebook {name!r}")

    def _list(self) -> list[dict[str, Any]]:
        found: dict[str, tuple[bool, os.DirEntry[str]]] = {}
        for entry in self._entries():
            if entry.name.startswith(".spin-") and entry.name.endswith(".tmp"):
                self._remove_stale(entry)
                continue
            name = names.name_of_file(entry.name)
            if name is None or not entry.is_file():
                continue
            exact = unicodedata.normalize("NFC", entry.name) == entry.name
            if name not in found or (exact and not found[name][0]):
                found[name] = (exact, entry)
        listed = []
        for name in sorted(found):
            item = self._describe(name, found[name][1].path)
            if item is not None:
                listed.append(item)
        live = {entry.path for _, entry in found.values()}
        for path in list(self._seen):
            if path not in live:
                self._seen.pop(path, None)
        return listed

    def _describe(self, name: str, path: str) -> dict[str, Any] | None:
        try:
            stat = os.stat(path)
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size, stat.st_ctime_ns)
            seen = self._seen.get(path)
            if seen is not None and seen[0] == key:
                return {"name": name, "modified": timestamp(stat.st_mtime), "version": seen[1],
                        "cell_count": seen[2]}
            data, version = self._read(path)
        except FileNotFoundError:
            return None  # deleted meanwhile
        except OSError as e:
            return {"name": name, "modified": None, "version": None, "cell_count": None,
                    "error": f"cannot read it: {e.strerror or e}"}
        item = {"name": name, "modified": timestamp(stat.st_mtime), "version": version}
        try:
            count = len(self._parse(data, name).cells)
        except ipynb.IpynbError as e:
            return {**item, "cell_count": None, "error": str(e)}
        self._seen[path] = (key, version, count)
        return {**item, "cell_count": count}

    def _remove_stale(self, entry: os.DirEntry[str]) -> None:
        try:
            if time.time() - entry.stat().st_mtime > STALE_TEMPORARY:
                os.unlink(entry.path)
        except OSError:
            pass

    def _get(self, name: str) -> dict[str, Any]:
        path = self._find(name)
        if path is None:
            raise NotebookError(NO_SUCH_NOTEBOOK, f"no notebook {name!r}")
        try:
            data, version = self._read(path)
        except FileNotFoundError:
            raise NotebookError(NO_SUCH_NOTEBOOK, f"no notebook {name!r}") from None
        try:
            nb = self._parse(data, name)
            parameters = ipynb.parameters_of(nb, f"notebook {name!r}")
            cells = ipynb.spin_cells(nb, f"notebook {name!r}")
        except ipynb.IpynbError as e:
            raise _bad(e) from None
        return {"name": name, "version": version, "cells": cells, "parameters": parameters}

    def _check(self, name: str, path: str | None, version: str | None) -> str | None:
        current = self._current(path)
        if version is not None and version != current:
            what = "no longer exists" if current is None else "has changed since that version"
            raise NotebookError(CONFLICT, f"notebook {name!r} {what}; nothing was written", current)
        return current

    def _store(self, name: str, build: Callable[[NotebookNode | None], NotebookNode],
               version: str | None) -> dict[str, str]:
        path = self._find(name)
        current = self._check(name, path, version)
        previous = None
        if path is not None and current is not None:
            try:
                previous = self._parse(self._read(path)[0], name)
            except (ipynb.IpynbError, OSError):
                previous = None  # an unreadable notebook is simply replaced
        try:
            nb = build(previous)
        except ipynb.IpynbError as e:
            raise _bad(e) from None
        data = ipynb.dumps(nb)
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        target = path or os.path.join(self.directory, names.file_name(name))
        stat = ipynb.write_atomic(target, data, mode=FILE_MODE)
        return {"name": name, "version": version_of(data, stat)}

    def _rename(self, name: str, new_name: str, version: str | None) -> dict[str, str]:
        path = self._find(name)
        if path is None:
            raise NotebookError(NO_SUCH_NOTEBOOK, f"no notebook {name!r}")
        current = self._check(name, path, version)
        if current is None:
            raise NotebookError(NO_SUCH_NOTEBOOK, f"no notebook {name!r}")
        if new_name == name:
            return {"name": name, "version": current}
        if self._find(new_name) is not None:
            raise NotebookError(CONFLICT, f"a notebook named {new_name!r} exists already; "
                                          "nothing was renamed", current)
        target = os.path.join(self.directory, names.file_name(new_name))
        try:
            os.link(path, target)  # never replaces a file that appeared meanwhile
        except FileExistsError:
            raise NotebookError(CONFLICT, f"a notebook named {new_name!r} exists already; "
                                          "nothing was renamed", current) from None
        except OSError:  # a file system without hard links: we hold the write lock
            os.rename(path, target)
        else:
            os.unlink(path)
        ipynb.fsync_dir(self.directory)
        self._seen.pop(path, None)
        return {"name": new_name, "version": self._read(target)[1]}

    def _delete(self, name: str, version: str | None) -> None:
        path = self._find(name)
        if path is None:
            raise NotebookError(NO_SUCH_NOTEBOOK, f"no notebook {name!r}")
        self._check(name, path, version)
        try:
            os.unlink(path)
        except FileNotFoundError:
            raise NotebookError(NO_SUCH_NOTEBOOK, f"no notebook {name!r}") from None
        ipynb.fsync_dir(self.directory)
        self._seen.pop(path, None)
