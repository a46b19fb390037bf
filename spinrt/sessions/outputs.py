"""One run's outputs as they stand, in bounded memory (for ``session.snapshot``).

Pure: no I/O, no Twisted. A :class:`RunOutputs` is fed a run's output
events in seq order and keeps what a client replaying them would show
(PROTOCOL.md section 10): ``clear`` empties the run's outputs (with
``wait``: at its next output), ``display.update`` replaces the data of the
displays with its ``display_id``, adjacent ``stream`` texts of one stream
name merge into one output.

Memory and the reply stay bounded whatever the run printed. With ``limit``
= ``max_output_bytes``:

- The *head* keeps outputs from the start until ``limit / 2`` bytes are
  shown; the *tail* keeps the latest ``limit / 2`` bytes (or what the head
  left of ``limit``: outputs that fit ``limit`` are shown whole). What falls
  between them is replaced by one marker ``{"event": "cut", "bytes": N}``
  (N: the bytes left out). A run that printed one long stream shows its
  first and last ``limit / 2`` bytes with the cut marked.
- A display or result is whole, or, when it alone is over ``limit``, a
  marker ``{"event": "cut", "bytes": N, "output": "display"}`` (its
  ``display_id`` kept) standing in its place. The newest output is never
  cut for the tail's sake, so at most ``2 * limit`` bytes are shown.
- A run's error is always shown; one over ``limit`` keeps its first and
  last traceback lines and a shortened ``evalue``.

What is cut is decided as outputs come, but a ``display.update`` may later
shrink or grow a kept display, so the cut is decided again as the outputs
then stand: when a head display grew so that the head is over ``limit``,
the head's last outputs move into the cut until it fits, and outputs that fit
``limit`` once more are shown whole again. For the latter the cut outputs
are kept (the *middle*) while the run may still come to fit ``limit``:
while the bytes no update can change (text, results, errors, displays
without a ``display_id``, cut outputs let go) and the middle itself are
within ``limit``. Past that they are let go, and the run cannot fit
``limit`` again until a ``clear``.

Sizes are bytes: UTF-8 bytes of stream text, the encoded event for other
outputs. ``total`` is the size of every output as it stands (after clears and
updates), ``shown`` what the kept outputs hold, ``held`` that and the middle (memory).
"""

from __future__ import annotations

import collections
from typing import Any, Iterator

from ..protocol import encode

STREAM = "stream"
CUT = "cut"
# Where a Whole is: shown at the start or the end, or cut out but kept (None: let go).
HEAD, MIDDLE, TAIL = "head", "middle", "tail"


