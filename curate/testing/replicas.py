"""The same training steps on 1 and on 2 replicas, in a fresh interpreter with 2 logical CPU devices.

Logical devices can only be configured before TensorFlow starts its runtime, so tests run this
file with `sys.executable -m curate.testing.replicas OUT.json` and read the JSON it writes:

  ticks      the 1-replica run's steps (one per tick)
  steps      the losses of its first two steps and of the same steps on 2 replicas, the largest difference
  weights    |2-replica - 1-replica| over every network variable (G, D, Gs, w averages) after them: the
             share above 1e-4, the 99.9th percentile, the largest and the variables it is in
  resume     2->1: the 2-replica run resumed by run_training with replicas=1 for the last two steps;
             1->2: the 1-replica run's second checkpoint restored on 2 replicas, two steps taken. Each
             against the 1-replica run throughout (the same measures), with the largest difference
             between the checkpoint and the restored variables, and (1->2) how many variables'
             replica copies differ afterwards
  errors     the one-line messages for a minibatch that does not split over the replicas, and for xla

`python -m curate.testing.replicas --multi-worker DIR` runs the same steps as two workers of a
MultiWorkerMirroredStrategy on this machine (`multi_worker`; the test is opt-in, CURATE_MULTIWORKER=1).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

# 16x8 fading in from 8x4 from the first step (one level traced per run, the fade's ops included), 4 steps
# of minibatch 8 = 2 replicas x mbstd_group 4, one step per tick so that stats.jsonl holds every step's
# losses, a checkpoint at each
SETS = {"end_height": 16, "training_kimg": 0.0, "transition_kimg": 0.064, "total_kimg": 0.032,
        "minibatch_base": 8, "tick_kimg_base": 0.008, "snapshot_ticks": 1, "keep_checkpoints": 5,
        "swd_images": 0, "grid_cols": 2, "grid_rows": 1, "shuffle_buffer": 16, "adam_epsilon": 1e-4}
# adam_epsilon: Adam's first steps move every weight by about lr whatever its gradient's size, so a weight
# whose gradient is ~0 (a bias right before an instance norm) moves by +-lr on float rounding alone; an
# epsilon of 1e-4 damps only those, and a wrong split (other minibatch-stddev groups, gradients not
# averaged) still moves 28-46% of the weights by more than 1e-4 (docs/training.md, Several GPUs)


def configure_cpus(n: int) -> None:
    """Split the CPU into n logical devices (before anything starts TensorFlow's runtime)."""
    from curate.train.stylegan.ops import tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)


def checkpoint_weights(run_dir: Path, number: int | None = None) -> dict[str, np.ndarray]:
    """The network variables (G, D, Gs) of a run's latest checkpoint, or of ckpt-<number>."""
    from curate.train.stylegan.ops import tf

    folder = run_dir / "checkpoints"
    reader = tf.train.load_checkpoint(str(folder / f"ckpt-{number}") if number else str(folder))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith(("G/", "D/", "Gs/"))}


def trainer_weights(trainer) -> dict[str, np.ndarray]:
    """A trainer's network variables under the names its checkpoints give them."""
    from curate.train.stylegan.ops import tf

    with tempfile.TemporaryDirectory() as tmp:
        path = tf.train.Checkpoint(G=trainer.G, D=trainer.D, Gs=trainer.Gs).write(str(Path(tmp) / "ckpt"))
        reader = tf.train.load_checkpoint(path)
        return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if k.startswith(("G/", "D/", "Gs/"))}


def weight_diffs(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict:
    """How far two sets of the same variables are apart."""
    assert a.keys() == b.keys()
    diffs = {k: np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).ravel() for k in a}
    flat = np.concatenate(list(diffs.values()))
    worst = sorted(diffs, key=lambda k: -diffs[k].max())[:3]
    return {"count": int(flat.size), "share_above_1e-4": float(np.mean(flat > 1e-4)),
            "p999": float(np.quantile(flat, 0.999)), "max": float(flat.max()),
            "worst": [(k, float(diffs[k].max())) for k in worst]}


def step_losses(run_dir: Path) -> list[dict[str, float]]:
    """Each tick's losses from a run's stats.jsonl (a tick is one step in SETS)."""
    keys = ("loss_g", "loss_d", "r1", "score_real", "score_fake")
    lines = (run_dir / "stats.jsonl").read_text().splitlines()
    return [{k: json.loads(line)[k] for k in keys} for line in lines]


