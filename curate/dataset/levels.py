"""One level's records as NumPy arrays, read by offset arithmetic: no TensorFlow, no per-record parsing.

Every record of a level holds an image of the same shape behind the same Example header, so every
framed record has the same size and record i of a file starts at byte i * size, its pixels at
i * size + pixels. A level file is therefore one `np.memmap` with a strided [n, C, H, W] view of the
pixel bytes (`LevelArray`), and a minibatch is one NumPy gather from it. The layout (shape, record
size, pixel offset) is read from each file's first record, not assumed: NVlabs' exporter and other
writers may order the Example's fields differently from `curate pack` (schema.example_parts).

Offset arithmetic trusts the framing, so `verify()` checks it once: every record's length and header
bytes equal the first record's (one vectorised comparison) and every record's data checksum (crc32c
per record, the masking vectorised). A file that passes gets a sidecar `<file>.verified` (JSON: its
size, mtime and inode, the layout), written atomically, so later runs skip the pass; any change to the
file invalidates it. A read-only dataset folder is verified again at every open (nothing is cached).

The JAX and PyTorch trainers read through `minibatches()`: a seeded full permutation per epoch, a pure
function of the stream position (resume). The TensorFlow trainer's own stream (train/data.py, tf.data's
shuffle buffer) is unchanged.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from curate.core import protobuf as pb
from curate.dataset import schema as R

SIDECAR_SUFFIX = ".verified"
SIDECAR_FORMAT = 1
_CHUNK_BYTES = 64 << 20  # verification reads this much per step (bounded memory, one progress update)


@dataclass(frozen=True)
class RecordLayout:
    """Where the pixels sit in one level's framed records: all of a level's records share it."""

    shape: tuple[int, int, int]  # (C, H, W), as the record's `shape` feature says
    size: int  # bytes of one framed record: 8 length + 4 crc + payload + 4 crc
    pixels: int  # offset of the first pixel byte within a framed record

    @property
    def pixel_bytes(self) -> int:
        """C * H * W."""
        c, h, w = self.shape
        return c * h * w


def record_layout(record, path: str | os.PathLike | None = None, offset: int = 0) -> RecordLayout:
    """The layout of the framed record at the start of `record` (bytes-like), found from its bytes.

    RecordError (naming `path` and `offset`) for a bad or truncated frame, or a payload that is not an
    Example with an int64 `shape` [C, H, W] and one bytes `data` of C * H * W pixels.
    """
    buf = memoryview(record).cast("B")
    if len(buf) < 12:
        raise R.RecordError("truncated record", offset, "incomplete header", path)
    if struct.unpack_from("<I", buf, 8)[0] != R._masked_crc(bytes(buf[:8])):
        raise R.RecordError("bad crc", offset, "length checksum", path)
    (length,) = struct.unpack_from("<Q", buf, 0)
    if len(buf) < 16 + length:
        raise R.RecordError("truncated record", offset, f"{len(buf)} of {16 + length} bytes", path)
    try:
        features = _features(buf, 12, 12 + length)
        shape = _int64_list(buf, *features["shape"]) if "shape" in features else None
        data = _single_bytes(buf, *features["data"]) if "data" in features else None
    except pb.WireFormatError as e:
        raise R.RecordError("not an image record", offset, f"not a tf.train.Example: {e}", path) from None
    if shape is None or data is None:
        raise R.RecordError("not an image record", offset, "no `shape` and `data` features", path)
    if len(shape) != 3 or min(shape) <= 0 or shape[0] * shape[1] * shape[2] != data[1] - data[0]:
        raise R.RecordError("not an image record", offset,
                            f"shape {shape} does not match {data[1] - data[0]} data bytes", path)
    return RecordLayout((shape[0], shape[1], shape[2]), 16 + length, data[0])


def _features(buf, start: int, end: int) -> dict[str, tuple[int, int]]:
    """Example's feature map: key -> (start, end) of its Feature message, as offsets into buf."""
    out: dict[str, tuple[int, int]] = {}
    for num, wire, a, b in pb.iter_fields(buf, start, end):
        if num != 1 or wire != pb.LEN:  # Example.features
            continue
        for num, wire, ea, eb in pb.iter_fields(buf, a, b):
            if num != 1 or wire != pb.LEN:  # Features.feature: map entries
                continue
            key, value = None, None
            for k, w, c, d in pb.iter_fields(buf, ea, eb):
                if k == 1 and w == pb.LEN:
                    key = bytes(buf[c:d]).decode("utf-8", "replace")
                elif k == 2 and w == pb.LEN:
                    value = (c, d)
            if key is not None and value is not None:
                out[key] = value  # protobuf maps: the last entry of a key wins
    return out


