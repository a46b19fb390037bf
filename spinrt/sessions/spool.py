"""The event store's spill file: pending operations on disk instead of in memory.

Some producers cannot be paused (a kernel's iopub socket: ZMQ drops what a
subscriber does not read). While more than the store's ``high_water`` bytes
wait in memory to be committed, every further operation is appended here,
and read back in order when the store's writer has room. The file
(``<store>.spool``, mode 0600, beside the database) exists only while it
holds something: it is removed once drained, and a crash loses what it
held, as it lost the in-memory queue before (a stale one is removed at the
next start).

Reactor side: :meth:`Spool.add` and :meth:`Spool.take` never touch the
disk; encoding, writing and reading run on the spool's own thread (the
store's thread may be busy with a slow commit), one job at a time, so the
file is only ever used from that thread (record format: :class:`_File`).

If the disk cannot take the file, operations wait in memory as they did
before spooling existed (logged once), and writing is tried again later.
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any, Callable

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

_log = Logger()

_HEADER = struct.Struct("<cIQI")  # kind, session id length, seq, body length
_IOV_MAX = 1024  # buffers per pwritev (Linux IOV_MAX)
WRITE_CHUNK = 256 * 1024  # bytes of operations handed to the thread per write
READ_AHEAD = 1024 * 1024  # bytes read from the file at a time
RETRY_WRITE = 5.0  # seconds before writing again after the disk refused

Op = tuple[Any, ...]


def op_size(op: Op) -> int:
    """What an operation counts for in the store's byte budgets (as EventStore)."""
    return len(op[3]) if op[0] == "event" else 64


