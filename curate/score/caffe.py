"""Read a Caffe `.caffemodel` (a binary `caffe.NetParameter` protobuf) without Caffe or compiled protos.

Why a hand-written wire-format reader (curate.core.protobuf) rather than protobuf's runtime: a
caffemodel needs four messages and a dozen fields, the protobuf wire format is small and frozen, and
reading the packed float blobs as NumPy views of the file's bytes avoids building 47 million Python
floats (the full illustration2vec model parses in well under a second). Field numbers, from BVLC/caffe
`src/caffe/proto/caffe.proto`:

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

import numpy as np

from curate.core.protobuf import LEN, VARINT, WireFormatError, iter_fields, packed_varints

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


def _string(buf: memoryview, start: int, end: int) -> str:
    return bytes(buf[start:end]).decode("utf-8", errors="replace")


def _blob(buf: memoryview, start: int, end: int) -> np.ndarray:
    dims: list[int] | None = None
    legacy = [0, 0, 0, 0]
    pieces: list[np.ndarray] = []
    for num, wire, a, b in iter_fields(buf, start, end):
        if num == 7 and wire == LEN:  # BlobShape
            dims = []
            for n2, w2, a2, b2 in iter_fields(buf, a, b):
                if n2 == 1:
                    dims.extend(packed_varints(buf, a2, b2) if w2 == LEN else [a2])
        elif num == 5:  # float data: packed (LEN) or, from old writers, one fixed32 per value
            pieces.append(np.frombuffer(buf[a:b], dtype="<f4"))
        elif num == 8:  # double data
            pieces.append(np.frombuffer(buf[a:b], dtype="<f8").astype(np.float32))
        elif 1 <= num <= 4 and wire == VARINT:
            legacy[num - 1] = a
    data = pieces[0] if len(pieces) == 1 else (np.concatenate(pieces) if pieces else np.zeros(0, np.float32))
    if dims is None:
        dims = legacy if any(legacy) else [data.size]
    if int(np.prod(dims)) != data.size:
        raise CaffeFormatError(f"blob of shape {dims} holds {data.size} values")
    return data.reshape(dims)


def _layer(buf: memoryview, start: int, end: int, name_f: int, type_f: int, blobs_f: int) -> CaffeLayer:
    layer = CaffeLayer(name="", type="")
    for num, wire, a, b in iter_fields(buf, start, end):
        if num == name_f and wire == LEN:
            layer.name = _string(buf, a, b)
        elif num == type_f:
            layer.type = _string(buf, a, b) if wire == LEN else V1_TYPES.get(a, f"V1:{a}")
        elif num == blobs_f and wire == LEN:
            layer.blobs.append(_blob(buf, a, b))
        elif num == 1 and wire == LEN and (name_f, blobs_f) == (4, 6):  # V1 wrapping a V0 layer
            inner = _layer(buf, a, b, 1, 2, 50)
            layer.name = layer.name or inner.name
            layer.type = layer.type or inner.type
            layer.blobs.extend(inner.blobs)
    return layer


def parse_net(data: bytes) -> tuple[str, list[CaffeLayer]]:
    """(net name, layers in file order) from the bytes of a caffemodel."""
    buf = memoryview(data)
    name, layers = "", []
    try:
        for num, wire, a, b in iter_fields(buf, 0, len(buf)):
            if num == 1 and wire == LEN:
                name = _string(buf, a, b)
            elif num == 100 and wire == LEN:
                layers.append(_layer(buf, a, b, 1, 2, 7))
            elif num == 2 and wire == LEN:
                layers.append(_layer(buf, a, b, 4, 5, 6))
    except WireFormatError as e:
        raise CaffeFormatError(str(e)) from e
    return name, layers


def read_caffemodel(path: str | os.PathLike) -> tuple[str, list[CaffeLayer]]:
    """(net name, layers) of a .caffemodel file; CaffeFormatError when it is not one."""
    data = open(path, "rb").read()
    name, layers = parse_net(data)
    if not any(layer.blobs for layer in layers):
        raise CaffeFormatError(f"{path}: no layer with weights (is this a .caffemodel?)")
    return name, layers
