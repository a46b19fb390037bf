"""One memory budget for the in-memory tails of all sessions together.

Each session keeps its most recent events in memory (``Session._tail``, at
most ``session.TAIL_BYTES`` each) so that a client that fell a little behind
catches up without a store read. With many busy sessions those tails add
up (1,000 sessions x 4 MiB = 4 GB); the :class:`TailBudget` the
SessionManager owns caps their sum (``--tail-memory``).

When the sum is over the cap, the sessions that appended least recently
give up their oldest released events first (committed, or in the store's
spill file: :meth:`EventStore.released_seq`); events only memory holds are
never dropped. Least recently used rather than largest: the tail serves
clients of a session that is producing now (a socket that was full for a
moment, a reconnect after a blip), while an idle session's clients have
caught up or gone, and a late joiner reads the store either way; the busiest
session is the one whose tail is most likely to be read. A subscriber that
needs an event no tail holds any more reads it from the store
(:mod:`.subscription`).

Trimming frees a little more than the excess (``SLACK``) so that the walk
over sessions happens once per few MiB appended, not per event.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .session import Session

DEFAULT_TAIL_MEMORY = 64 * 1024 * 1024  # bytes, all sessions together
SLACK = 0.1  # trim to this fraction below the cap


class TailBudget:
    """The byte count of every session's tail and the order they were used in."""

    def __init__(self, limit: int = DEFAULT_TAIL_MEMORY) -> None:
        self.limit = limit
        self.total = 0
        # Sessions holding a non-empty tail, least recently appended first.
        self._recent: collections.OrderedDict[Session, None] = collections.OrderedDict()
        # The last trim could not get under the cap (only unreleased events
        # left): wait for the next commit before walking the sessions again.
        self._stuck = False

    def grew(self, session: "Session", size: int) -> None:
        self.total += size
        recent = self._recent
        if session in recent:
            recent.move_to_end(session)
        else:
            recent[session] = None
        if self.total > self.limit and not self._stuck:
            self.enforce()

    def shrank(self, session: "Session", size: int, empty: bool) -> None:
        self.total -= size
        if empty:
            self._recent.pop(session, None)

    def forget(self, session: "Session") -> None:
        """A session gone for good (deleted): its tail no longer counts."""
        self._recent.pop(session, None)
        self.total -= session.tail_bytes
        session.tails = None

    def committed(self) -> None:
        """The store committed a batch: events may be released now."""
        self._stuck = False
        if self.total > self.limit:
            self.enforce()

    def enforce(self) -> None:
        """Trim the least recently used tails until the sum is under the cap."""
        target = int(self.limit * (1 - SLACK))
        for session in list(self._recent):
            if self.total <= target:
                break
            session.shed(self.total - target)
        self._stuck = self.total > self.limit
