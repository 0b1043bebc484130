"""The StyleGAN multi-resolution TFRecord format: THE one schema module for pack, inspect and train.

NVlabs' dataset_tool and training loop each hard-code the record schema; here the writer (`curate pack`),
the checker (`curate inspect`) and the trainer all import this module instead.

    <dir>/<name>-r<NN>.tfrecords              one file per level, NN = log2(height), two digits
    <dir>/<name>-r<NN>-<i>-of-<n>.tfrecords   the same level split into n shards (i from 0)
    <dir>/<name>-rxx.labels                   optional labels, np.save float32 [N, D], record order

Each record is a `tf.train.Example` with `shape` = int64 [C, H, W] and `data` = one bytes value of raw
uint8 pixels in CHW order, RGB, uncompressed. Every level file holds the same images in the same order.
Level k+1 is the 2x2 box average, in float32, of level k *before* rounding, then rint and clip to uint8,
exactly as NVlabs does (`pyramid()` reproduces it bit for bit, see there).

Records are encoded and framed here without TensorFlow: TensorFlow is imported only inside the
functions that read with tf.data (`parse_example`, `level_dataset`).
"""

from __future__ import annotations

import functools
import os
import re
import struct
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from curate.core import protobuf as pb

FORMAT_VERSION = 1
CHANNELS = 3
MANIFEST = "dataset.json"
SEED = 123  # NVlabs dataset_tool's shuffle seed

_FILE_RE = re.compile(r"^(?P<name>.+)-r(?P<log2>\d{2})(?:-(?P<i>\d+)-of-(?P<n>\d+))?\.tfrecords$")


# ---- levels -----------------------------------------------------------------------------------

def is_power_of_two(n: int) -> bool:
    """True for 1, 2, 4, 8, ..."""
    return n > 0 and n & (n - 1) == 0


def level_sizes(height: int, width: int, min_height: int = 4, min_width: int = 2) -> list[tuple[int, int]]:
    """The (H, W) of every level, from the crop size down to the minimum; ValueError if they do not halve evenly."""
    if not (is_power_of_two(height) and is_power_of_two(width)):
        raise ValueError(f"the crop size {height}x{width} is not a power of two on both sides")
    if not (is_power_of_two(min_height) and is_power_of_two(min_width)):
        raise ValueError(f"the minimum size {min_height}x{min_width} is not a power of two on both sides")
    if height * min_width != width * min_height:
        raise ValueError(f"the minimum size {min_height}x{min_width} does not have the crop's aspect ({height}x{width})")
    if min_height > height:
        raise ValueError(f"the minimum size {min_height}x{min_width} is larger than the crops ({height}x{width})")
    sizes = []
    h, w = height, width
    while h >= min_height:
        sizes.append((h, w))
        h, w = h // 2, w // 2
    return sizes


def log2(n: int) -> int:
    """log2 of a power of two."""
    return n.bit_length() - 1


def level_file(name: str, height: int, shard: int | None = None, shards: int | None = None) -> str:
    """A level's file name: <name>-r<NN>.tfrecords, or <name>-r<NN>-<i>-of-<n>.tfrecords when sharded."""
    if shard is None:
        return f"{name}-r{log2(height):02d}.tfrecords"
    return f"{name}-r{log2(height):02d}-{shard}-of-{shards}.tfrecords"


def labels_file(name: str) -> str:
    """The labels file name (NVlabs: <name>-rxx.labels)."""
    return f"{name}-rxx.labels"


def pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """`levels` uint8 CHW arrays: the image, then each 2x2 box average of the previous float level, rounded.

    NVlabs computes level k+1 as (a + b + c + d) * 0.25 in float32 from the unrounded level k, then
    rint and clip. Level k is then exactly S / 4**k, S the integer sum of a 2**k x 2**k block: every
    intermediate is an integer times a power of two below 2**24 while 255 * 4**k < 2**24 (k <= 8), so
    float32 never rounds. The same numbers therefore come from integer block sums and a round-half-to-
    even shift, ~20x faster. Deeper pyramids (k > 8) take NVlabs' float path literally.
    """
    image = np.ascontiguousarray(image, dtype=np.uint8)
    out = [image]
    if levels <= 1:
        return out
    if levels - 1 > 8:
        x = image.astype(np.float32)
        for _ in range(levels - 1):
            x = (x[:, 0::2, 0::2] + x[:, 0::2, 1::2] + x[:, 1::2, 0::2] + x[:, 1::2, 1::2]) * np.float32(0.25)
            out.append(np.rint(x).clip(0, 255).astype(np.uint8))
        return out
    s = image[:, 0::2].astype(np.uint16)
    s += image[:, 1::2]
    s = s[:, :, 0::2] + s[:, :, 1::2]  # level 1 sums <= 1020: uint16 holds sums up to level 4
    shift = 2
    while True:
        half = 1 << (shift - 1)
        # round half to even: add half - 1, plus 1 more when the truncated quotient is odd
        out.append(((s + (half - 1) + ((s >> shift) & 1)) >> shift).astype(np.uint8))
        if len(out) == levels:
            return out
        if shift == 8:
            s = s.astype(np.uint32)
        s = s[:, 0::2] + s[:, 1::2]
        s = s[:, :, 0::2] + s[:, :, 1::2]
        shift += 2


