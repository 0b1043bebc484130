"""`curate train` / `curate generate` on a tiny packed set: a smoke run through the CLI, and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from curate.cli import main  # noqa: E402
from curate.train.stylegan.config import CONFIGS, replace  # noqa: E402
from curate.testing.records import write_dataset  # noqa: E402
from curate.train.run import run_training  # noqa: E402

# 8x4 stable for 64 images, 16x8 faded in over 64, then stable: 5 ticks of 32 images, minibatch 8
SETS = {"end_height": 16, "training_kimg": 0.064, "transition_kimg": 0.064, "total_kimg": 0.16, "minibatch_base": 8,
        "tick_kimg_base": 0.032, "snapshot_ticks": 1, "swd_images": 16, "swd_ticks": 2, "grid_cols": 4,
        "grid_rows": 2, "shuffle_buffer": 16}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    # 24 images: the 160-image run wraps the data several times, so epochs and reshuffles are exercised
    return write_dataset(tmp_path_factory.mktemp("data") / "ds", 24, 32, 16, shard_size=10)


def train_smoke(dataset, runs, sets: dict) -> Path:
    """`curate train --config smoke` with these settings into an empty `runs`; the run folder."""
    args = ["train", str(dataset), "--config", "smoke", "--runs-dir", str(runs), "--no-progress"]
    for k, v in sets.items():
        args += ["--set", f"{k}={v}"]
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 0
    (run,) = runs.iterdir()
    return run


@pytest.fixture(scope="module")
def smoke_run(dataset, tmp_path_factory):
    return train_smoke(dataset, tmp_path_factory.mktemp("runs"), SETS)


def _weights(run):
    reader = tf.train.load_checkpoint(str(run / "checkpoints"))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "OBJECT_GRAPH" not in k}


def test_smoke_run_writes_config_grids_stats_and_checkpoint(smoke_run, capsys):
    assert smoke_run.name == "00000-smoke"
    saved = json.loads((smoke_run / "config.json").read_text())
    assert saved["config"]["end_height"] == 16 and saved["dataset"]["count"] == 24
    stats = [json.loads(line) for line in (smoke_run / "stats.jsonl").read_text().splitlines()]
    assert [s["tick"] for s in stats] == [1, 2, 3, 4, 5]
    assert [(s["height"], s["width"]) for s in stats] == [(8, 4), (8, 4), (16, 8), (16, 8), (16, 8)]
    assert [round(s["alpha"], 3) for s in stats] == [1.0, 1.0, 0.375, 0.875, 1.0]  # at each tick's last step
    assert all(np.isfinite(s["loss_g"]) and np.isfinite(s["loss_d"]) for s in stats)
    assert "swd" in stats[1] and "swd" not in stats[0] and len(stats[-1]["swd"]) == 2
    from PIL import Image

    assert sorted(p.name for p in smoke_run.glob("fakes*.png")) == [f"fakes{t:05d}.png" for t in range(1, 6)]
    grid = Image.open(smoke_run / "fakes00001.png")
    assert grid.size == (4 * 8, 2 * 16)  # grid_cols x (width at end_height), grid_rows x height
    assert Image.open(smoke_run / "reals.png").size == grid.size
    assert tf.train.latest_checkpoint(str(smoke_run / "checkpoints")).endswith("ckpt-5")
    assert list(smoke_run.glob("events.out.tfevents.*"))
    assert "G/mapping/layers/0/w/.ATTRIBUTES/VARIABLE_VALUE" in _weights(smoke_run)



def _events(run):
    """(tag, step, value or image bytes) of every summary in a run's TensorBoard event files."""
    out = []
    for path in sorted(run.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for v in event.summary.value:
                out.append((v.tag, event.step, tf.make_ndarray(v.tensor)))
    return out


def test_tensorboard_events_hold_the_tick_scalars_and_grids(smoke_run):
    stats = [json.loads(line) for line in (smoke_run / "stats.jsonl").read_text().splitlines()]
    events = _events(smoke_run)
    scalars = {(tag, step): float(value) for tag, step, value in events if tag != "grids/fakes"}
    steps = [round(s["kimg"] * 1000) for s in stats]
    assert {tag for tag, _ in scalars} == {f"train/{k}" for k in ("loss_g", "loss_d", "r1", "score_real", "score_fake",
                                                                  "alpha", "img_per_s", "resolution")} | {
        "metrics/swd", "metrics/swd_level0"}
    for s, step in zip(stats, steps):
        assert scalars[("train/loss_g", step)] == pytest.approx(s["loss_g"], rel=1e-6)
        assert scalars[("train/loss_d", step)] == pytest.approx(s["loss_d"], rel=1e-6)
        assert scalars[("train/resolution", step)] == s["height"]
    assert [(step, scalars[("metrics/swd", step)]) for step in steps if ("metrics/swd", step) in scalars] == [
        (step, pytest.approx(s["swd"][-1], rel=1e-6)) for s, step in zip(stats, steps) if "swd" in s]
    grids = [(step, value) for tag, step, value in events if tag == "grids/fakes"]
    assert [step for step, _ in grids] == steps
    width, height, png = grids[0][1]
    assert (int(width), int(height)) == (4 * 8, 2 * 16)
    from PIL import Image

    assert np.array_equal(tf.io.decode_png(png).numpy(), np.asarray(Image.open(smoke_run / "fakes00001.png")))


def test_importing_curate_train_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, curate.train, curate.train.cli; assert 'tensorflow' not in sys.modules, 'tensorflow imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

def test_generate_writes_images_and_a_strip(smoke_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["generate", str(smoke_run), "--seeds", "1-3", "--steps", "4", "--truncation", "0.5", "-o", str(tmp_path)])
    assert e.value.code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["interpolation.png", "seed0001.png", "seed0002.png",
                                                          "seed0003.png"]
    from PIL import Image

    assert Image.open(tmp_path / "seed0001.png").size == (8, 16)
    assert Image.open(tmp_path / "interpolation.png").size == (8 * (2 * 4 + 1), 16)
    assert "generate: 3 images at level 4" in capsys.readouterr().out


def test_resume_equals_an_uninterrupted_run(smoke_run, dataset, tmp_path):
    # Bitwise: every random draw is stateless in (seed, step), the data position is restored, and the
    # same ops run on the same inputs on the same machine; nothing is left to float tolerance.
    config = replace(CONFIGS["smoke"], **SETS)
    first = run_training(config, dataset, runs_dir=tmp_path, progress=False, stop_after_ticks=3, echo=lambda s: None)
    assert not first["finished"] and first["ticks"] == 3  # stopped mid fade-in at 16x8
    run = tmp_path / "00000-smoke"
    with pytest.raises(SystemExit) as e:
        main(["train", "--resume", str(run), "--no-progress"])
    assert e.value.code == 0
    a, b = _weights(smoke_run), _weights(run)
    assert a.keys() == b.keys()
    differ = [k for k in a if not np.array_equal(a[k], b[k])]
    assert differ == ["counters/seconds/.ATTRIBUTES/VARIABLE_VALUE"]  # wall-clock time trained; all else equal
    strip = lambda r: [{k: v for k, v in json.loads(line).items() if "sec" not in k and "per_s" not in k}  # noqa: E731
                       for line in (r / "stats.jsonl").read_text().splitlines()]
    assert strip(run) == strip(smoke_run)


def test_misuse_is_one_line_and_exit_2(tmp_path, capsys):
    for args in (["train", str(tmp_path / "missing")], ["train", str(tmp_path), "--set", "nope=1"],
                 ["train", "--resume", str(tmp_path)], ["train"]):
        with pytest.raises(SystemExit) as e:
            main(args)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "error" in err, err


# ---- mixed precision: float16 with dynamic loss scaling, one level (each level traced costs seconds) -----

# 8x4 only, 6 ticks of 16 images at minibatch 8; the scale doubles every 3 clean steps, so the run
# stops (tick 2, step 4) with a non-trivial loss-scale state that the resume must restore
MIXED = {**SETS, "end_height": 8, "training_kimg": 0.096, "transition_kimg": 0.0, "total_kimg": 0.096,
         "tick_kimg_base": 0.016, "precision": "mixed_float16", "loss_scale_growth_steps": 3}


@pytest.fixture(scope="module")
def mixed_run(dataset, tmp_path_factory):
    return train_smoke(dataset, tmp_path_factory.mktemp("mixed"), MIXED)


def test_mixed_float16_run_checkpoints_its_loss_scales_and_generates_float32_images(mixed_run, tmp_path, capsys):
    assert json.loads((mixed_run / "config.json").read_text())["config"]["precision"] == "mixed_float16"
    stats = [json.loads(line) for line in (mixed_run / "stats.jsonl").read_text().splitlines()]
    assert [s["tick"] for s in stats] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(s["loss_g"]) and np.isfinite(s["loss_d"]) and np.isfinite(s["r1"]) for s in stats)
    assert all(0 <= s["overflow_d"] <= 1 and s["loss_scale_d"] >= 1 for s in stats)
    weights = _weights(mixed_run)
    assert tf.train.latest_checkpoint(str(mixed_run / "checkpoints")).endswith("ckpt-6")
    for net in ("g", "d"):
        scale = weights[f"loss_scale_{net}/scale/.ATTRIBUTES/VARIABLE_VALUE"]
        assert scale == stats[-1][f"loss_scale_{net}"] and scale >= 1
        assert f"loss_scale_{net}/good_steps/.ATTRIBUTES/VARIABLE_VALUE" in weights
    # 12 steps from 2**15, doubling every 3 clean ones and halving on each overflow
    assert weights["loss_scale_d/scale/.ATTRIBUTES/VARIABLE_VALUE"] != 32768.0
    assert all(v.dtype == np.float32 for k, v in weights.items() if k.startswith(("G/", "D/", "Gs/")))

    with pytest.raises(SystemExit) as e:
        main(["generate", str(mixed_run), "--seeds", "1-2", "--steps", "2", "-o", str(tmp_path)])
    assert e.value.code == 0
    from PIL import Image

    assert Image.open(tmp_path / "seed0001.png").size == (4, 8)
    assert "generate: 2 images at level 3" in capsys.readouterr().out


