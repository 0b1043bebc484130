"""Training on JAX, checked in a fresh interpreter (Keras reads KERAS_BACKEND once, at its first import).

    python -m curate.testing.jax_training DATASET_DIR WORK_DIR OUT.json

writes one JSON object (tests/test_train_jax.py asserts on it):

  descent   with the other network frozen (its learning rate 0), 30 steps at 8x4 on one minibatch and five
            step numbers' draws, repeated: each network's loss, step by step (it must fall)
  run       the smoke config cut to 8x4 -> 16x8 and 0.16 kimg (SETS), end to end through run_training: its
            summary, the files in the run folder, config.json's backend
  resume    the same run stopped after 2 ticks and resumed: whether its stats lines (timings left out)
            and its final checkpoint equal the uninterrupted run's, and the largest difference
  bfloat16  precision=mixed_bfloat16 against float32: the dtype of the 8x4 features, the image and
            D's scores, and five steps' losses of each
  tensorflow_imported   whether anything above imported TensorFlow (it must not)

JAX's persistent compilation cache (in WORK_DIR) lets the second and third runs reuse the first's
compiled steps, as a user's resumed run can with JAX_COMPILATION_CACHE_DIR.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

TIMING = ("img_per_s", "sec_per_tick", "total_seconds", "metric_seconds")
# tests/test_train.py's run: 8x4 stable for 64 images, 16x8 faded in over 64, then stable: 5 ticks of 32
# images, minibatch 8 (one compiled step per level, shared by every run here through the cache)
SETS = {"end_height": 16, "training_kimg": 0.064, "transition_kimg": 0.064, "total_kimg": 0.16, "minibatch_base": 8,
        "tick_kimg_base": 0.032, "snapshot_ticks": 1, "swd_images": 16, "swd_ticks": 2, "grid_cols": 4,
        "grid_rows": 2}


def descent(dataset: str) -> dict[str, list[float]]:
    """Each network's loss over 30 steps with the other frozen (lr 0), one minibatch, five draws in turn."""
    import jax
    import numpy as np

    from curate.train.data import open_dataset
    from curate.train.phases import Phases
    from curate.train.portable.trainer import PortableTrainer
    from curate.train.stylegan.config import CONFIGS, replace

    trainer = PortableTrainer(replace(CONFIGS["smoke"], **SETS), open_dataset(dataset), "jax")
    Phases(trainer).start()
    start = jax.device_get(trainer.state)
    level = trainer.schedule.start_level
    step, batch = trainer.step_fn(level), next(trainer.data_stream(level, 0))
    lr = trainer.schedule.lrates(level)[0]
    out = {}
    for net, lr_g, lr_d in (("d", 0.0, lr), ("g", lr, 0.0)):
        state, losses = trainer.step_module.to_device(start), []
        for i in range(30):
            state, o = step(state, batch, np.float32(1.0), np.int64(i % 5), np.float32(lr_g), np.float32(lr_d))
            losses.append(float(o[f"loss_{net}"]))
        out[net] = losses
    return out