# ---- records ----------------------------------------------------------------------------------

def example_parts(shape: tuple[int, int, int]) -> tuple[bytes, bytes]:
    """The bytes of a serialized Example before and after its pixel data, for a [C, H, W] shape.

    The result equals `tf.train.Example(...).SerializeToString(deterministic=True)` (map keys sorted:
    'data' then 'shape'); protobuf's default order for map fields varies from process to process.
    """
    n = int(np.prod(shape))
    shape_feature = pb.len_field(3, pb.len_field(1, b"".join(pb.varint(int(d)) for d in shape)))  # int64_list, packed
    shape_entry = pb.len_field(1, pb.len_field(1, b"shape") + pb.len_field(2, shape_feature))
    # data entry = key + Feature{bytes_list{value}}; sizes are known, so only the header is built
    value_head = pb.len_header(1, n)
    bytes_list = pb.len_header(1, len(value_head) + n)
    feature = pb.len_header(2, len(bytes_list) + len(value_head) + n)
    key = pb.len_field(1, b"data")
    data_entry_len = len(key) + len(feature) + len(bytes_list) + len(value_head) + n
    data_entry_head = pb.len_header(1, data_entry_len)
    features_len = len(data_entry_head) + data_entry_len + len(shape_entry)
    head = pb.len_header(1, features_len) + data_entry_head + key + feature + bytes_list + value_head
    return head, shape_entry


def encode_example(chw: np.ndarray) -> bytes:
    """One serialized tf.train.Example for a uint8 CHW image."""
    head, tail = _parts(tuple(chw.shape))
    return head + np.ascontiguousarray(chw, dtype=np.uint8).tobytes() + tail


@functools.lru_cache(maxsize=64)
def _parts(shape: tuple[int, int, int]) -> tuple[bytes, bytes]:
    return example_parts(shape)


def encode_record(chw: np.ndarray) -> bytes:
    """One framed TFRecord holding the Example for a uint8 CHW image."""
    buf = np.empty(record_size(*chw.shape[1:], channels=chw.shape[0]), np.uint8)
    write_record(buf, chw)
    return buf.tobytes()


def write_record(out: np.ndarray, chw: np.ndarray) -> None:
    """Frame the record for a uint8 CHW image straight into `out` (a uint8 buffer of exactly its record_size).

    Pack's workers write into shared memory this way, so a crop's records never pass through a pipe.
    """
    import google_crc32c

    chw = np.ascontiguousarray(chw, dtype=np.uint8)
    head, tail = _parts(tuple(chw.shape))
    n = chw.size
    if out.size != record_size(chw.shape[1], chw.shape[2], chw.shape[0]):
        raise ValueError(f"buffer holds {out.size} bytes, a {chw.shape} record needs {record_size(*chw.shape[1:], chw.shape[0])}")
    length = struct.pack("<Q", len(head) + n + len(tail))
    data = chw.tobytes()  # google_crc32c reads only bytes-like objects that need no release
    crc = google_crc32c.extend(google_crc32c.extend(google_crc32c.value(head), data), tail)
    a, b = 12 + len(head), 12 + len(head) + n
    out[:8] = np.frombuffer(length, np.uint8)
    out[8:12] = np.frombuffer(struct.pack("<I", _masked_crc(length)), np.uint8)
    out[12:a] = np.frombuffer(head, np.uint8)
    out[a:b] = np.frombuffer(data, np.uint8)
    out[b:b + len(tail)] = np.frombuffer(tail, np.uint8)
    out[b + len(tail):] = np.frombuffer(struct.pack("<I", _mask(crc)), np.uint8)


def _masked_crc(data: bytes | memoryview) -> int:
    import google_crc32c

    return _mask(google_crc32c.value(data))


def _mask(crc: int) -> int:
    # TFRecord stores crc32c rotated and offset, so a crc over data holding crcs stays well-behaved
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + 0xA282EAD8) & 0xFFFFFFFF


def frame(payload: bytes) -> bytes:
    """One TFRecord: uint64 length, masked crc32c of the length, payload, masked crc32c of the payload."""
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", _masked_crc(length)) + payload + struct.pack("<I", _masked_crc(payload))


def record_size(height: int, width: int, channels: int = CHANNELS) -> int:
    """Bytes one framed record of this size takes on disk (every record of a level has the same size)."""
    head, tail = _parts((channels, height, width))
    return 16 + len(head) + channels * height * width + len(tail)


