"""The protobuf wire format by hand: varints, field keys and length-delimited fields, written and read.

Two messages are all this project speaks: `tf.train.Example` (written by pack, read back by tests and
tools without TensorFlow; curate.dataset.schema) and Caffe's `NetParameter` (curate.score.caffe). The
wire format is small and frozen, and hand code lets pack splice pixel bytes into a prebuilt header
and lets the caffemodel reader take weight blobs as NumPy views of the file, with no compiled protos.

Readers work on offsets into one buffer (bytes or memoryview) and never copy a payload: a field is
(number, wire type, a, b) with a = the value for VARINT fields, else [a, b) = the payload's bytes.
Malformed input raises `WireFormatError` (a ValueError).
"""

from __future__ import annotations

from typing import Iterator

VARINT, FIXED64, LEN, FIXED32 = 0, 1, 2, 5
_FIXED_SIZE = {FIXED64: 8, FIXED32: 4}


class WireFormatError(ValueError):
    """Bytes that are not a well-formed protobuf message."""


# ---- writing ----------------------------------------------------------------------------------

def varint(n: int) -> bytes:
    """`n` (>= 0) as a base-128 varint."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(number: int, wire: int) -> bytes:
    """A field's key: its number and wire type."""
    return varint(number << 3 | wire)


def len_header(number: int, length: int) -> bytes:
    """The key and length of a length-delimited field whose `length` payload bytes follow."""
    return key(number, LEN) + varint(length)


def len_field(number: int, payload: bytes) -> bytes:
    """A whole length-delimited field (bytes, string, sub-message or packed repeated values)."""
    return len_header(number, len(payload)) + payload


# ---- reading ----------------------------------------------------------------------------------

def read_varint(buf, pos: int, end: int | None = None) -> tuple[int, int]:
    """(value, position after it) of the varint at `pos`, not reading at or past `end`."""
    end = len(buf) if end is None else end
    result = shift = 0
    while True:
        if pos >= end:
            raise WireFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise WireFormatError("varint longer than 10 bytes")


def iter_fields(buf, start: int = 0, end: int | None = None) -> Iterator[tuple[int, int, int, int]]:
    """Yield (field number, wire type, a, b) per field of the message in buf[start:end].

    VARINT fields: a is the value (b the position after it); LEN, FIXED32 and FIXED64 fields: the
    payload is buf[a:b]. Group wire types (3, 4), long deprecated, are an error.
    """
    end = len(buf) if end is None else end
    pos = start
    while pos < end:
        k, pos = read_varint(buf, pos, end)
        num, wire = k >> 3, k & 7
        if num == 0:
            raise WireFormatError(f"field number 0 at byte {pos}")
        if wire == VARINT:
            value, pos = read_varint(buf, pos, end)
            yield num, wire, value, pos
        elif wire == LEN:
            length, pos = read_varint(buf, pos, end)
            if pos + length > end:
                raise WireFormatError(f"field {num} runs past the end of its message ({pos + length} > {end})")
            yield num, wire, pos, pos + length
            pos += length
        elif wire in _FIXED_SIZE:
            size = _FIXED_SIZE[wire]
            if pos + size > end:
                raise WireFormatError(f"truncated fixed{size * 8}")
            yield num, wire, pos, pos + size
            pos += size
        else:
            raise WireFormatError(f"unsupported wire type {wire} (field {num}) at byte {pos}")


def field_values(buf) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) per field of `buf`: an int for VARINT, else a slice of `buf`."""
    for num, wire, a, b in iter_fields(buf):
        yield num, wire, (a if wire == VARINT else buf[a:b])


def packed_varints(buf, start: int = 0, end: int | None = None) -> list[int]:
    """The values of a packed repeated varint field whose payload is buf[start:end]."""
    end = len(buf) if end is None else end
    out, pos = [], start
    while pos < end:
        v, pos = read_varint(buf, pos, end)
        out.append(v)
    return out