def utf8_len(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _is_continuation(byte: int) -> bool:
    return byte & 0xC0 == 0x80


def head_bytes(text: str, n: int) -> str:
    """The longest prefix of ``text`` of at most ``n`` UTF-8 bytes (never
    half a character)."""
    if n <= 0:
        return ""
    if text.isascii():
        return text[:n]
    data = text.encode("utf-8", "surrogatepass")
    if n >= len(data):
        return text
    while n > 0 and _is_continuation(data[n]):
        n -= 1
    return data[:n].decode("utf-8", "surrogatepass")


def tail_bytes(text: str, n: int) -> str:
    """The longest suffix of ``text`` of at most ``n`` UTF-8 bytes (never
    half a character)."""
    if n <= 0:
        return ""
    if text.isascii():
        return text[-n:]
    data = text.encode("utf-8", "surrogatepass")
    start = len(data) - n
    if start <= 0:
        return text
    while start < len(data) and _is_continuation(data[start]):
        start += 1
    return data[start:].decode("utf-8", "surrogatepass")


class Stream:
    """Merged text of one stream name: pieces, so appends and cuts at the
    front cost no copies of the whole."""

    __slots__ = ("name", "parts", "size")

    def __init__(self, name: str) -> None:
        self.name = name
        self.parts: collections.deque[tuple[str, int]] = collections.deque()
        self.size = 0

    @property
    def shown(self) -> int:
        return self.size

    def add(self, text: str, n: int) -> None:
        self.parts.append((text, n))
        self.size += n

    def drop_front(self, n: int) -> list[tuple[str, int]]:
        """Drop at least ``n`` bytes from the front (up to a character
        boundary), or all; returns the parts dropped, ``(text, bytes)``."""
        dropped = 0
        gone: list[tuple[str, int]] = []
        while self.parts and dropped < n:
            text, size = self.parts[0]
            if size <= n - dropped:
                gone.append(self.parts.popleft())
                dropped += size
                continue
            kept = tail_bytes(text, size - (n - dropped))
            kept_size = utf8_len(kept)
            self.parts[0] = (kept, kept_size)
            gone.append((text[:len(text) - len(kept)], size - kept_size))
            dropped += size - kept_size
        self.size -= dropped
        return gone

    def render(self) -> dict[str, Any]:
        return {"event": STREAM, "name": self.name, "text": "".join(t for t, _ in self.parts)}


class Whole:
    """A display, result or error; ``output`` is None while it is over the limit."""

    __slots__ = ("kind", "output", "size", "display_id", "owner", "place")

    def __init__(self, kind: str, output: dict[str, Any] | None, size: int, display_id: str | None) -> None:
        self.kind = kind
        self.output = output
        self.size = size
        self.display_id = display_id
        self.owner: RunOutputs | None = None
        self.place: str | None = None  # HEAD, MIDDLE or TAIL

    @property
    def shown(self) -> int:
        return self.size if self.output is not None else 0

    def render(self) -> dict[str, Any]:
        if self.output is not None:
            return self.output
        marker: dict[str, Any] = {"event": CUT, "bytes": self.size, "output": self.kind}
        if self.display_id is not None:
            marker["display_id"] = self.display_id
        return marker


Item = Stream | Whole


class DisplayIndex:
    """display_id -> the kept displays carrying it, across a session's runs
    (a ``display.update`` changes every display with its id, as Jupyter does)."""

    def __init__(self) -> None:
        self._by_id: dict[str, list[Whole]] = {}

    def add(self, item: Whole) -> None:
        if item.display_id is not None:
            self._by_id.setdefault(item.display_id, []).append(item)

    def remove(self, item: Whole) -> None:
        if item.display_id is None:
            return
        items = self._by_id.get(item.display_id)
        if items is not None:
            try:
                items.remove(item)
            except ValueError:
                pass
            if not items:
                del self._by_id[item.display_id]

    def get(self, display_id: str) -> list[Whole]:
        return list(self._by_id.get(display_id, ()))

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_id.values())


