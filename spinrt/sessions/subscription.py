"""One client's cursor on a session's log (see :mod:`.session`).

A subscriber gets each event live while its sink (a WebSocket) has room;
once it falls behind it catches up from the session's in-memory tail or
the store, from its own cursor, so a slow client costs neither memory nor
the other clients' speed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger

if TYPE_CHECKING:
    from .session import Session

_log = Logger()

STORE_READ_BYTES = 512 * 1024  # one catch-up read; also what a stalled subscriber may hold


class Sink(Protocol):
    """Where a subscriber's frames go (a WebSocket connection)."""

    writable: bool

    def send(self, frame: bytes) -> None: ...


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
                    return
                frames = self.session.tail_from(self.next_seq)
                if frames is None and self._unsent and self._unsent[0][0] == self.next_seq:
                    frames = self._unsent
                elif frames is None:
                    frames = await self.session.store.read_events(
                        self.session.id, self.next_seq - 1, max_bytes=STORE_READ_BYTES
                    )
                    if not frames:
                        # Cannot happen while the tail only drops committed
                        # events; stop rather than spin if the store lost some.
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

    def close(self) -> None:
        self.closed = True
        self.live = False
        self._unsent = []
        self.session.subscribers.discard(self)
