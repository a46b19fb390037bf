"""A session's secrets and the masker that covers them, built off the reactor thread.

Building a :class:`~spinrt.secrets.Masker` takes time (on a 2-CPU machine:
about 1 ms for a token, 50-80 ms for a 2048-bit PEM key, 100-200 ms for a
4096-bit one, 400 ms for a 9.5 KB kubeconfig), and a new value means a new
masker for all values (see ``Masker.with_values``). So the new masker is
built by a :data:`MaskerBuilder` (in production, :func:`build_in_thread`)
while the session goes on emitting with the one it has, and nothing can show
a new value before the masker that covers it is in place:

- :meth:`SessionSecrets.set` fires once the masker covers the new values (the
  ``secrets.set`` reply waits for it). Until then the values are *pending*:
  templates see them (:attr:`~SessionSecrets.for_templates`), but
  :attr:`~SessionSecrets.ready`, what a Python kernel is given, does not;
- :meth:`SessionSecrets.learn` fires once the masker covers values a
  template substituted; a run awaits it before its cell starts.

Builds are coalesced: at most one per session runs at a time, and values
asked for meanwhile go into the next one together. Maskers only grow: a value
once masked stays masked for the life of the session.
"""

from __future__ import annotations

import collections
import gc
import sys
import threading
from typing import Any, Callable, Iterable, Mapping

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..secrets import Masker

_log = Logger()

# (masker, new values) -> a Deferred firing with a masker for both.
MaskerBuilder = Callable[[Masker, frozenset[str]], "Deferred[Masker]"]


def build_inline(masker: Masker, values: frozenset[str]) -> Deferred[Masker]:
    """Build on the calling thread: for tests and tools that have no reactor."""
    return maybeDeferred(masker.with_values, values)


def build_in_thread(reactor: Any) -> MaskerBuilder:
    """Build in ``reactor``'s thread pool (``reactor.getThreadPool()``), so
    the reactor thread goes on serving every session meanwhile."""

    def build(masker: Masker, values: frozenset[str]) -> Deferred[Masker]:
        return deferToThreadPool(reactor, reactor.getThreadPool(), build_politely, masker, values)

    return build


SWITCH_INTERVAL = 0.001  # seconds: sys.setswitchinterval while a masker builds
_polite_lock = threading.Lock()
_polite_builds = 0
_polite_saved = (True, 0.005)


def build_politely(masker: Masker, values: frozenset[str]) -> Masker:
    """``masker.with_values(values)``, for a thread other than the reactor's.

    Compiling the expression is Python code holding the GIL, so a thread
    alone does not free the reactor: a full garbage collection while the
    parse tree is alive held the GIL for ~70 ms, and after each system call
    the reactor thread waited up to the 5 ms switch interval for the GIL. So
    while any masker builds, cyclic garbage collection is off (reference
    counting still frees the tree) and the switch interval is 1 ms. With a
    4096-bit PEM key the longest ``ping`` meanwhile went from ~230 ms (built on
    the reactor) to ~80 ms (in a thread) to ~8 ms (so); see
    bench/masking_bench.py."""
    global _polite_builds, _polite_saved
    with _polite_lock:
        if _polite_builds == 0:
            _polite_saved = (gc.isenabled(), sys.getswitchinterval())
            gc.disable()
            sys.setswitchinterval(min(SWITCH_INTERVAL, _polite_saved[1]))
        _polite_builds += 1
    try:
        return masker.with_values(values)
    finally:
        with _polite_lock:
            _polite_builds -= 1
            if _polite_builds == 0:
                if _polite_saved[0]:
                    gc.enable()
                sys.setswitchinterval(_polite_saved[1])


class MaskerError(Exception):
    """The masker for new secret values could not be built (see the log).
    Nothing that needed it ran or was kept."""


class SessionSecrets:
    """The secrets of one session (memory only, never stored) and its masker.

    ``masker`` is what the session masks its events with right now;
    ``ready`` maps names to values it covers; ``for_templates`` adds the
    values still pending."""

    def __init__(self, build: MaskerBuilder = build_inline) -> None:
        self.masker = Masker()
        self.ready: dict[str, str] = {}
        self._pending: dict[str, str] = {}
        self._build = build
        self._building = False
        self._wanted: set[str] = set()  # for the next build
        self._inflight: frozenset[str] = frozenset()  # in the build under way
        self._waiters: list[tuple[frozenset[str], Deferred[None]]] = []
        self.builds = 0  # masker builds started, for tests and metrics

    @property
    def for_templates(self) -> Mapping[str, str]:
        """Every secret set, pending ones first: a run that uses a pending
        value waits for its masker with :meth:`learn`."""
        return collections.ChainMap(self._pending, self.ready)

    def set(self, secrets: Mapping[str, str]) -> Deferred[None]:
        """Set ``secrets`` (name to value). Fires once the masker covers
        every value; errbacks with :class:`MaskerError` when it could not be
        built, and then the secrets keep the values they had."""
        self._pending.update(secrets)
        self._promote()
        return self.learn(secrets.values())

    def learn(self, values: Iterable[Any]) -> Deferred[None]:
        """Fire once the masker covers ``values`` (at once when it already
        does); errback with :class:`MaskerError` when it could not be built."""
        needed = self.masker.missing(values)
        if not needed:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append((needed, waiter))
        self._wanted |= needed - self._inflight
        self._start_build()
        return waiter

    def _start_build(self) -> None:
        if self._building or not self._wanted:
            return
        values, self._wanted = frozenset(self._wanted), set()
        self._building, self._inflight = True, values
        self.builds += 1
        maybeDeferred(self._build, self.masker, values).addCallbacks(
            self._built, self._failed, errbackArgs=(values,)
        )

    def _built(self, masker: Masker) -> None:
        self._building, self._inflight = False, frozenset()
        self.masker = masker
        self._promote()
        done = [d for needed, d in self._waiters if not self.masker.missing(needed)]
        self._waiters = [(n, d) for n, d in self._waiters if self.masker.missing(n)]
        self._start_build()
        for d in done:
            if not d.called:  # (a waiter may have been cancelled)
                d.callback(None)

    def _failed(self, failure: Failure, values: frozenset[str]) -> None:
        self._building, self._inflight = False, frozenset()
        # The type only: an error's text might quote the expression, and so a secret.
        _log.error("could not build the secret masker: {error}", error=failure.type.__name__)
        # Whatever needed these values fails now, so no build needs them.
        self._pending = {k: v for k, v in self._pending.items() if v not in values}
        self._wanted -= values
        failed = [d for needed, d in self._waiters if needed & values]
        self._waiters = [(n, d) for n, d in self._waiters if not n & values]
        self._start_build()
        for d in failed:
            if not d.called:
                d.errback(MaskerError("the runtime could not build the masker for these secret values"))

    def delete(self, names: Iterable[str]) -> list[str]:
        """Forget these secrets (absent names are ignored); the names removed.
        The masker keeps masking their values: output printed earlier, or a
        value kept by a process, stays hidden."""
        removed = []
        for name in names:
            found = self.ready.pop(name, None) is not None
            found = self._pending.pop(name, None) is not None or found
            if found:
                removed.append(name)
        return removed

    def names(self) -> list[str]:
        return sorted(set(self.ready) | set(self._pending))

    def _promote(self) -> None:
        """Pending secrets whose values the masker covers become ready."""
        for name, value in list(self._pending.items()):
            if not self.masker.missing([value]):
                self.ready[name] = value
                del self._pending[name]
