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
  429 with ``Retry-After`` for each further wrong token, and that 429 too
  goes out only after ``delay``: answered at once, it would tell a flooding
  guesser at full speed that each guess was wrong. Only a client flooding
  the runtime with concurrent wrong tokens gets there, never a browser tab
  retrying a stale token; a correct token, even from that address (behind a
  proxy that is not trusted, everybody's), is still accepted at once.
- Nothing is counted up or reset by successes: there is no failure count for
  a victim's login to clear, and none for a stale tab to grow.
- Memory is bounded: at most ``max_entries`` addresses are remembered and at
  most ``max_pending_total`` wrong attempts wait at once (beyond that, wrong
  tokens get 429 at once instead of waiting: the one case where a wrong
  guess is answered without delay). IPv6 clients are grouped by
  their /64, which one host or home network usually holds whole.
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
import math
from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred

from ..tokens import OWNER_IDENTITY, Identity, Refusal
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

    def failed(self, address: str) -> tuple[Deferred[None], int] | None:
        """Record a wrong token from ``address``. Returns ``(answer,
        retry_after)``: ``answer`` fires when the refusal may be sent, a 401
        when ``retry_after`` is 0, else a 429 with ``Retry-After:
        retry_after`` (this address already has ``max_pending`` attempts
        waiting). None when too many wrong attempts wait runtime-wide:
        answer 429 now."""
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
        answer: Deferred[None] = Deferred()
        self.pending_total += 1
        if len(entry.pending) >= self.max_pending:
            # Over the cap: a 429 after the plain delay, outside the paced queue.
            retry = max(1, math.ceil(self.retry_after(address)))

            def throttled() -> None:
                self.pending_total -= 1
                answer.callback(None)

            self._clock.callLater(self.delay, throttled)
            return answer, retry
        release = max(now + self.delay, entry.next_release)
        entry.next_release = release + self.interval
        entry.pending.append(release)

        def due() -> None:
            entry.pending.popleft()
            self.pending_total -= 1
            answer.callback(None)

        self._clock.callLater(release - now, due)
        return answer, 0

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

    ``accepted``: go ahead as ``identity`` (a spinrt.tokens.Identity).
    Otherwise refuse, with 429 and ``Retry-After: retry_after`` (whole
    seconds) when ``retry_after`` > 0, else 401; and when ``answer`` is a
    Deferred, only once it has fired. ``refusal`` says why (never the token).
    """

    accepted: bool
    retry_after: int = 0
    answer: Deferred[None] | None = None
    identity: Identity | None = None
    refusal: Refusal | None = None


ACCEPTED = Verdict(True, identity=OWNER_IDENTITY)

# Called for each refused token: (client address, refusal, route, throttled).
RefusalListener = Callable[[str, Refusal, str, bool], None]


class _OwnerOnly:
    """SPIN_TOKEN alone (a Gate built from a token string)."""

    def __init__(self, token: str) -> None:
        self._checker = TokenChecker(token)

    def authenticate(self, candidate: str | None) -> Identity | Refusal:
        if self._checker.check(candidate):
            return OWNER_IDENTITY
        return Refusal("no_token" if candidate is None else "wrong_token")


class Gate:
    """The token check plus the throttle: ``check(address, token) -> Verdict``.

    ``tokens``: SPIN_TOKEN as a string, or a spinrt.tokens.TokenRegistry
    (SPIN_TOKEN and the named tokens). ``on_refused`` listeners hear of every
    refusal (the audit trail, the metrics)."""

    def __init__(self, tokens: Any, clock: Any, **throttle: Any) -> None:
        self.tokens = _OwnerOnly(tokens) if isinstance(tokens, str) else tokens
        self.throttle = FailureThrottle(clock, **throttle)
        self.on_refused: list[RefusalListener] = []
        self.audit: Any = None  # spinrt.audit.AuditTrail: HTTP routes record refusals there

    def check(self, address: str, candidate: str | None, route: str = "") -> Verdict:
        # The token first: nobody's failures, not even from the same address
        # (everyone's, behind a proxy that is not trusted), refuse a right one.
        who = self.tokens.authenticate(candidate)
        if isinstance(who, Identity):
            return ACCEPTED if who is OWNER_IDENTITY else Verdict(True, identity=who)
        failed = self.throttle.failed(address)
        if failed is None:
            verdict = Verdict(False, retry_after=max(1, math.ceil(self.throttle.delay)), refusal=who)
        else:
            answer, retry = failed
            verdict = Verdict(False, retry_after=retry, answer=answer, refusal=who)
        for listener in list(self.on_refused):
            listener(address, who, route, bool(verdict.retry_after))
        return verdict