class RecordError(Exception):
    """A TFRecord file that cannot be read: `kind` is 'bad crc', 'truncated record' or, for a level read as
    fixed-size records (curate.dataset.levels), 'not fixed-size' or 'not an image record'."""

    def __init__(self, kind: str, offset: int, detail: str = "", path: str | os.PathLike | None = None):
        where = f"{path}: " if path is not None else ""
        super().__init__(f"{where}{kind} at byte {offset}" + (f" ({detail})" if detail else ""))
        self.kind, self.offset, self.path = kind, offset, None if path is None else str(path)


def iter_records(f: IO[bytes]) -> Iterator[bytes]:
    """The payloads of a TFRecord stream, checking both checksums (a pure-Python reader, no TensorFlow)."""
    offset = 0
    while True:
        header = f.read(12)
        if not header:
            return
        if len(header) < 12:
            raise RecordError("truncated record", offset, "incomplete header")
        length_bytes = header[:8]
        if struct.unpack("<I", header[8:])[0] != _masked_crc(length_bytes):
            raise RecordError("bad crc", offset, "length checksum")
        (length,) = struct.unpack("<Q", length_bytes)
        body = f.read(length + 4)
        if len(body) < length + 4:
            raise RecordError("truncated record", offset, f"{len(body)} of {length + 4} bytes")
        payload = body[:length]
        if struct.unpack("<I", body[length:])[0] != _masked_crc(payload):
            raise RecordError("bad crc", offset, "data checksum")
        yield payload
        offset += 12 + length + 4


def decode_example(payload: bytes) -> np.ndarray:
    """A serialized Example back to its uint8 CHW array (pure Python; the reference for tests and tools)."""
    feats: dict[str, bytes] = {}
    for _, _, features in pb.field_values(payload):
        for _, _, entry in pb.field_values(features):
            kv = {num: val for num, _, val in pb.field_values(entry)}
            feats[kv[1].decode()] = kv[2]
    shape = []
    for num, _, int64_list in pb.field_values(feats["shape"]):
        assert num == 3, "shape is not an int64_list"
        for _, wire, val in pb.field_values(int64_list):
            shape.extend([val] if wire == pb.VARINT else pb.packed_varints(val))
    (num, _, bytes_list), = pb.field_values(feats["data"])
    (_, _, data), = pb.field_values(bytes_list)
    return np.frombuffer(data, np.uint8).reshape(shape)


# ---- reading a dataset folder -----------------------------------------------------------------

class LayoutError(ValueError):
    """A dataset folder whose file names do not form one complete dataset."""


def dataset_files(directory: str | os.PathLike, name: str | None = None) -> dict[int, list[Path]]:
    """log2(height) -> that level's files (one plain file, or its shards in order), for both naming forms."""
    found: dict[str, dict[int, dict[int | None, tuple[int | None, Path]]]] = {}
    for p in sorted(Path(directory).iterdir()):
        m = _FILE_RE.match(p.name)
        if not m or (name is not None and m["name"] != name):
            continue
        shard = int(m["i"]) if m["i"] is not None else None
        total = int(m["n"]) if m["n"] is not None else None
        found.setdefault(m["name"], {}).setdefault(int(m["log2"]), {})[shard] = (total, p)
    if not found:
        raise LayoutError(f"no <name>-r<NN>.tfrecords files in {directory}" + (f" named {name!r}" if name else ""))
    if len(found) > 1:
        raise LayoutError(f"{directory} holds several datasets ({', '.join(sorted(found))}); say which name to read")
    levels: dict[int, list[Path]] = {}
    for lvl, shards in sorted(found.popitem()[1].items(), reverse=True):
        if None in shards:
            if len(shards) > 1:
                raise LayoutError(f"level r{lvl:02d} has both a plain file and shards")
            levels[lvl] = [shards[None][1]]
            continue
        totals = {t for t, _ in shards.values()}
        n = totals.pop()
        if totals or sorted(shards) != list(range(n)):
            missing = sorted(set(range(n)) - set(shards))
            raise LayoutError(f"level r{lvl:02d}: shards do not form one set of {n} (missing {missing[:5]})")
        levels[lvl] = [shards[i][1] for i in range(n)]
    return levels


def import_tensorflow():
    """Import TensorFlow without the C++ start-up chatter it prints to stderr (messages from curate stay)."""
    import sys

    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    try:
        import tensorflow as tf
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)
    return tf


def parse_example(serialized):
    """tf.data map function: a serialized record -> uint8 tensor [C, H, W] (the trainer's reader)."""
    tf = import_tensorflow()

    f = tf.io.parse_single_example(serialized, {
        "shape": tf.io.FixedLenFeature([3], tf.int64),
        "data": tf.io.FixedLenFeature([], tf.string),
    })
    return tf.reshape(tf.io.decode_raw(f["data"], tf.uint8), f["shape"])


def level_dataset(files: list[str | os.PathLike], num_parallel_calls: int | None = None):
    """A tf.data.Dataset of uint8 [C, H, W] images from one level's files, in record order."""
    tf = import_tensorflow()

    ds = tf.data.TFRecordDataset([str(f) for f in files])
    return ds.map(parse_example, num_parallel_calls=num_parallel_calls or tf.data.AUTOTUNE, deterministic=True)
