"""Read a Caffe `.caffemodel` (a binary `caffe.NetParameter` protobuf) without Caffe or compiled protos.

Why a hand-written wire-format reader rather than protobuf's runtime: a caffemodel needs four messages
and a dozen fields, the protobuf wire format is small and frozen, and reading the packed float blobs
as NumPy views of the file's bytes avoids building 47 million Python floats (the full illustration2vec
model parses in well under a second). Field numbers, from BVLC/caffe `src/caffe/proto/caffe.proto`:

    NetParameter      name = 1; layer = 100 (LayerParameter); layers = 2 (V1LayerParameter, legacy)
    LayerParameter    name = 1; type = 2 (string); blobs = 7 (BlobProto)
    V1LayerParameter  name = 4; type = 5 (enum); blobs = 6; layer = 1 (V0LayerParameter, older still)
    V0LayerParameter  name = 1; type = 2 (string); blobs = 50
    BlobProto         shape = 7 (BlobShape: dim = 1, packed int64); data = 5 (packed float);
                      double_data = 8 (packed double); legacy num, channels, height, width = 1..4

Unknown fields (layer parameters, learning rates, ...) are skipped by wire type, as protobuf does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

_VARINT, _FIXED64, _LEN, _FIXED32 = 0, 1, 2, 5

# V1LayerParameter.LayerType values for the layer kinds a classifier uses (caffe.proto).
V1_TYPES = {4: "Convolution", 14: "InnerProduct", 17: "Pooling", 18: "ReLU", 19: "Sigmoid",
            20: "Softmax", 6: "Dropout", 5: "Data", 15: "LRN", 3: "Concat", 8: "Flatten"}


class CaffeFormatError(ValueError):
    """The bytes are not a well-formed caffemodel."""


@dataclass
class CaffeLayer:
    """One layer of a caffemodel: its name, type and parameter blobs (weights first, then bias)."""

    name: str
    type: str
    blobs: list[np.ndarray] = field(default_factory=list)


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise CaffeFormatError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise CaffeFormatError("varint longer than 10 bytes")


def _fields(buf: memoryview, start: int, end: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield (field number, wire type, value, end) per field; for LEN fields value is the start offset."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise CaffeFormatError(f"field number 0 at byte {pos}")
        if wire == _VARINT:
            value, pos = _varint(buf, pos, end)
            yield num, wire, value, pos
        elif wire == _LEN:
            length, pos = _varint(buf, pos, end)
            if pos + length > end:
                raise CaffeFormatError(f"field {num} runs past the end of its message ({pos + length} > {end})")
            yield num, wire, pos, pos + length
            pos += length
        elif wire == _FIXED32:
            if pos + 4 > end:
                raise CaffeFormatError("truncated fixed32")
            yield num, wire, pos, pos + 4
            pos += 4
        elif wire == _FIXED64:
            if pos + 8 > end:
                raise CaffeFormatError("truncated fixed64")
            yield num, wire, pos, pos + 8
            pos += 8
        else:
            raise CaffeFormatError(f"unsupported wire type {wire} (field {num}) at byte {pos}")


def _string(buf: memoryview, start: int, end: int) -> str:
    return bytes(buf[start:end]).decode("utf-8", errors="replace")


def _packed_varints(buf: memoryview, start: int, end: int) -> list[int]:
    out, pos = [], start
    while pos < end:
        v, pos = _varint(buf, pos, end)
        out.append(v)
    return out


def _blob(buf: memoryview, start: int, end: int) -> np.ndarray:
    dims: list[int] | None = None
    legacy = [0, 0, 0, 0]
    pieces: list[np.ndarray] = []
    for num, wire, a, b in _fields(buf, start, end):
        if num == 7 and wire == _LEN:  # BlobShape
            dims = []
            for n2, w2, a2, b2 in _fields(buf, a, b):
                if n2 == 1:
                    dims.extend(_packed_varints(buf, a2, b2) if w2 == _LEN else [a2])
        elif num == 5:  # float data: packed (LEN) or, from old writers, one fixed32 per value
            pieces.append(np.frombuffer(buf[a:b], dtype="<f4"))
        elif num == 8:  # double data
            pieces.append(np.frombuffer(buf[a:b], dtype="<f8").astype(np.float32))
        elif 1 <= num <= 4 and wire == _VARINT:
            legacy[num - 1] = a
    data = pieces[0] if len(pieces) == 1 else (np.concatenate(pieces) if pieces else np.zeros(0, np.float32))
    if dims is None:
        dims = legacy if any(legacy) else [data.size]
    if int(np.prod(dims)) != data.size:
        raise CaffeFormatError(f"blob of shape {dims} holds {data.size} values")
    return data.reshape(dims)


def _layer(buf: memoryview, start: int, end: int, name_f: int, type_f: int, blobs_f: int) -> CaffeLayer:
    layer = CaffeLayer(name="", type="")
    for num, wire, a, b in _fields(buf, start, end):
        if num == name_f and wire == _LEN:
            layer.name = _string(buf, a, b)
        elif num == type_f:
            layer.type = _string(buf, a, b) if wire == _LEN else V1_TYPES.get(a, f"V1:{a}")
        elif num == blobs_f and wire == _LEN:
            layer.blobs.append(_blob(buf, a, b))
        elif num == 1 and wire == _LEN and (name_f, blobs_f) == (4, 6):  # V1 wrapping a V0 layer
            inner = _layer(buf, a, b, 1, 2, 50)
            layer.name = layer.name or inner.name
            layer.type = layer.type or inner.type
            layer.blobs.extend(inner.blobs)
    return layer


def parse_net(data: bytes) -> tuple[str, list[CaffeLayer]]:
    """(net name, layers in file order) from the bytes of a caffemodel."""
    buf = memoryview(data)
    name, layers = "", []
    for num, wire, a, b in _fields(buf, 0, len(buf)):
        if num == 1 and wire == _LEN:
            name = _string(buf, a, b)
        elif num == 100 and wire == _LEN:
            layers.append(_layer(buf, a, b, 1, 2, 7))
        elif num == 2 and wire == _LEN:
            layers.append(_layer(buf, a, b, 4, 5, 6))
    return name, layers


def read_caffemodel(path: str | os.PathLike) -> tuple[str, list[CaffeLayer]]:
    """(net name, layers) of a .caffemodel file; CaffeFormatError when it is not one."""
    data = open(path, "rb").read()
    name, layers = parse_net(data)
    if not any(layer.blobs for layer in layers):
        raise CaffeFormatError(f"{path}: no layer with weights (is this a .caffemodel?)")
    return name, layers
