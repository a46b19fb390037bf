"""Reading a client's plain text messages off the wire (RFC 6455 section 5).

Nearly every frame a spin.v1 client sends is one whole text message: a
single frame with FIN set, no RSV bits, opcode 1 (text), masked as RFC 6455
section 5.3 requires of a client, with a payload of valid UTF-8 (section
8.1). :func:`take_messages` reads those, several per TCP read if they came
together, and stops at the first frame that is anything else (fragmented,
binary, control, compressed, not masked, not minimally encoded, invalid
UTF-8, over the size limit) or not all there yet: the caller hands the rest
to Autobahn's full parser, which accepts or refuses it as it always did.
Pure: no I/O, no state.
"""

from __future__ import annotations

_FIN_TEXT = 0x81  # FIN, RSV1-3 clear, opcode 0x1 (text)
_MASKED = 0x80


def unmask(payload: bytes, key: bytes) -> bytes:
    """``payload`` XOR the repeated 4-byte masking ``key`` (section 5.3)."""
    n = len(payload)
    if not n:
        return b""
    keystream = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(keystream, "little")).to_bytes(n, "little")


def take_messages(data: bytes, limit: int = 0) -> list[tuple[bytes, int]]:
    """The whole single-frame text messages at the start of ``data``, as
    ``(payload, end)``: the unmasked payload and the offset just past its
    frame. ``limit``: the largest payload taken (0: any size); a larger one
    stops the reading, like every other frame this does not take."""
    out: list[tuple[bytes, int]] = []
    pos = 0
    size = len(data)
    while size - pos >= 6:  # the smallest masked frame: 2 header bytes and the key
        if data[pos] != _FIN_TEXT:
            break
        second = data[pos + 1]
        if not second & _MASKED:
            break
        length = second & 0x7F
        head = pos + 2
        if length == 126:
            if size - head < 2:
                break
            length = int.from_bytes(data[head:head + 2], "big")
            if length < 126:  # not the minimal encoding (section 5.2)
                break
            head += 2
        elif length == 127:
            if size - head < 8:
                break
            length = int.from_bytes(data[head:head + 8], "big")
            if length < 65536 or length >= 1 << 63:
                break
            head += 8
        if 0 < limit < length:
            break
        start = head + 4
        end = start + length
        if end > size:
            break
        payload = unmask(data[start:end], data[head:start])
        try:
            payload.decode("utf-8")
        except UnicodeDecodeError:
            break
        out.append((payload, end))
        pos = end
    return out
