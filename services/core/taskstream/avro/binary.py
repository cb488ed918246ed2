"""Avro's binary encoding of primitives, written and read by hand, for fixed record layouts.

fastavro's schemaless writer and reader handle any schema; for a record whose layout is known
up front (the envelopes' plain form, taskstream.envelope_binary), writing its fields here
takes a third of the instructions, most of fastavro's being its per-call set-up (the parsed
schema's named types copied, a BytesIO, a dict per record) and its per-field dispatch.

Every writer here gives fastavro's bytes for the values it takes, and raises :class:`Unfit`
(or a builtin error) for any other, so that the caller falls back to fastavro, which then
encodes it or raises its own error as before. A reader returns what fastavro's would, or
raises Unfit (or IndexError, UnicodeDecodeError) where fastavro would read something else or
fail, so that the caller reads it with fastavro instead.
"""

from __future__ import annotations

_INT32 = 1 << 31
_INT64 = 1 << 63
# A varint of at most 9 bytes holds 63 bits: its value is the same in fastavro's unsigned
# 64-bit arithmetic as in Python's. Longer ones (never written for a long between -2**62
# and 2**62) are left to fastavro.
_VARINT_MAX_BYTES = 9


class Unfit(Exception):
    """A value (or bytes) the hand-written path does not take: fastavro's path decides."""


def varint(z: int) -> bytes:
    """``z`` (>= 0) as a base-128 varint, least significant group first."""
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def long_bytes(n: int) -> bytes:
    """``n`` as Avro's ``long`` (zig-zag, then a varint); Unfit outside 64 bits."""
    if 0 <= n < _SMALL:
        return LENGTHS[n]
    if not -_INT64 <= n < _INT64:
        raise Unfit(f"{n} is not a 64-bit long")
    return varint((n << 1) ^ (n >> 63))


def int_bytes(n: int) -> bytes:
    """``n`` as Avro's ``int``; Unfit outside 32 bits (fastavro's own check decides)."""
    if 0 <= n < _SMALL:
        return LENGTHS[n]
    if not -_INT32 <= n < _INT32:
        raise Unfit(f"{n} is not a 32-bit int")
    return varint((n << 1) ^ (n >> 63))


_SMALL = 1024
# Avro longs 0..1023, written once: lengths, counts, attempts, partitions.
LENGTHS = [varint(n << 1) for n in range(_SMALL)]

# A timestamp in µs since the epoch takes 8 varint bytes; its first two hold its low 13 bits
# (and the zig-zag sign), the other six its high bits, which the timestamps of one second or
# so share: those six come from a small cache, the first two from a table of 2**13.
_LOW_BITS = 13
_LOW_MASK = (1 << _LOW_BITS) - 1
_LOW = [bytes((((i & 0x3F) << 1) | 0x80, ((i >> 6) & 0x7F) | 0x80)) for i in range(1 << 13)]
_HIGHS: dict[int, bytes] = {}
_HIGHS_MAX = 64
_STAMP_MIN = 1 << _LOW_BITS  # from here on, two low bytes and a high part
_STAMP_MAX = 1 << 62  # a 9-byte varint at most (the high part's varint is exact)


def timestamp_bytes(n: int) -> bytes:
    """``n`` as Avro's ``long``, fast for values around now in µs (what timestamps are)."""
    if _STAMP_MIN <= n < _STAMP_MAX:
        high = _HIGHS.get(n >> _LOW_BITS)
        if high is None:
            if len(_HIGHS) >= _HIGHS_MAX:
                _HIGHS.clear()  # (another thread's entry may go too: it is made again)
            high = _HIGHS[n >> _LOW_BITS] = varint(n >> _LOW_BITS)
        return _LOW[n & _LOW_MASK] + high
    return long_bytes(n)


def string_bytes(text: str) -> bytes:
    """``text`` as Avro's ``string``: its UTF-8 length, then the bytes (UnicodeEncodeError
    for a lone surrogate, which fastavro raises too)."""
    data = text.encode()
    n = len(data)
    return (LENGTHS[n] if n < _SMALL else varint(n << 1)) + data


