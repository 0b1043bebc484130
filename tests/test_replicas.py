"""`replicas`: the same steps on 2 replicas as on 1 (2 logical CPUs, in a subprocess), resume across replica
counts, and the one-line errors for a bad setting, too few devices and a bad TF_CONFIG."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

tf = pytest.importorskip("tensorflow")

import curate  # noqa: E402
from curate.cli import main  # noqa: E402
from curate.testing.records import write_dataset  # noqa: E402
from curate.train import replicas  # noqa: E402
from curate.train.runfolder import TrainError  # noqa: E402
from curate.train.stylegan.config import CONFIGS, RESUMABLE, parse_set, replace  # noqa: E402


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """curate.testing.replicas' JSON: logical devices must be set before TensorFlow starts, so in a fresh process."""
    out = tmp_path_factory.mktemp("replicas") / "out.json"
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(curate.__file__).parents[1]), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "curate.testing.replicas", str(out)], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_two_replicas_take_the_same_steps_as_one(compared):
    # the tolerance is float rounding: gradients summed in another order; a wrong split (other
    # minibatch-stddev groups, gradients not averaged) differs by 1e-2..1e-1 in the losses and moves
    # 28-46% of the weights by more than 1e-4 (measured; docs/training.md)
    assert compared["ticks"] == 4 and len(compared["steps"]["two"]) == 2
    assert compared["steps"]["max_loss_diff"] < 1e-5
    w = compared["weights"]
    assert w["count"] > 100_000
    assert w["share_above_1e-4"] < 1e-3, w
    assert w["p999"] < 1e-4, w


def test_a_two_replica_checkpoint_resumes_on_one_and_the_reverse(compared):
    back, forth = compared["resume"]["2->1"], compared["resume"]["1->2"]
    for r in (back, forth):
        assert r["restored_max_diff"] == 0.0  # one copy saved, restored exactly on another count
        assert r["max_loss_diff"] < 1e-4  # four steps, two of them on the other count
        assert r["share_above_1e-4"] < 1e-3, r
    assert back["finished"] and back["ticks"] == 4
    assert forth["replicas"] == 2 and forth["nimg"] == 32
    assert forth["variables"] > 200 and forth["copies_differ"] == 0  # every replica made the same update


def test_a_minibatch_that_does_not_split_and_xla_are_one_line(compared):
    split, xla = compared["errors"]
    assert "\n" not in split and "minibatch 4 at 8x4, 4 at 16x8" in split and "replicas x mbstd_group = 8" in split
    assert """--set 'minibatch={"8": 8, "16": 8}'""" in split  # a table that does split
    assert "\n" not in xla and "xla=true is not supported with 2 replicas" in xla


def test_replicas_setting_is_typed_checked_and_resumable():
    assert CONFIGS["smoke"].replicas == "1"
    assert replace(CONFIGS["smoke"], **parse_set(["replicas=2"])).replicas == "2"
    assert replace(CONFIGS["smoke"], **parse_set(["replicas=auto"])).replicas == "auto"
    for bad in ("two", "0", "-1", "1.5", "true"):
        with pytest.raises(ValueError, match="replicas"):
            replace(CONFIGS["smoke"], **parse_set([f"replicas={bad}"]))
    assert "replicas" in RESUMABLE


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "ds", 8, 32, 16)


@pytest.mark.parametrize("sets, expected", [
    (["replicas=two"], "replicas 'two' must be auto"),
    (["replicas=4"], "replicas=4 but no GPU visible (1 CPU device)"),
])
def test_bad_replicas_and_too_few_devices_are_one_line(dataset, tmp_path, capsys, monkeypatch, sets, expected):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    args = ["train", str(dataset), "--runs-dir", str(tmp_path), "--no-progress"]
    with pytest.raises(SystemExit) as e:
        main(args + [a for s in sets for a in ("--set", s)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and expected in err, err
    assert not list(tmp_path.iterdir())  # no run folder for a run that cannot start


def _tf_config(monkeypatch, task_type: str, index: int, chief: bool = False):
    cluster = {"worker": ["host1:2222", "host2:2222"]}
    if chief:
        cluster["chief"] = ["host0:2222"]
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": {"type": task_type, "index": index}}))


def test_the_chief_of_tf_config_writes(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert replicas.cluster_spec() is None and replicas.is_chief()
    _tf_config(monkeypatch, "worker", 0)
    assert replicas.is_chief()
    _tf_config(monkeypatch, "worker", 1)
    assert not replicas.is_chief()
    _tf_config(monkeypatch, "worker", 0, chief=True)
    assert not replicas.is_chief()
    _tf_config(monkeypatch, "chief", 0, chief=True)
    assert replicas.is_chief()
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}))
    assert replicas.cluster_spec() is None  # one task: not a multi-worker run


def test_bad_tf_config_and_a_count_the_worker_lacks_are_train_errors(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(TrainError, match="TF_CONFIG is not a JSON object"):
        replicas.is_chief()
    _tf_config(monkeypatch, "worker", 1)
    with pytest.raises(TrainError, match="replicas=3 but this worker sees no GPU"):
        replicas.make_strategy("3")


@pytest.mark.skipif(not os.environ.get("CURATE_MULTIWORKER"), reason="opt-in (about a minute and two ports): "
                    "CURATE_MULTIWORKER=1")
def test_two_workers_under_tf_config_take_the_same_steps_as_one(tmp_path):
    from curate.testing.replicas import multi_worker

    r = multi_worker(tmp_path)
    assert r["exit_codes"] == [0, 0], (tmp_path / "worker1.log").read_text()[-3000:]
    assert not r["worker1_wrote"]  # only the chief writes a run folder
    assert r["max_loss_diff"] < 1e-4 and r["share_above_1e-4"] < 1e-3, r
