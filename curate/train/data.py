"""The packed dataset as the trainer sees it: its level files, size and count, and the minibatch streams."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from curate.dataset import schema as R
from curate.train.runfolder import TrainError


@dataclass(frozen=True)
class DatasetInfo:
    """What the trainer needs to know about a packed dataset, read through curate.dataset.schema."""

    path: str
    files: dict[int, list[str]]  # level -> files
    height: int
    width: int
    count: int
    labels: int  # label dimensions (0: none); kept for later conditioning, unused by the networks

    def to_json(self) -> dict[str, Any]:
        """The part saved in config.json."""
        return {"path": self.path, "height": self.height, "width": self.width, "count": self.count,
                "labels": self.labels, "levels": sorted(self.files)}


def open_dataset(path: str | os.PathLike) -> DatasetInfo:
    """Find the level files of a packed dataset, its full size and its record count (TrainError if unusable)."""
    path = Path(path)
    if not path.is_dir():
        raise TrainError(f"{path} is not a folder; give the DATASET_DIR that `curate pack` wrote (or NVlabs' dataset_tool)")
    try:
        files = R.dataset_files(path)
    except R.LayoutError as e:
        raise TrainError(str(e)) from None
    top, low = max(files), min(files)
    try:
        with open(files[top][0], "rb") as f:
            c, h, w = R.decode_example(next(R.iter_records(f))).shape
        count = 0
        for p in files[low]:
            with open(p, "rb") as f:
                count += sum(1 for _ in R.iter_records(f))
    except (StopIteration, R.RecordError, ValueError, KeyError) as e:
        raise TrainError(f"cannot read the records in {path}: {e or 'empty file'}; check it with `curate inspect`") from None
    if c != 3 or h % w or R.log2(h) != top:
        raise TrainError(f"{files[top][0]} holds {c}x{h}x{w} images; the trainer needs RGB with H a multiple of W")
    labels = 0
    for p in path.glob("*-rxx.labels"):
        labels = int(np.load(p, mmap_mode="r").shape[1])
    return DatasetInfo(str(path.resolve()), {k: [str(p) for p in v] for k, v in files.items()}, h, w, count, labels)


def minibatches(files: list[str], count: int, position: int, minibatch: int, shuffle_buffer: int, seed: int):
    """uint8 [mb, H, W, 3] minibatches of one level's files, starting `position` images in.

    A pure function of the position (epoch e is the files shuffled with a seed from e, then `skip`),
    which is what makes resume exact.
    """
    from curate.train.stylegan.ops import tf

    base = R.level_dataset(files)
    epoch, offset = divmod(position, count)
    buf = min(shuffle_buffer, count)

    def one_epoch(e):
        return base.shuffle(buf, seed=e + seed * 1_000_003, reshuffle_each_iteration=False) if buf > 1 else base

    ds = tf.data.Dataset.range(epoch, 2 ** 62).flat_map(one_epoch).skip(offset)
    ds = ds.map(lambda x: tf.transpose(x, [1, 2, 0])).batch(minibatch, drop_remainder=True)
    return iter(ds.prefetch(2))


def first_images(files: list[str], n: int) -> np.ndarray:
    """The first n records of a level (uint8 NHWC), for grids and metrics."""
    ds = R.level_dataset(files).take(n)
    return np.stack([np.transpose(x.numpy(), (1, 2, 0)) for x in ds])