def bytes_bytes(data: bytes) -> bytes:
    """``data`` (bytes only: Unfit for another type) as Avro's ``bytes``."""
    if type(data) is not bytes:
        raise Unfit(f"{type(data).__name__} is not bytes")
    n = len(data)
    return (LENGTHS[n] if n < _SMALL else varint(n << 1)) + data


class Strings:
    """Avro ``string`` bytes of texts that recur (task names, queues, topics, the worker's
    id), encoded once; a bounded cache, cleared when full."""

    __slots__ = ("_known", "_max")

    def __init__(self, size: int = 1024) -> None:
        self._known: dict[str, bytes] = {}
        self._max = size

    def __call__(self, text: str) -> bytes:
        known = self._known.get(text)
        if known is not None and type(text) is str:
            return known
        data = string_bytes(text)
        if type(text) is str:  # (a str subclass may hash and compare as another text)
            if len(self._known) >= self._max:
                self._known.clear()
            self._known[text] = data
        return data


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` in ``data`` and where it ends; Unfit past 9 bytes, IndexError
    past the end."""
    z = 0
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            return z, pos
        shift += 7
        if shift >= 7 * _VARINT_MAX_BYTES:
            raise Unfit("a varint longer than 9 bytes")


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    """The Avro ``long`` at ``pos`` and where it ends."""
    b = data[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    z, pos = read_varint(data, pos)
    return (z >> 1) ^ -(z & 1), pos


def read_int(data: bytes, pos: int) -> tuple[int, int]:
    """The Avro ``int`` at ``pos`` and where it ends; Unfit outside 32 bits."""
    n, pos = read_long(data, pos)
    if not -_INT32 <= n < _INT32:
        raise Unfit(f"{n} is not a 32-bit int")
    return n, pos


def read_string(data: bytes, pos: int, end: int) -> tuple[str, int]:
    """The Avro ``string`` at ``pos`` (ending by ``end``) and where it ends."""
    b = data[pos]  # (read_bytes inlined: one call less per string)
    if b < 0x80:
        if b & 1:
            raise Unfit("a negative length")
        stop = pos + 1 + (b >> 1)
        if stop > end:
            raise Unfit("a length past the end")
        return data[pos + 1 : stop].decode(), stop
    raw, pos = read_bytes(data, pos, end)
    return raw.decode(), pos


# Timestamps read: the six high bytes of an 8-byte varint -> the bits they give a long
# (see timestamp_bytes), for the timestamps of the last second or so.
_HIGH_READS: dict[bytes, int] = {}


def read_timestamp(data: bytes, pos: int) -> tuple[int, int]:
    """The Avro ``long`` at ``pos`` and where it ends, fast for timestamps (see
    timestamp_bytes): an 8-byte varint whose six high bytes were read before is the cached
    value of those and its two low bytes."""
    high = _HIGH_READS.get(data[pos + 2 : pos + 8])
    if high is not None:
        b0, b1 = data[pos], data[pos + 1]
        # The key came from a whole 8-byte varint, so these two continue into it.
        if b0 & b1 & 0x80 and not b0 & 1:  # (odd: a negative long)
            return high | ((b0 & 0x7F) >> 1) | ((b1 & 0x7F) << 6), pos + 8
    n, end = read_long(data, pos)
    if end == pos + 8 and n >= 0:
        if len(_HIGH_READS) >= _HIGHS_MAX:
            _HIGH_READS.clear()
        _HIGH_READS[data[pos + 2 : end]] = (n >> _LOW_BITS) << _LOW_BITS
    return n, end


def read_bytes(data: bytes, pos: int, end: int) -> tuple[bytes, int]:
    """The Avro ``bytes`` at ``pos`` (ending by ``end``) and where they end."""
    b = data[pos]
    if b < 0x80:
        if b & 1:
            raise Unfit("a negative length")
        n = b >> 1
        pos += 1
    else:
        n, pos = read_long(data, pos)
        if n < 0:
            raise Unfit("a negative length")
    stop = pos + n
    if stop > end:
        raise Unfit("a length past the end")
    return data[pos:stop], stop
