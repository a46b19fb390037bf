"""One client's cursor on a session's log (see :mod:`.session`).

A subscriber gets each event live while its sink (a WebSocket) has room;
once it falls behind it catches up from the session's in-memory tail or
the store, from its own cursor, so a slow client costs neither memory nor
the other clients' speed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

if TYPE_CHECKING:
    from .session import Session

_log = Logger()

STORE_READ_BYTES = 512 * 1024  # one catch-up read; also what a stalled subscriber may hold
# Catch-up hands a sink that can take several frames at once (``send_many``)
# up to this many bytes per call: one socket write instead of one per event
# (replay of small events was bound by per-message framing), and the sink's
# ``writable`` is looked at again between two such slices.
SEND_SLICE_BYTES = 64 * 1024


class Sink(Protocol):
    """Where a subscriber's frames go (a WebSocket connection)."""

    writable: bool

    def send(self, frame: bytes) -> None: ...

    # Optional: ``send_many(frames, last_seq)`` sends consecutive events
    # (``last_seq`` is the seq of the last one) as ``send`` would one by one.


class Subscription:
    """One client's cursor on one session's log."""

    def __init__(self, session: "Session", sink: Sink, since: int) -> None:
        self.session = session
        self.sink = sink
        self.next_seq = since + 1
        self.live = False
        self.closed = False
        self._pumping = False
        self._unsent: list[tuple[int, bytes]] = []
        self._ahead: tuple[int, Deferred[list[tuple[int, bytes]]]] | None = None  # (after, read in flight)

    def offer(self, seq: int, frame: bytes) -> None:
        if self.live and seq == self.next_seq and self.sink.writable:
            self.sink.send(frame)
            self.next_seq = seq + 1
        else:
            self.live = False

    def pump(self) -> None:
        """Catch up from the tail or the store while the sink has room."""
        if self._pumping or self.closed:
            return
        self._pumping = True
        Deferred.fromCoroutine(self._catch_up()).addErrback(
            lambda f: _log.failure("subscriber catch-up failed", f)
        )

    async def _catch_up(self) -> None:
        try:
            while not self.closed and self.sink.writable:
                if self.next_seq > self.session.last_seq:
                    self.live = True
                    self._drop_ahead()
                    return
                frames = self.session.tail_from(self.next_seq)
                if frames is None and self._unsent and self._unsent[0][0] == self.next_seq:
                    frames = self._unsent
                elif frames is None:
                    frames = await self._take_ahead()
                    if not frames or frames[0][0] != self.next_seq:
                        frames = await self.session.store.read_events(
                            self.session.id, self.next_seq - 1, max_bytes=STORE_READ_BYTES
                        )
                    if frames and frames[-1][0] < self.session.last_seq:
                        # The store thread reads the next batch while this one
                        # is sent (at most two batches held per subscriber).
                        after = frames[-1][0]
                        self._ahead = (after, self.session.store.read_events(
                            self.session.id, after, max_bytes=STORE_READ_BYTES))
                    if not frames:
                        # Cannot happen while the tail only drops released
                        # events (committed, or spilled: their reads wait for
                        # the commit); stop rather than spin if the store lost some.
                        _log.error(
                            "session {session}: event {seq} missing from the store",
                            session=self.session.id, seq=self.next_seq,
                        )
                        return
                    if frames[0][0] > self.next_seq:
                        # The store skipped rows it could not write (recorded
                        # in write_failures); go on with what it has.
                        _log.warn(
                            "session {session}: events {first}-{last} are not in the store",
                            session=self.session.id, first=self.next_seq, last=frames[0][0] - 1,
                        )
                        self.next_seq = frames[0][0]
                self._unsent = []
                send_many = getattr(self.sink, "send_many", None)
                if send_many is not None:
                    self._send_slices(frames, send_many)
                    continue
                for i, (seq, frame) in enumerate(frames):
                    if self.closed or not self.sink.writable:
                        # Keep the rest of a store batch (bounded) for when the
                        # socket drains, rather than reading it again.
                        self._unsent = frames[i:]
                        break
                    if seq == self.next_seq:
                        self.sink.send(frame)
                        self.next_seq = seq + 1
        finally:
            self._pumping = False

    async def _take_ahead(self) -> list[tuple[int, bytes]] | None:
        """The read started ahead, if it starts where this cursor is. It may
        have run before later rows were committed (short or empty): the
        caller then reads again."""
        ahead, self._ahead = self._ahead, None
        if ahead is None:
            return None
        after, pending = ahead
        if after != self.next_seq - 1:
            self._ahead = ahead
            self._drop_ahead()
            return None
        try:
            return await pending
        except Exception:
            return None  # read again, and fail there if the store does

    def _send_slices(self, frames: list[tuple[int, bytes]], send_many: Any) -> None:
        """Send the events of ``frames`` that follow on from ``next_seq``, in
        slices of about SEND_SLICE_BYTES, while the sink stays writable; keep
        the rest in ``_unsent`` (as the one-by-one loop does)."""
        i, n = 0, len(frames)
        while i < n:
            if self.closed or not self.sink.writable:
                self._unsent = frames[i:]
                return
            if frames[i][0] != self.next_seq:
                return  # a gap: the next read starts after it (see _catch_up)
            chunk: list[bytes] = []
            size = 0
            seq = self.next_seq
            while i < n and frames[i][0] == seq and size < SEND_SLICE_BYTES:
                frame = frames[i][1]
                chunk.append(frame)
                size += len(frame)
                seq += 1
                i += 1
            send_many(chunk, seq - 1)
            self.next_seq = seq

    def close(self) -> None:
        self.closed = True
        self.live = False
        self._unsent = []
        self._drop_ahead()
        self.session.subscribers.discard(self)

    def _drop_ahead(self) -> None:
        if self._ahead is not None:
            self._ahead[1].addErrback(lambda _: None)
            self._ahead = None
