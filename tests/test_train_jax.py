"""`curate train --backend jax`: the portable networks trained on JAX (CPU here), in a fresh interpreter.

curate/testing/jax_training.py runs the checks there and writes what it saw: each network's loss
falls over a few steps with the other frozen, the smoke config cut to 8x4 -> 16x8 (tests/test_train.py's schedule) trains end to end,
a stopped and resumed run equals an uninterrupted one exactly, mixed_bfloat16 computes in bfloat16
and trains like float32, and TensorFlow is never imported.
Here, with TensorFlow: `curate generate` reads the JAX run, and misuse of --backend is one line.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import curate
from curate.testing.records import write_dataset
from conftest import assert_one_line_error, run_curate  # noqa: E402

pytestmark = pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                                reason="jax is not installed (make dev installs jax[cpu])")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "ds", 24, 32, 16, shard_size=10)


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    work = tmp_path_factory.mktemp("jax")
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(curate.__file__).parents[1]), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "curate.testing.jax_training", str(dataset), str(work),
                           str(work / "out.json")], env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((work / "out.json").read_text()), work


def test_each_network_s_steps_lower_its_loss_with_the_other_frozen(trained):
    # measured: D 1.20 -> 0.71, G 0.60 -> 0.13 (mean of the first five steps -> the last five); a wrong
    # sign or a missing gradient leaves them flat or rising
    for net in ("d", "g"):
        losses = trained[0]["descent"][net]
        assert len(losses) == 30 and np.all(np.isfinite(losses))
        assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), (net, losses)


def test_mixed_bfloat16_computes_in_bfloat16_between_float32_ends_and_trains_like_float32(trained):
    b = trained[0]["bfloat16"]
    assert (b["mixed_bfloat16"]["features"], b["mixed_bfloat16"]["image"], b["mixed_bfloat16"]["scores"]) == (
        "bfloat16", "float32", "float32")
    assert b["float32"]["features"] == "float32"
    # the same draws from the same weights: measured at most 0.034 apart over five steps
    for one, other in zip(b["float32"]["losses"], b["mixed_bfloat16"]["losses"]):
        for k in ("loss_d", "loss_g"):
            assert np.isfinite(other[k]) and abs(one[k] - other[k]) < 0.1, (k, one, other)


def test_the_smoke_config_trains_end_to_end_on_jax(trained):
    run = trained[0]["run"]
    assert run["summary"] == {"kimg": 0.16, "ticks": 5, "finished": True, "start": [8, 4], "end": [16, 8]}
    assert run["backend"] == "jax" and run["checkpoints"] == ["ckpt-4.npz", "ckpt-5.npz"]  # keep_checkpoints 2
    assert {"config.json", "stats.jsonl", "log.txt", "reals.png", "fakes00005.png"} <= set(run["files"])
    assert not [f for f in run["files"] if f.startswith("events.out")]  # TensorBoard is the TF backend's
    last = run["last"]
    assert (last["height"], last["width"], last["alpha"]) == (16, 8, 1.0)
    assert np.isfinite([last["loss_g"], last["loss_d"], *last["swd"]]).all()
    assert not trained[0]["tensorflow_imported"]


def test_a_resumed_jax_run_equals_an_uninterrupted_one(trained):
    r = trained[0]["resume"]
    assert r["ticks_first"] == 2 and r["resumed_from_kimg"] == 0.064 and r["finished"]  # resumed at the fade-in
    assert r["stats_equal"] and r["same_keys"] and r["max_diff"] == 0.0


def _run_dir(work: Path, kind: str) -> Path:
    (run,) = (work / kind).iterdir()
    return run


def test_generate_reads_a_jax_run_with_tensorflow(trained, tmp_path):
    pytest.importorskip("tensorflow")
    run = _run_dir(trained[1], "full")
    r = run_curate("generate", run, "--seeds", "0-1", "--out", tmp_path / "g", "--no-progress", timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "kimg 0.160" in r.stdout and sorted(p.name for p in (tmp_path / "g").glob("seed*.png")) == [
        "seed0000.png", "seed0001.png"]


def test_backend_misuse_is_one_line(trained, dataset, tmp_path):
    jax_run = _run_dir(trained[1], "full")
    r = run_curate("train", "--resume", jax_run, "--backend", "tensorflow", "--no-progress")
    assert_one_line_error(r, "trained with --backend jax", "resume it with --backend jax")
    r = run_curate("train", dataset, "--backend", "torch", "--runs-dir", tmp_path, "--no-progress")
    assert_one_line_error(r, "torch backend has no training step yet")
    r = run_curate("train", dataset, "--backend", "jax", "--set", "precision=mixed_float16", "--runs-dir", tmp_path,
                   "--no-progress")
    assert_one_line_error(r, "precision=mixed_float16", "TensorFlow-only")
    r = run_curate("train", dataset, "--runs-dir", tmp_path, "--no-progress", env={"KERAS_BACKEND": "mxnet"})
    assert_one_line_error(r, "mxnet", "tensorflow, jax, torch")
    assert not list(tmp_path.iterdir())  # no run folder was started by any of them