class RunOutputs:
    def __init__(self, limit: int, displays: DisplayIndex | None = None) -> None:
        self.limit = limit
        self.half = max(1, limit // 2)
        self.displays = displays if displays is not None else DisplayIndex()
        self.evicted = False
        self._reset()

    def _reset(self) -> None:
        self.head: list[Item] = []
        self.head_bytes = 0
        self.head_open = True
        self.tail: collections.deque[Item] = collections.deque()
        self.tail_bytes = 0
        # Cut out but kept, in order: shown again if the run comes to fit the limit.
        self.middle: list[Item] = []
        self.middle_bytes = 0
        self.lost = 0  # bytes cut out and let go
        self.fixed = 0  # bytes of the outputs as they stand that no display.update can change
        self.total = 0
        self.clear_pending = False

    @property
    def shown(self) -> int:
        return self.head_bytes + self.tail_bytes

    @property
    def held(self) -> int:
        """Bytes kept in memory: shown, and cut out but kept."""
        return self.head_bytes + self.tail_bytes + self.middle_bytes

    @property
    def cut(self) -> int:
        """Bytes left out between head and tail."""
        return self.middle_bytes + self.lost

    # -- events ----------------------------------------------------------------------

    def stream(self, name: str, text: str) -> None:
        if self.clear_pending:
            self._before_output()
        n = utf8_len(text)
        if n == 0:
            return
        if self.middle:
            self._refit()
        self.total += n
        if self.evicted:
            self.lost += n
            return
        self.fixed += n
        self._place_text(name, text, n)
        self._check_middle()

    def whole(self, kind: str, output: dict[str, Any], size: int, display_id: str | None = None) -> None:
        """A display, result or error (``output``: what the snapshot shows,
        ``size``: its bytes)."""
        self._before_output()
        self._refit()
        self.total += size
        if self.evicted:
            self.lost += size
            return
        if display_id is None:
            self.fixed += size
        if kind == "error" and size > self.limit:
            output = shrink_error(output, self.limit)
            size = len(encode(output))
        item = Whole(kind, output if size <= self.limit or kind == "error" else None, size, display_id)
        item.owner = self
        self.displays.add(item)
        self._place(item)
        self._check_middle()

    def update(self, item: Whole, output: dict[str, Any], size: int) -> None:
        """A ``display.update`` reached ``item`` (one of this run's displays,
        shown or kept in the middle; one let go meanwhile is left alone)."""
        if item.place is None or item.owner is not self:
            return
        before = item.shown
        self.total += size - item.size
        if item.place == MIDDLE:
            self.middle_bytes += size - item.size
        item.size = size
        item.output = output if size <= self.limit else None
        if item.place == HEAD:
            self.head_bytes += item.shown - before
            if self.head_bytes > self.limit:
                self._head_over()
        elif item.place == TAIL:
            self.tail_bytes += item.shown - before
        self._trim()
        self._check_middle()
        # Fitting again is seen to at the next output or render, so that a
        # display updated many times costs no layout each time.

    def clear(self, wait: bool) -> None:
        if wait:
            self.clear_pending = True
        else:
            self._clear()

    def evict(self) -> None:
        """Show nothing of this run any more (the snapshot's budget is spent);
        keep counting its bytes."""
        total = self.total
        self._forget_all()
        self._reset()
        self.total = self.lost = total
        self.evicted = True

    # -- the snapshot's view -----------------------------------------------------------

    def render(self) -> list[dict[str, Any]]:
        self._refit()
        out: list[dict[str, Any]] = []
        for item in self._items():
            if isinstance(item, dict):
                out.append(item)
                continue
            rendered = item.render()
            last = out[-1] if out else None
            if (isinstance(item, Stream) and last is not None and last.get("event") == STREAM
                    and last["name"] == item.name):
                last["text"] += rendered["text"]  # head and tail meet: nothing was cut
            else:
                out.append(rendered)
        return out

    def _items(self) -> Iterator[Item | dict[str, Any]]:
        yield from self.head
        if self.cut:
            yield {"event": CUT, "bytes": self.cut}
        yield from self.tail

    # -- inside ------------------------------------------------------------------------

    def _before_output(self) -> None:
        if self.clear_pending:
            self.clear_pending = False
            self._clear()

    def _clear(self) -> None:
        self._forget_all()
        evicted = self.evicted
        self._reset()
        self.evicted = evicted

    def _forget_all(self) -> None:
        for item in (*self.head, *self.middle, *self.tail):
            if isinstance(item, Whole):
                self.displays.remove(item)
                item.place = None

    def _place_text(self, name: str, text: str, n: int) -> None:
        if self.head_open:
            room = self.half - self.head_bytes
            if n < room:
                self._stream_into(self.head, name, text, n)
                self.head_bytes += n
                return
            first = head_bytes(text, room)
            first_n = utf8_len(first)
            if first_n:
                self._stream_into(self.head, name, first, first_n)
                self.head_bytes += first_n
            self.head_open = False
            text, n = text[len(first):], n - first_n
            if n == 0:
                return
        self._stream_into(self.tail, name, text, n)
        self.tail_bytes += n
        self._trim()

    def _place(self, item: Whole) -> None:
        if self.head_open and self.head_bytes + item.shown <= self.limit:
            item.place = HEAD
            self.head.append(item)
            self.head_bytes += item.shown
            if self.head_bytes >= self.half:
                self.head_open = False
        else:
            self.head_open = False
            item.place = TAIL
            self.tail.append(item)
            self.tail_bytes += item.shown
            self._trim()

    @staticmethod
    def _stream_into(items: Any, name: str, text: str, n: int) -> None:
        last = items[-1] if items else None
        if not (isinstance(last, Stream) and last.name == name):
            last = Stream(name)
            items.append(last)
        last.add(text, n)

    def _trim(self) -> None:
        # The tail has half the limit, or what the head left of it: a run
        # whose outputs fit the limit is shown whole.
        room = max(self.half, self.limit - self.head_bytes)
        tail = self.tail
        while self.tail_bytes > room and tail:
            first = tail[0]
            if isinstance(first, Stream):
                gone = first.drop_front(self.tail_bytes - room)
                for text, n in gone:
                    self.tail_bytes -= n
                    self._cut_text(first.name, text, n)
                if first.size == 0:
                    tail.popleft()
            elif len(tail) > 1:
                tail.popleft()
                self.tail_bytes -= first.shown
                self._cut_whole(first)
            else:
                break  # the newest output alone: shown whole (it is within the limit)

    def _head_over(self) -> None:
        # A head display grew and the head is over the limit: the head's last
        # outputs join the cut (which lies right after the head) until it fits.
        moved: list[Item] = []
        while self.head_bytes > self.limit:
            x = self.head.pop()
            self.head_bytes -= x.shown
            moved.insert(0, x)
        self.head_open = False
        middle, self.middle = self.middle, []
        self.middle_bytes = 0
        for x in (*moved, *middle):
            if isinstance(x, Stream):
                for text, n in x.parts:
                    self._cut_text(x.name, text, n)
            else:
                self._cut_whole(x)

    def _cut_text(self, name: str, text: str, n: int) -> None:
        if self.fixed > self.limit:  # the run cannot fit the limit again: let it go
            self.lost += n
        else:
            self._stream_into(self.middle, name, text, n)
            self.middle_bytes += n

    def _cut_whole(self, item: Whole) -> None:
        if self.fixed > self.limit:
            self._let_go(item)
            self.lost += item.size
        else:
            item.place = MIDDLE
            self.middle.append(item)
            self.middle_bytes += item.size

    def _let_go(self, item: Whole) -> None:
        self.displays.remove(item)
        item.place = None
        if item.display_id is not None:
            self.fixed += item.size  # no update reaches it any more

    def _check_middle(self) -> None:
        """Let the middle go once the run cannot fit the limit again (or the
        middle alone is over it: memory stays bounded)."""
        if self.middle and (self.fixed > self.limit or self.middle_bytes > self.limit):
            for item in self.middle:
                if isinstance(item, Whole):
                    self._let_go(item)
            self.lost += self.middle_bytes
            self.middle = []
            self.middle_bytes = 0

    def _refit(self) -> None:
        if self.middle and not self.lost and self.total <= self.limit:
            self._relayout()  # it fits again: shown whole, as a replay shows it

    def _relayout(self) -> None:
        # Every output as it stands, placed again in order (the same Whole
        # objects: the display index and a caller's loop over it still hold them).
        items = [*self.head, *self.middle, *self.tail]
        total, fixed = self.total, self.fixed
        evicted = self.evicted
        self._reset()
        self.total, self.fixed, self.evicted = total, fixed, evicted
        for item in items:
            if isinstance(item, Stream):
                for text, n in item.parts:
                    self._place_text(item.name, text, n)
            else:
                self._place(item)


def shrink_error(error: dict[str, Any], limit: int) -> dict[str, Any]:
    """An error output over ``limit`` bytes, cut to about ``limit``: its
    evalue's head and tail, its first and last traceback lines."""
    inner = dict(error.get("error") or {})
    quarter = max(1, limit // 4)
    evalue = inner.get("evalue")
    if isinstance(evalue, str) and utf8_len(evalue) > quarter:
        inner["evalue"] = head_bytes(evalue, quarter // 2) + "\n[...]\n" + tail_bytes(evalue, quarter // 2)
    lines = inner.get("traceback")
    if isinstance(lines, list):
        budget = max(1, limit // 2)
        first: list[Any] = []
        last: list[Any] = []
        used = 0
        i, j = 0, len(lines) - 1
        while i <= j:
            line = lines[i] if len(first) <= len(last) else lines[j]
            line = line if isinstance(line, str) else str(line)
            size = utf8_len(line)
            if used + size > budget:
                break
            used += size
            if len(first) <= len(last):
                first.append(line)
                i += 1
            else:
                last.insert(0, line)
                j -= 1
        if i <= j:
            # Lines too long for the budget are cut themselves.
            cut = [head_bytes(str(lines[i]), budget // 4)] if not first and not last else []
            inner["traceback"] = [*first, *cut, f"[... {j - i + 1} traceback lines cut ...]", *last]
    return {**error, "error": inner, "truncated": True}
