"""How an event's frame is kept in the store's ``events.body`` column.

An event is stored as the exact bytes sent to clients (its JSON), except a
large one that compresses well: that is stored as an LZ4 frame (the LZ4
frame format, https://github.com/lz4/lz4/blob/dev/doc/lz4_Frame_format.md,
through the ``lz4`` package). Command output is most of a store's bytes and
usually repeats itself (log lines, tables, progress bars); writing a quarter
of them or less costs SQLite and the disk less than LZ4 costs the CPU
(compression ~1.7 GB/s on repetitive output on the 2-CPU test machine,
decompression ~2 GB/s).

The two forms cannot be confused: an event's JSON starts with ``{``, an LZ4
frame with its magic number ``04 22 4D 18``. Small frames are never
compressed (replay reads them at ~100k/s and would only pay a check), nor
any whose compressed form would not save a quarter of its size.

Both functions run on the store's thread; LZ4 releases the GIL meanwhile.
Readers of ``events.body`` must go through :func:`unpack` (store reads,
document restore, retention); migrations of schemas before 8 may still read
raw bodies, which is all those versions wrote.
"""

from __future__ import annotations

import lz4.frame

LZ4_MAGIC = b"\x04\x22\x4d\x18"
MIN_PACKED = 16 * 1024  # bytes: smaller frames are stored as they are
MAX_RATIO = 0.75  # compressed / original above this: stored as it is


def pack(frame: bytes) -> bytes:
    """The ``events.body`` value for an event whose JSON is ``frame``."""
    if len(frame) < MIN_PACKED:
        return frame
    packed = lz4.frame.compress(frame, compression_level=0, store_size=True,
                                content_checksum=False, return_bytearray=False)
    return packed if len(packed) <= len(frame) * MAX_RATIO else frame


def unpack(body: bytes | memoryview) -> bytes:
    """The event's JSON from an ``events.body`` value (either form).

    Raises ``RuntimeError`` (lz4's) for a frame that is corrupt."""
    if body[:4] == LZ4_MAGIC:
        return lz4.frame.decompress(body)  # type: ignore[no-any-return]
    return bytes(body)
