"""Who is attached to a session now (PROTOCOL.md section 11).

Presence is live state, not history: it is read off the session's
subscribers whenever it is needed, never stored and never replayed. Each
connection attaches to a session through an :class:`Attachment`, the sink
its subscription writes to; the attachment knows the connection (its
``client`` id and ``identity``) and when it joined, so everyone sees the
clients in the order they came.

``presence`` frames are connection-level, like ``welcome``:
``{"event": "presence", "session", "clients": [{client, name, role}]}``.
A connection whose socket is full is not sent one; it gets the presence
as it stands once the socket drains (only the latest state matters).
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable, Protocol

from .. import protocol as proto

_joined = itertools.count()


class Member(Protocol):
    """What presence needs of a connection (ClientConnection)."""

    client: str
    identity: dict[str, str]
    writable: bool

    def send(self, frame: bytes) -> None: ...

    def send_many(self, frames: list[bytes]) -> None: ...

    def presence_waits(self, sid: str) -> None: ...

    def leave(self, sid: str) -> None: ...


class Attachment:
    """One connection's place in one session: the sink of its subscription."""

    def __init__(self, conn: Member, sid: str) -> None:
        self.conn = conn
        self.sid = sid
        self.joined = next(_joined)
        self.sub: Any = None  # the Subscription writing here
        self.leave_after: int | None = None  # session closed: leave once this seq is delivered

    @property
    def writable(self) -> bool:
        return self.conn.writable

    @property
    def present(self) -> bool:
        return self.leave_after is None and self.sub is not None and not self.sub.closed

    def send(self, frame: bytes) -> None:
        # A subscription sends event seq == its next_seq, then moves on.
        seq = self.sub.next_seq if self.sub is not None else None
        self.conn.send(frame)
        if self.leave_after is not None and seq is not None and seq >= self.leave_after:
            self.conn.leave(self.sid)

    def send_many(self, frames: list[bytes], last_seq: int) -> None:
        """Consecutive events up to ``last_seq`` at once (a subscription's catch-up)."""
        self.conn.send_many(frames)
        if self.leave_after is not None and last_seq >= self.leave_after:
            self.conn.leave(self.sid)

    def leave_once_delivered(self, seq: int) -> None:
        """The session closed at ``seq``: leave it once that event is sent."""
        self.leave_after = seq
        if self.sub is None or self.sub.next_seq > seq:
            self.conn.leave(self.sid)

    def describe(self) -> dict[str, Any]:
        return {"client": self.conn.client, "name": self.conn.identity["name"],
                "role": self.conn.identity["role"]}


def attached(session: Any) -> list[Attachment]:
    """The connections attached to ``session`` now, in the order they joined."""
    found = {sub.sink for sub in list(session.subscribers) if isinstance(sub.sink, Attachment)}
    return sorted((a for a in found if a.present), key=lambda a: a.joined)


def clients(session: Any, joining: Attachment | None = None) -> list[dict[str, Any]]:
    """``clients`` of ``session`` (with ``joining``, about to attach, at the end)."""
    present = attached(session)
    if joining is not None and joining not in present:
        present.append(joining)
    return [a.describe() for a in present]


def frame(session: Any) -> bytes:
    return proto.encode({"event": "presence", "session": session.id, "clients": clients(session)})


def announce(session: Any, also: Iterable[Attachment] = ()) -> None:
    """Send the session's presence to every client attached to it (and to
    ``also``: clients that just left it, e.g. by its close)."""
    to = attached(session)
    to.extend(a for a in also if a not in to)
    if not to:
        return
    encoded = frame(session)
    for attachment in to:
        conn = attachment.conn
        if conn.writable:
            conn.send(encoded)
        else:
            conn.presence_waits(session.id)