class _File:
    """The file itself; used from the spool thread only.

    A record: a header (kind ``E`` or ``S``, the session id's length, the
    seq, the body's length), the session id, the body. An event's body is
    its frame as it is (written with ``pwritev``, no copy in Python); a
    statement's is ``(sql, params)`` pickled (our own file, read back by us
    only)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        self.write_at = 0
        self.read_at = 0

    def write(self, ops: list[Op]) -> None:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            self.write_at = self.read_at = 0
        parts: list[bytes] = []
        for op in ops:
            if op[0] == "event":
                sid = op[1].encode()
                parts += (_HEADER.pack(b"E", len(sid), op[2], len(op[3])), sid, op[3])
            else:
                body = pickle.dumps((op[1], op[2]), protocol=pickle.HIGHEST_PROTOCOL)
                parts += (_HEADER.pack(b"S", 0, 0, len(body)), body)
        start = self.write_at
        try:
            for i in range(0, len(parts), _IOV_MAX):
                self._write_all(parts[i:i + _IOV_MAX])
        except BaseException:
            self.write_at = start  # all of them are written again later, from here
            raise

    def _write_all(self, parts: list[bytes]) -> None:
        assert self.fd is not None
        size = sum(len(p) for p in parts)
        done = os.pwritev(self.fd, parts, self.write_at)
        if done < size:  # a short write: the rest, plainly
            rest = b"".join(parts)[done:]
            while rest:
                n = os.pwrite(self.fd, rest, self.write_at + done)
                done += n
                rest = rest[n:]
        self.write_at += size

    def read(self, max_bytes: int) -> list[Op]:
        """Whole records from the read position, about ``max_bytes`` of them."""
        ops: list[Op] = []
        fd = self.fd
        if fd is None:
            return ops
        blob, base, pos = b"", self.read_at, 0  # blob[0] is at file offset base

        def have(n: int) -> None:
            nonlocal blob, base, pos
            if pos + n <= len(blob):
                return
            rest = blob[pos:]
            more = os.pread(fd, max(n - len(rest), READ_AHEAD), base + len(blob))
            blob, base, pos = rest + more, base + pos, 0
            if n > len(blob):
                raise OSError(f"the spill file {self.path} ends inside a record")

        taken = 0
        while self.read_at < self.write_at and (taken < max_bytes or not ops):
            have(_HEADER.size)
            kind, sid_len, seq, body_len = _HEADER.unpack_from(blob, pos)
            size = _HEADER.size + sid_len + body_len
            have(size)
            start = pos + _HEADER.size
            if kind == b"E":
                sid = blob[start:start + sid_len].decode()
                ops.append(("event", sid, seq, blob[start + sid_len:pos + size]))
            else:
                sql, params = pickle.loads(blob[start:pos + size])
                ops.append(("sql", sql, params))
            pos += size
            self.read_at += size
            taken += size
        return ops

    def remove(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self.write_at = self.read_at = 0


class Spool:
    """Operations in order, held on disk (see the module docstring).

    ``ops`` / ``bytes``: how many operations, and their size, the spool
    holds (buffered, being written, in the file, or being read back);
    ``memory_bytes``: how much of that is in memory."""

    def __init__(self, path: str, reactor: Any, on_ready: Callable[[], None]) -> None:
        self.path = path
        self._reactor = reactor
        self._on_ready = on_ready  # called when operations written earlier may be taken
        self._file = _File(path)
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="spin-spool")
        self.ops = 0
        self.bytes = 0
        self._buffer: list[Op] = []
        self._buffer_bytes = 0
        self._writing: list[Op] | None = None
        self._writing_bytes = 0
        self._file_ops = 0  # written and not yet read back
        self._file_bytes = 0
        self._reading: Deferred[list[Op]] | None = None
        self._reading_bytes = 0
        self._refused_until = 0.0  # while the disk refuses: when to try again

    @property
    def memory_bytes(self) -> int:
        return self._buffer_bytes + self._writing_bytes + self._reading_bytes

    @property
    def reading(self) -> bool:
        return self._reading is not None

    def _in_thread(self, f: Callable[..., Any], *args: Any) -> Deferred[Any]:
        if not self._pool.started:
            self._pool.start()
        return deferToThreadPool(self._reactor, self._pool, f, *args)

    def remove_stale(self) -> None:
        """Before the reactor runs: remove a file a crash left behind."""
        try:
            size = os.path.getsize(self.path)
        except OSError:
            return
        os.unlink(self.path)
        _log.warn("removed {path} ({size} bytes): output queued for the store when the"
                  " runtime last stopped without committing it", path=self.path, size=size)

    def add(self, op: Op, size: int) -> None:
        self._buffer.append(op)
        self._buffer_bytes += size
        self.ops += 1
        self.bytes += size
        if self._buffer_bytes >= WRITE_CHUNK:
            self._write()

    def _write(self) -> None:
        if self._writing is not None or not self._buffer or self._reactor.seconds() < self._refused_until:
            return
        ops, size = self._buffer, self._buffer_bytes
        self._buffer, self._buffer_bytes = [], 0
        self._writing, self._writing_bytes = ops, size
        self._in_thread(self._file.write, ops).addCallbacks(self._written, self._refused)

    def _written(self, _: None) -> None:
        assert self._writing is not None
        self._file_ops += len(self._writing)
        self._file_bytes += self._writing_bytes
        self._writing, self._writing_bytes = None, 0
        if self._refused_until:
            self._refused_until = 0.0
            _log.info("the store's spill file {path} takes writes again", path=self.path)
        if self._buffer_bytes >= WRITE_CHUNK:
            self._write()
        self._on_ready()

    def _refused(self, failure: Failure) -> None:
        # The disk cannot take them: they stay in memory, first in line.
        assert self._writing is not None
        if not self._refused_until:
            _log.error("cannot write the store's spill file {path}: {why}; output waits in"
                       " memory until it can", path=self.path, why=failure.getErrorMessage())
        self._buffer[:0] = self._writing
        self._buffer_bytes += self._writing_bytes
        self._writing, self._writing_bytes = None, 0
        self._refused_until = self._reactor.seconds() + RETRY_WRITE
        self._on_ready()

    def take(self, max_bytes: int) -> Deferred[list[tuple[Op, int]]] | None:
        """The oldest operations, about ``max_bytes`` of them, with their
        sizes; None when none can be taken now (one read at a time; the ones
        being written come back once written)."""
        if self._reading is not None or not self.ops:
            return None
        if self._file_ops:
            self._reading_bytes = min(self._file_bytes, max_bytes)
            d = self._in_thread(self._file.read, max_bytes)
            self._reading = d
            return d.addCallbacks(self._read, self._read_failed)
        if self._writing is not None:
            return None
        # Nothing older on disk: the buffer goes straight back.
        ops, self._buffer, self._buffer_bytes = self._buffer, [], 0
        return succeed(self._taken(ops))

    def _read(self, ops: list[Op]) -> list[tuple[Op, int]]:
        self._reading, self._reading_bytes = None, 0
        out = self._taken(ops)
        self._file_ops -= len(ops)
        self._file_bytes -= sum(size for _, size in out)
        if not self._file_ops and self._writing is None:
            self._remove()
        return out

    def _read_failed(self, failure: Failure) -> list[tuple[Op, int]]:
        self._reading, self._reading_bytes = None, 0
        _log.failure("cannot read the store's spill file {path}; trying again", failure, path=self.path)
        return []

    def _taken(self, ops: list[Op]) -> list[tuple[Op, int]]:
        out = [(op, op_size(op)) for op in ops]
        self.ops -= len(out)
        self.bytes -= sum(size for _, size in out)
        return out

    def _remove(self) -> None:
        # Queued behind any earlier write or read on the same thread; a later
        # write opens a new file.
        self._in_thread(self._file.remove).addErrback(
            lambda f: _log.failure("cannot remove the store's spill file {path}", f, path=self.path))

    def retry_due(self) -> bool:
        """True when writing was refused and may be tried again now."""
        return (bool(self._refused_until) and bool(self._buffer) and self._writing is None
                and self._reactor.seconds() >= self._refused_until)

    def flush_buffer(self) -> None:
        """Hand the buffered operations to the thread now (not only by WRITE_CHUNK)."""
        self._write()

    def close(self) -> Deferred[None]:
        """Remove the file and stop the thread (what it held is lost: the caller counted it)."""
        if not self._pool.started:
            return succeed(None)
        d = self._in_thread(self._file.remove)
        d.addErrback(lambda f: None)
        d.addBoth(lambda _: self._pool.stop())
        return d
