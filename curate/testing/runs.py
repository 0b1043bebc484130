"""Test helper: a run folder that `curate explore` and `curate generate` can open, written in seconds.

An untrained generator of the smoke config's shape, saved the way training saves Gs (config.json and a
tf.train.Checkpoint with Gs and the image counter), at an image count past the end of its schedule so
that it renders at its full size. Its weights are random but deterministic: the mechanics (latents,
interpolation, edits, feature maps) do not need a trained model.
"""

from __future__ import annotations

from pathlib import Path


def make_run(path: str | Path, height: int = 16, width: int = 8, seed: int = 0, config: str = "smoke",
             **settings) -> Path:
    """<path> as a run folder of a `height` x `width` generator of a config's shape; the path."""
    from curate.train.checkpoints import FOLDER
    from curate.train.runfolder import write_run_config
    from curate.train.stylegan.config import CONFIGS, replace
    from curate.train.stylegan.networks import Generator
    from curate.train.stylegan.ops import tf

    config = replace(CONFIGS[config], end_height=height, seed=seed, **settings).resolved(height, width)
    arch = config.arch(height, width)
    run = Path(path)
    run.mkdir(parents=True, exist_ok=True)
    Gs = Generator(arch, seed=seed, name="Gs")
    rng = tf.random.Generator.from_seed(seed + 1)
    # random styles, noise weights and biases too (training leaves none of them at their start values),
    # so that every part an edit or a feature map touches varies between images
    for v in Gs.variables:
        if "noise" in v.name or "bias" in v.name or "w_avg" in v.name:
            v.assign(rng.normal(v.shape) * 0.2)
    counters = tf.Module(name="counters")
    counters.nimg = tf.Variable(10 ** 9, dtype=tf.int64, trainable=False)
    tf.train.Checkpoint(Gs=Gs, counters=counters).save(str(run / FOLDER / "ckpt"))
    dataset = {"path": "", "height": height, "width": width, "count": 0, "labels": 0, "levels": []}
    write_run_config(run, config, dataset, [list(arch.size(lv)) for lv in range(2, arch.full_level + 1)])
    return run