def test_mixed_float16_resume_equals_an_uninterrupted_run(mixed_run, dataset, tmp_path):
    config = replace(CONFIGS["smoke"], **MIXED)
    first = run_training(config, dataset, runs_dir=tmp_path, progress=False, stop_after_ticks=2, echo=lambda s: None)
    assert not first["finished"] and first["ticks"] == 2
    run = tmp_path / "00000-smoke"
    assert _weights(run)["loss_scale_d/good_steps/.ATTRIBUTES/VARIABLE_VALUE"] != 0  # mid-way to a doubling
    with pytest.raises(SystemExit) as e:
        main(["train", "--resume", str(run), "--no-progress"])
    assert e.value.code == 0
    a, b = _weights(mixed_run), _weights(run)
    assert a.keys() == b.keys()
    assert [k for k in a if not np.array_equal(a[k], b[k])] == ["counters/seconds/.ATTRIBUTES/VARIABLE_VALUE"]
    strip = lambda r: [{k: v for k, v in json.loads(line).items() if "sec" not in k and "per_s" not in k}  # noqa: E731
                       for line in (r / "stats.jsonl").read_text().splitlines()]
    assert strip(run) == strip(mixed_run)


def test_each_network_s_steps_lower_its_loss_with_the_other_frozen(dataset):
    """The TF half of tests/test_train_jax.py's check: 30 compiled steps at 8x4 on one minibatch and five
    step numbers' draws, the other network's learning rate 0; each loss must fall."""
    from curate.train.data import open_dataset
    from curate.train.phases import Phases
    from curate.train.steps import Trainer

    trainer = Trainer(replace(CONFIGS["smoke"], **SETS), open_dataset(dataset))
    Phases(trainer).start()
    level = trainer.schedule.start_level
    step, batch = trainer.step_fn(level), next(trainer.data_stream(level, 0))
    lr = trainer.schedule.lrates(level)[0]
    start = {id(v): v.numpy() for v in trainer.G.variables + trainer.D.variables}
    for net, lr_g, lr_d in (("d", 0.0, lr), ("g", lr, 0.0)):
        for v in trainer.G.variables + trainer.D.variables:
            v.assign(start[id(v)])
        trainer.opt_g.reset()
        trainer.opt_d.reset()
        losses = [float(step(batch, tf.constant(1.0), tf.constant(i % 5, tf.int64), tf.constant(lr_g),
                             tf.constant(lr_d))[f"loss_{net}"]) for i in range(30)]
        # measured: D 1.28 -> 0.86, G 0.94 -> 0.50 (mean of the first five steps -> the last five)
        assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), (net, losses)