def loss_diff(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    """The largest difference between two runs' per-step losses (inf when their lengths differ)."""
    if len(a) != len(b):
        return float("inf")
    return max(abs(x[k] - y[k]) for x, y in zip(a, b) for k in x)


def continue_steps(trainer, steps: int) -> list[dict[str, float]]:
    """`steps` more steps of a restored trainer, as the tick loop takes them; each step's losses."""
    from curate.train.phases import Phases

    phases, out = Phases(trainer), []
    for _ in range(steps):
        nimg = int(trainer.counters.nimg.numpy())
        level, alpha = phases.enter(nimg)
        losses = trainer.train_step(level, alpha, phases.batch(level, nimg))
        out.append({k: float(losses[k]) for k in ("loss_g", "loss_d", "r1", "score_real", "score_fake")})
    return out


def compare(out_path: Path) -> dict:
    """Run every comparison in this process (2 logical CPUs already configured) and write the JSON."""
    from curate.testing.records import write_dataset
    from curate.train.checkpoints import Checkpoints
    from curate.train.data import open_dataset
    from curate.train.run import resume_config, run_training
    from curate.train.runfolder import TrainError
    from curate.train.steps import Trainer
    from curate.train.stylegan.config import CONFIGS, replace

    result: dict = {}
    quiet = dict(progress=False, echo=lambda s: None)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = open_dataset(write_dataset(tmp / "ds", 24, 32, 16, shard_size=10))
        config = replace(CONFIGS["smoke"], **SETS)
        full = Path(run_training(config, data.path, runs_dir=tmp / "full", **quiet)["run_dir"])
        result["ticks"] = len(step_losses(full))

        # the first two steps on 2 replicas against the same steps on 1
        two = Path(run_training(replace(config, replicas="2"), data.path, runs_dir=tmp / "two",
                                stop_after_ticks=2, **quiet)["run_dir"])
        result["steps"] = {"one": step_losses(full)[:2], "two": step_losses(two),
                           "max_loss_diff": loss_diff(step_losses(full)[:2], step_losses(two))}
        result["weights"] = weight_diffs(checkpoint_weights(full, 2), checkpoint_weights(two))

        # resume across counts after step 2: 2 -> 1 (the run above) and 1 -> 2, against 1 replica throughout
        one = tmp / "one"  # the 1-replica run's checkpoint of step 2 alone
        (one / "checkpoints").mkdir(parents=True)
        for p in full.glob("checkpoints/ckpt-2.*"):
            shutil.copy(p, one / "checkpoints" / p.name)
        (one / "checkpoints" / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\n')
        # 2 -> 1 as `curate train --resume RUN --set replicas=1` does it
        trainer = Trainer(replace(config, replicas="1"), data)
        Checkpoints(trainer, two, 1).restore()
        restored = weight_diffs(checkpoint_weights(two), trainer_weights(trainer))["max"]
        resumed = run_training(resume_config(two, {"replicas": 1}), None, resume=two, **quiet)
        result["resume"] = {"2->1": {
            "restored_max_diff": restored, "finished": resumed["finished"], "ticks": resumed["ticks"],
            "max_loss_diff": loss_diff(step_losses(full), step_losses(two)),
            **weight_diffs(checkpoint_weights(full), checkpoint_weights(two))}}
        # 1 -> 2 in this process, to look at every replica's copy of the variables afterwards
        trainer = Trainer(replace(config, replicas="2"), data)
        Checkpoints(trainer, one, 1).restore()
        restored = weight_diffs(checkpoint_weights(one), trainer_weights(trainer))["max"]
        losses = step_losses(full)[:2] + continue_steps(trainer, 2)
        copies = [v for v in trainer.G.variables + trainer.D.variables + trainer.Gs.variables
                  + trainer.opt_g.variables + trainer.opt_d.variables + trainer.counters.variables]
        differ = sum(not all(np.array_equal(c.numpy(), trainer.strategy.experimental_local_results(v)[0].numpy())
                             for c in trainer.strategy.experimental_local_results(v)) for v in copies)
        result["resume"]["1->2"] = {
            "restored_max_diff": restored, "replicas": trainer.replicas, "variables": len(copies),
            "copies_differ": differ, "nimg": int(trainer.counters.nimg.numpy()),
            "max_loss_diff": loss_diff(step_losses(full), losses),
            **weight_diffs(checkpoint_weights(full), trainer_weights(trainer))}
        errors = []
        for bad in ({"minibatch_base": 4}, {"xla": True}):
            try:
                Trainer(replace(config, replicas="2", **bad), data)
            except TrainError as e:
                errors.append(str(e))
        result["errors"] = errors
    out_path.write_text(json.dumps(result, indent=1))
    return result


def free_port() -> int:
    """A TCP port on localhost nothing listens on now."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def multi_worker(out_dir: Path, timeout: float = 900) -> dict:
    """Two `curate train` workers under TF_CONFIG on this machine (one CPU replica each) against one replica.

    MultiWorkerMirroredStrategy over localhost ports: the same SETS as `compare`, all four steps. The
    JSON holds the loss and weight differences, and whether only the chief (worker 0) wrote a run folder.
    """
    import os
    import subprocess

    from curate.testing.records import write_dataset
    from curate.train.run import run_training
    from curate.train.stylegan.config import CONFIGS, replace

    out_dir.mkdir(parents=True, exist_ok=True)
    data = write_dataset(out_dir / "ds", 24, 32, 16, shard_size=10)
    cluster = {"worker": [f"localhost:{free_port()}", f"localhost:{free_port()}"]}
    sets = [a for k, v in SETS.items() for a in ("--set", f"{k}={v}")]
    procs = []
    for i in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})}
        log = open(out_dir / f"worker{i}.log", "w")
        procs.append(subprocess.Popen([sys.executable, "-m", "curate", "train", str(data), "--runs-dir",
                                       str(out_dir / f"runs{i}"), "--no-progress", *sets], env=env,
                                      stdout=log, stderr=subprocess.STDOUT))
    codes = [p.wait(timeout=timeout) for p in procs]
    one = run_training(replace(CONFIGS["smoke"], **SETS), data, runs_dir=out_dir / "one", progress=False,
                       echo=lambda s: None)
    result: dict = {"exit_codes": codes, "worker1_wrote": (out_dir / "runs1").exists()}
    if codes == [0, 0]:
        (chief,) = (out_dir / "runs0").iterdir()
        one_dir = Path(one["run_dir"])
        result.update(max_loss_diff=loss_diff(step_losses(one_dir), step_losses(chief)),
                      **weight_diffs(checkpoint_weights(one_dir), checkpoint_weights(chief)))
    (out_dir / "multi_worker.json").write_text(json.dumps(result, indent=1))
    return result


def main(argv: list[str]) -> None:
    """python -m curate.testing.replicas OUT.json | --multi-worker DIR"""
    if argv[0] == "--multi-worker":
        print(json.dumps(multi_worker(Path(argv[1])), indent=1))
        return
    configure_cpus(2)
    compare(Path(argv[0]))


if __name__ == "__main__":
    main(sys.argv[1:])
