"""`curate train` on a square dataset in NVlabs' own layout: <name>-rNN.tfrecords, CHW uint8, no dataset.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from curate.cli import main  # noqa: E402


def write_nvlabs_dataset(directory, n: int, size: int, seed: int = 0) -> None:
    """Records as NVlabs' dataset_tool.TFRecordExporter writes them: tf.train.Example per level, r02 = 4x4 up."""
    directory.mkdir(parents=True)
    rng = np.random.RandomState(seed)
    levels = size.bit_length() - 1
    writers = {lod: tf.io.TFRecordWriter(str(directory / f"tiny-r{levels - lod:02d}.tfrecords"))
               for lod in range(levels - 1)}
    for _ in range(n):
        img = rng.randint(0, 256, (3, size, size)).astype(np.uint8)
        for lod, writer in writers.items():
            if lod:  # dataset_tool: the 2x2 float mean of the previous float level
                img = (img[:, 0::2, 0::2] + img[:, 0::2, 1::2] + img[:, 1::2, 0::2] + img[:, 1::2, 1::2]) * 0.25
            quant = np.rint(img).clip(0, 255).astype(np.uint8)
            ex = tf.train.Example(features=tf.train.Features(feature={
                "shape": tf.train.Feature(int64_list=tf.train.Int64List(value=quant.shape)),
                "data": tf.train.Feature(bytes_list=tf.train.BytesList(value=[quant.tobytes()]))}))
            writer.write(ex.SerializeToString())
    for writer in writers.values():
        writer.close()


def test_train_grows_from_4x4_on_an_nvlabs_square_dataset(tmp_path, capsys):
    write_nvlabs_dataset(tmp_path / "ds", 20, 16)
    sets = {"end_height": 0, "training_kimg": 0.032, "transition_kimg": 0.032, "total_kimg": 0.16, "minibatch_base": 8,
            "tick_kimg_base": 0.032, "swd_images": 8, "swd_ticks": 5, "grid_cols": 2, "grid_rows": 1,
            "shuffle_buffer": 8}
    args = ["train", str(tmp_path / "ds"), "--config", "smoke", "--runs-dir", str(tmp_path / "runs"), "--no-progress"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0, capsys.readouterr().err
    (run,) = (tmp_path / "runs").iterdir()
    saved = json.loads((run / "config.json").read_text())
    assert saved["config"]["start_height"] == 4 and saved["dataset"]["height"] == saved["dataset"]["width"] == 16
    stats = [json.loads(line) for line in (run / "stats.jsonl").read_text().splitlines()]
    assert [(s["height"], s["width"]) for s in stats] == [(4, 4), (8, 8), (8, 8), (16, 16), (16, 16)]
    assert all(np.isfinite(s["loss_g"]) and np.isfinite(s["loss_d"]) for s in stats) and len(stats[-1]["swd"]) == 2
    assert "4x4 -> 16x16 of 16x16" in capsys.readouterr().out