def bfloat16(dataset: str) -> dict:
    """precision=mixed_bfloat16: the dtypes inside G and D, and five steps' losses next to float32's."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from curate.train.data import open_dataset
    from curate.train.phases import Phases
    from curate.train.portable.trainer import PortableTrainer
    from curate.train.stylegan.config import CONFIGS, replace

    out = {}
    for precision in ("float32", "mixed_bfloat16"):
        trainer = PortableTrainer(replace(CONFIGS["smoke"], precision=precision, **SETS), open_dataset(dataset), "jax")
        Phases(trainer).start()
        level = trainer.schedule.start_level
        batch, lr = next(trainer.data_stream(level, 0)), trainer.schedule.lrates(level)[0]
        step, losses = trainer.step_fn(level), []
        for i in range(5):
            trainer.state, o = step(trainer.state, batch, np.float32(1.0), np.int64(i), np.float32(lr), np.float32(lr))
            losses.append({k: float(v) for k, v in o.items()})
        # what the networks compute in (traced abstractly, nothing compiled): the features after the
        # first level, the image, D's scores
        import keras

        from curate.train.portable.jax_step import Forward, _bound

        fwd = Forward(trainer, level)

        def probe(g, d):
            ws = fwd.mixed_ws(g, jnp.zeros([8, trainer.arch.latent_size]), jax.random.PRNGKey(0), 0.0)
            noise = fwd.noise(jax.random.PRNGKey(1), 8)
            with keras.StatelessScope(state_mapping=_bound(trainer.g_vars, g)):
                _, x = trainer.G.synthesis.blocks(ws, level, noise=noise)
            images = fwd.synthesis(g, ws, 1.0, noise)
            return x, images, fwd.discriminator(d, images, 1.0)

        x, images, scores = jax.eval_shape(probe, trainer.state["G"], trainer.state["D"])
        out[precision] = {"losses": losses, "features": str(x.dtype), "image": str(images.dtype),
                          "scores": str(scores.dtype)}
    return out


def _stats(run_dir: str) -> list[dict]:
    lines = [json.loads(x) for x in (Path(run_dir) / "stats.jsonl").read_text().splitlines()]
    return [{k: v for k, v in s.items() if k not in TIMING} for s in lines]


def _checkpoint(run_dir: str) -> dict:
    import numpy as np

    from curate.train.portable.trainer import portable_checkpoints

    with np.load(portable_checkpoints(run_dir)[-1]) as f:
        return {k: f[k] for k in f.files if not k.startswith("counters/seconds")}


def runs(dataset: str, work: Path) -> tuple[dict, dict]:
    """The cut smoke run end to end, and the same run stopped after 2 ticks and resumed."""
    import numpy as np

    from curate.train.run import run_training
    from curate.train.stylegan.config import CONFIGS, replace

    config = replace(CONFIGS["smoke"], **SETS)
    quiet = dict(progress=False, echo=lambda s: None, backend="jax")
    full = run_training(config, dataset, runs_dir=work / "full", **quiet)
    run_dir = Path(full["run_dir"])
    run = {"summary": {k: full[k] for k in ("kimg", "ticks", "finished", "start", "end")},
           "files": sorted(p.name for p in run_dir.iterdir()),
           "checkpoints": sorted(p.name for p in (run_dir / "checkpoints").iterdir()),
           "backend": json.loads((run_dir / "config.json").read_text()).get("backend"),
           "last": {k: full["last"][k] for k in ("height", "width", "alpha", "loss_g", "loss_d", "swd")}}
    part = run_training(config, dataset, runs_dir=work / "part", stop_after_ticks=2, **quiet)
    rest = run_training(config, None, resume=part["run_dir"], **quiet)
    a, b = _checkpoint(full["run_dir"]), _checkpoint(rest["run_dir"])
    diff = max(float(np.max(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64))))
               for k in a if a[k].dtype.kind == "f")
    resume = {"ticks_first": part["ticks"], "resumed_from_kimg": rest["resumed_from_kimg"],
              "finished": rest["finished"], "stats_equal": _stats(full["run_dir"]) == _stats(rest["run_dir"]),
              "same_keys": sorted(a) == sorted(b), "max_diff": diff}
    return run, resume


def main(argv: list[str]) -> None:
    dataset, work, out = argv[0], Path(argv[1]), Path(argv[2])
    os.environ["KERAS_BACKEND"] = "jax"
    import jax

    jax.config.update("jax_compilation_cache_dir", str(work / "jax-cache"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    result = {"descent": descent(dataset), "bfloat16": bfloat16(dataset)}
    result["run"], result["resume"] = runs(dataset, work)
    # the machine this backend is for has no TensorFlow: nothing on the way may have imported it
    result["tensorflow_imported"] = "tensorflow" in sys.modules
    out.write_text(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