def _int64_list(buf, start: int, end: int) -> list[int] | None:
    values: list[int] | None = None
    for num, wire, a, b in pb.iter_fields(buf, start, end):
        if num != 3 or wire != pb.LEN:  # Feature.int64_list
            continue
        values = []
        for n, w, c, d in pb.iter_fields(buf, a, b):
            if n == 1 and w == pb.VARINT:
                values.append(c)
            elif n == 1 and w == pb.LEN:  # packed, as every proto3 writer does
                values.extend(pb.packed_varints(buf, c, d))
    return values


def _single_bytes(buf, start: int, end: int) -> tuple[int, int] | None:
    found = None
    for num, wire, a, b in pb.iter_fields(buf, start, end):
        if num != 1 or wire != pb.LEN:  # Feature.bytes_list
            continue
        values = [(c, d) for n, w, c, d in pb.iter_fields(buf, a, b) if n == 1 and w == pb.LEN]
        found = values[0] if len(values) == 1 else None
    return found


def _mask(crc: np.ndarray) -> np.ndarray:
    """schema._mask on a uint32 array."""
    crc = crc.astype(np.uint32)
    return ((crc >> np.uint32(15)) | (crc << np.uint32(17))) + np.uint32(0xA282EAD8)


class _LevelFile:
    """One file of a level: its memmap, rows of framed records and the pixel view."""

    def __init__(self, path: Path):
        self.path = path
        st = path.stat()
        self.stat = (st.st_size, st.st_mtime_ns, st.st_ino)
        if st.st_size == 0:
            self.map = np.zeros(0, np.uint8)
            self.layout: RecordLayout | None = None
            return
        self.map = np.memmap(path, np.uint8, mode="r")
        head = self.map[:12]
        if head.size == 12:
            (length,) = struct.unpack("<Q", head.tobytes()[:8])
            first = self.map[:min(self.map.size, 16 + length)]
        else:
            first = head
        self.layout = record_layout(first, path, 0)

    @property
    def count(self) -> int:
        return 0 if self.layout is None else self.map.size // self.layout.size

    def rows(self) -> np.ndarray:
        """[n, size] uint8: one row per framed record (a view of the file)."""
        n = self.count
        return self.map[:n * self.layout.size].reshape(n, self.layout.size) if n else np.zeros((0, 0), np.uint8)

    def pixels(self, layout: RecordLayout) -> np.ndarray:
        """[n, C, H, W] uint8 view of every record's pixels (no copy)."""
        n = self.count
        if not n:
            return np.zeros((0, *layout.shape), np.uint8)
        view = self.rows()[:, layout.pixels:layout.pixels + layout.pixel_bytes].reshape(n, *layout.shape)
        assert np.shares_memory(view, self.map), "the pixel view must not copy the file"
        return view

    def check_size(self) -> None:
        """RecordError unless the file is a whole number of records (naming the first record that breaks it)."""
        if self.layout is not None and self.map.size % self.layout.size:
            self._check_frames()
            n = self.count
            raise R.RecordError("truncated record", n * self.layout.size,
                                f"{self.map.size - n * self.layout.size} of {self.layout.size} bytes", self.path)

    def _check_frames(self) -> None:
        """RecordError at the first record whose length or header bytes differ from the first record's."""
        lay, rows = self.layout, self.rows()
        a, b = lay.pixels, lay.pixels + lay.pixel_bytes
        step = max(1, _CHUNK_BYTES // max(1, lay.size))
        for s in range(0, len(rows), step):
            chunk = rows[s:s + step]
            bad = (chunk[:, :a] != rows[0, :a]).any(axis=1) | (chunk[:, b:lay.size - 4] != rows[0, b:lay.size - 4]).any(axis=1)
            if bad.any():
                raise self._diagnose((s + int(np.argmax(bad))) * lay.size)

    def _diagnose(self, offset: int) -> R.RecordError:
        """What is wrong with the record that starts at `offset` (a true frame start: all before it are whole)."""
        size = self.map.size
        if size - offset < 12:
            return R.RecordError("truncated record", offset, "incomplete header", self.path)
        head = self.map[offset:offset + 12].tobytes()
        if struct.unpack("<I", head[8:])[0] != R._masked_crc(head[:8]):
            return R.RecordError("bad crc", offset, "length checksum", self.path)
        (length,) = struct.unpack("<Q", head[:8])
        if offset + 16 + length > size:
            return R.RecordError("truncated record", offset, f"{size - offset} of {16 + length} bytes", self.path)
        payload = self.map[offset + 12:offset + 12 + length]
        stored = struct.unpack("<I", self.map[offset + 12 + length:offset + 16 + length].tobytes())[0]
        if stored != R._masked_crc(payload):
            return R.RecordError("bad crc", offset, f"data checksum of record #{offset // self.layout.size}", self.path)
        if 16 + length != self.layout.size:
            return R.RecordError("not fixed-size", offset, f"a record of {16 + length} bytes among records of "
                                 f"{self.layout.size}: read it with tf.data, or repack it", self.path)
        return R.RecordError("not fixed-size", offset, "its Example header differs from the first record's "
                             "(another shape or field order)", self.path)

    def verify(self, progress=None) -> None:
        """Check every record's frame, header bytes and data checksum; RecordError at the first bad one."""
        import google_crc32c

        if self.layout is None:
            return
        self.check_size()
        self._check_frames()  # equal length bytes: the first record's length checksum holds for all
        lay, rows = self.layout, self.rows()
        step = max(1, _CHUNK_BYTES // lay.size)
        for s in range(0, len(rows), step):
            chunk = rows[s:s + step]
            crcs = np.fromiter((google_crc32c.value(r[12:lay.size - 4]) for r in chunk), np.uint32, len(chunk))
            stored = np.ascontiguousarray(chunk[:, lay.size - 4:]).view("<u4")[:, 0]
            bad = _mask(crcs) != stored
            if bad.any():
                i = s + int(np.argmax(bad))
                raise R.RecordError("bad crc", i * lay.size, f"data checksum of record #{i}", self.path)
            if progress is not None:
                progress.update(len(chunk))

    def sidecar(self) -> Path:
        return self.path.with_name(self.path.name + SIDECAR_SUFFIX)

    def verified_state(self) -> dict:
        lay = self.layout
        return {"format": SIDECAR_FORMAT, "size": self.stat[0], "mtime_ns": self.stat[1], "inode": self.stat[2],
                "records": self.count, "layout": None if lay is None else {**asdict(lay), "shape": list(lay.shape)}}

    def cached(self) -> bool:
        """True when the sidecar records a verification of this very file (same size, mtime, inode, layout)."""
        try:
            return json.loads(self.sidecar().read_text()) == self.verified_state()
        except (OSError, ValueError):
            return False


class LevelArray:
    """One level's files (one, or its shards in order) as one sequence of images, read through memmaps.

    `images(indices)` returns uint8 NHWC (the trainers' minibatch layout; `channels_last=False` gives
    NCHW, the files' own order). Pickles as its file names, so it can go to worker processes.
    """

    def __init__(self, files: Sequence[str | os.PathLike]):
        if not files:
            raise ValueError("a level needs at least one file")
        self.files = tuple(Path(f) for f in files)
        self._files = [_LevelFile(p) for p in self.files]
        layouts = [f for f in self._files if f.layout is not None]
        if not layouts:
            raise R.RecordError("truncated record", 0, "no records in the level's files", self.files[0])
        self.layout = layouts[0].layout
        for f in self._files:
            if f.layout is not None and f.layout != self.layout:
                raise R.RecordError("not fixed-size", 0, f"its records are {_describe(f.layout)}, those of "
                                    f"{layouts[0].path.name} are {_describe(self.layout)}", f.path)
            f.check_size()
        self._views = [f.pixels(self.layout) for f in self._files]
        self._starts = np.cumsum([0] + [f.count for f in self._files])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __reduce__(self):
        return LevelArray, ([str(p) for p in self.files],)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        c, h, w = self.layout.shape
        return h, w, c

    def images(self, indices, channels_last: bool = True) -> np.ndarray:
        """uint8 [n, H, W, C] (or [n, C, H, W]) copies of the records at `indices`, in the order given."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"record index out of range 0..{len(self) - 1}")
        c, h, w = self.layout.shape
        if len(self._views) == 1 and not channels_last:
            return self._views[0][idx]  # one gather of whole records from the memmap
        out = np.empty((idx.size, h, w, c) if channels_last else (idx.size, c, h, w), np.uint8)
        which = np.searchsorted(self._starts, idx, side="right") - 1
        single = len(self._views) == 1
        for k, view in enumerate(self._views):
            sel = slice(None) if single else np.flatnonzero(which == k)
            if not single and not sel.size:
                continue
            local = idx[sel] - self._starts[k]
            if not channels_last:
                out[sel] = view[local]
                continue
            # CHW -> HWC a channel at a time: a gather of planes, then a strided write with long inner
            # runs, 2-3x faster than NumPy's transposing copy (its innermost loop is the 3 channels)
            for ch in range(c):
                out[sel, ..., ch] = view[local, ch]
        return out

    def verify(self, cache: bool = True, progress: bool = False) -> None:
        """Check every record once (RecordError naming the file and byte offset); remember a pass per file.

        With `cache`, a file whose sidecar matches it is skipped and a file that passes gets one (when
        its folder is writable); `cache=False` checks everything and writes nothing.
        """
        from curate.core.atomic import write_json

        todo = [f for f in self._files if not (cache and f.cached())]
        bar = None
        if progress and todo:
            from tqdm import tqdm

            bar = tqdm(total=sum(f.count for f in todo), unit="rec", desc=f"verify {self.files[0].name}")
        try:
            for f in todo:
                f.verify(bar)
                if cache:
                    try:
                        write_json(f.sidecar(), f.verified_state())
                    except OSError:
                        pass  # a read-only dataset: verified again next time, nothing else changes
        finally:
            if bar is not None:
                bar.close()


def _describe(layout: RecordLayout) -> str:
    return f"{'x'.join(map(str, layout.shape))} ({layout.size} bytes, pixels at {layout.pixels})"


def open_level(files: Sequence[str | os.PathLike], verify: bool = True, progress: bool = False) -> LevelArray:
    """One level's files (a plain file, or its shards in order) as a `LevelArray`, verified once (cached)."""
    level = LevelArray(files)
    if verify:
        level.verify(progress=progress)
    return level


# ---- the minibatch stream the JAX and PyTorch trainers read ------------------------------------

def epoch_order(count: int, epoch: int, seed: int) -> np.ndarray:
    """Epoch `epoch`'s record order: a full permutation from NumPy's generator seeded by (seed, epoch)."""
    return np.random.default_rng([seed, epoch]).permutation(count)


def stream_indices(count: int, position: int, n: int, seed: int) -> np.ndarray:
    """The record indices at stream positions [position, position + n): epoch after epoch of epoch_order."""
    out, filled = np.empty(n, np.int64), 0
    epoch, offset = divmod(position, count)
    while filled < n:
        take = min(n - filled, count - offset)
        out[filled:filled + take] = epoch_order(count, epoch, seed)[offset:offset + take]
        filled, epoch, offset = filled + take, epoch + 1, 0
    return out


def minibatches(level: LevelArray, position: int, minibatch: int, seed: int,
                channels_last: bool = True) -> Iterator[np.ndarray]:
    """uint8 [mb, H, W, C] minibatches without end, starting `position` images into the stream.

    A pure function of the position: the batch at position p is `level.images(stream_indices(len, p,
    mb, seed))` however the stream got there, so a resumed run reads what an unbroken one would.
    """
    count = len(level)
    epoch, offset = divmod(position, count)
    order = epoch_order(count, epoch, seed)
    while True:
        parts, need = [], minibatch
        while need:
            take = min(need, count - offset)
            parts.append(order[offset:offset + take])
            need, offset = need - take, offset + take
            if offset == count:
                epoch, offset = epoch + 1, 0
                order = epoch_order(count, epoch, seed)
        yield level.images(np.concatenate(parts) if len(parts) > 1 else parts[0], channels_last)
