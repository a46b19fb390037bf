"""The token check and the failure throttle shared by /ws and the HTTP routes.

Rules (docs/protocol.rst, "Authentication"):

- The token is checked first, in constant time. A correct token is accepted
  at once: other clients' failures never delay or refuse it.
- A wrong token is answered 401 only after ``delay`` seconds, and the 401s
  of one client address are released at most one per ``interval`` seconds,
  so one address learns at most ``1 / interval`` wrong guesses per second
  (2 by default) however many connections it opens. Waiting never blocks
  the reactor: each answer is a ``callLater`` on the reactor's clock.
- An address that already has ``max_pending`` wrong attempts waiting gets
  429 with ``Retry-After`` for anything it sends, *before* its token is
  looked at: answering that 429 after the check would tell a guesser at
  full speed that its guess was wrong. Only a client flooding the runtime
  with concurrent wrong tokens gets there, never a browser tab retrying a
  stale token, and the 429s stop within seconds of the flood.
- Nothing is counted up or reset by successes: there is no failure count for
  a victim's login to clear, and none for a stale tab to grow.
- Memory is bounded: at most ``max_entries`` addresses are remembered and at
  most ``max_pending_total`` wrong attempts wait at once (beyond that, wrong
  tokens get 429 at once instead of waiting). IPv6 clients are grouped by
  their /64, which one host or home network usually holds whole.
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
import math
from typing import Any

import attrs
from twisted.internet.defer import Deferred

from .auth import TokenChecker


def throttle_key(address: str) -> str:
    """The throttle's bucket for a client address: IPv4 as is, IPv6 by its
    /64, anything else (a UNIX socket peer, ``unknown``) as given."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(parsed) >> 64 << 64, 64)))
    return str(parsed)


class _Entry:
    __slots__ = ("next_release", "pending")

    def __init__(self) -> None:
        self.next_release = 0.0
        self.pending: collections.deque[float] = collections.deque()  # release times, ascending


class FailureThrottle:
    """When the answers to wrong tokens may be sent, per client address.

    ``clock`` provides ``seconds()`` and ``callLater`` (the reactor, or a
    ``twisted.internet.task.Clock`` in tests). Times are in seconds.
    """

    def __init__(
        self,
        clock: Any,
        *,
        delay: float = 1.0,
        interval: float = 0.5,
        max_pending: int = 8,
        max_pending_total: int = 1024,
        max_entries: int = 10_000,
    ) -> None:
        self._clock = clock
        self.delay = delay
        self.interval = interval
        self.max_pending = max_pending
        self.max_pending_total = max_pending_total
        self.max_entries = max_entries
        self.pending_total = 0
        self._table: collections.OrderedDict[str, _Entry] = collections.OrderedDict()

    @property
    def longest_wait(self) -> float:
        """The longest a wrong attempt can wait for its answer, in seconds."""
        return self.delay + self.max_pending * self.interval

    def retry_after(self, address: str) -> float:
        """0 when ``address`` may present a token now, else the seconds until
        one of its waiting wrong attempts is answered and it may again."""
        entry = self._table.get(throttle_key(address))
        if entry is None or len(entry.pending) < self.max_pending:
            return 0.0
        return max(0.0, entry.pending[0] - self._clock.seconds())

    def failed(self, address: str) -> Deferred[None] | None:
        """Record a wrong token from ``address``. Returns a Deferred that
        fires when its 401 may be sent, or None when too many wrong attempts
        are waiting runtime-wide (answer 429 now)."""
        if self.pending_total >= self.max_pending_total:
            return None
        now = self._clock.seconds()
        key = throttle_key(address)
        entry = self._table.get(key)
        if entry is None:
            self._make_room()
            entry = self._table[key] = _Entry()
        else:
            self._table.move_to_end(key)
        release = max(now + self.delay, entry.next_release)
        entry.next_release = release + self.interval
        entry.pending.append(release)
        self.pending_total += 1
        answer: Deferred[None] = Deferred()

        def due() -> None:
            entry.pending.popleft()
            self.pending_total -= 1
            answer.callback(None)

        self._clock.callLater(release - now, due)
        return answer

    def _make_room(self) -> None:
        """Forget the least recently failing addresses beyond ``max_entries``,
        preferring one with no attempt waiting (O(1): only the oldest few are
        looked at)."""
        while len(self._table) >= self.max_entries:
            oldest = list(itertools.islice(self._table.items(), 64))
            idle = [key for key, entry in oldest if not entry.pending]
            del self._table[idle[0] if idle else oldest[0][0]]


@attrs.frozen
class Verdict:
    """The outcome of presenting a token.

    ``accepted``: go ahead. Else ``retry_after`` > 0: answer 429 now with
    ``Retry-After: retry_after`` (whole seconds). Else ``answer``: a
    Deferred after which to answer 401.
    """

    accepted: bool
    retry_after: int = 0
    answer: Deferred[None] | None = None


ACCEPTED = Verdict(True)


class Gate:
    """The token check plus the throttle: ``check(address, token) -> Verdict``."""

    def __init__(self, token: str, clock: Any, **throttle: Any) -> None:
        self._checker = TokenChecker(token)
        self.throttle = FailureThrottle(clock, **throttle)

    def check(self, address: str, candidate: str | None) -> Verdict:
        wait = self.throttle.retry_after(address)
        if wait > 0:
            return Verdict(False, retry_after=max(1, math.ceil(wait)))
        if self._checker.check(candidate):
            return ACCEPTED
        answer = self.throttle.failed(address)
        if answer is None:
            return Verdict(False, retry_after=max(1, math.ceil(self.throttle.delay)))
        return Verdict(False, answer=answer)
