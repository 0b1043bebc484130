"""`curate generate`: images from a run's latest Gs (truncated in w), and an interpolation strip."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from curate.train.checkpoints import restore_gs
from curate.train.grids import grid_png
from curate.train.runfolder import load_run
from curate.train.steps import to_uint8


def generate_images(run_dir: str | os.PathLike, seeds: list[int], out_dir: str | os.PathLike,
                    psi: float | None = None, cutoff: int | None = None, steps: int = 8) -> dict[str, Any]:
    """One PNG per seed from the run's latest Gs (truncated), plus an interpolation strip through the seeds in w."""
    from curate.train.stylegan.networks import Generator
    from curate.train.stylegan.ops import tf
    from curate.train.stylegan.schedule import Schedule

    config, ds = load_run(run_dir)
    arch = config.arch(ds["height"], ds["width"])
    Gs = Generator(arch, seed=config.seed, name="Gs")
    nimg = restore_gs(run_dir, Gs)
    level, alpha = Schedule(config, arch.full_level).phase(nimg)
    psi = config.truncation_psi if psi is None else psi
    cutoff = config.truncation_cutoff if cutoff is None else cutoff
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    z = np.stack([np.random.RandomState(s).randn(arch.latent_size) for s in seeds]).astype(np.float32)
    ws = Gs.truncate(Gs.ws(tf.constant(z), level, tf.constant([0, 0], tf.int64)), psi, cutoff)
    full_h = 2 ** arch.full_level

    def render(w, noise_seed):
        seed = tf.constant([noise_seed, 0], tf.int64)
        return to_uint8(Gs.synthesis(w, level, tf.constant(alpha), seed).numpy())

    files = []
    for i, s in enumerate(seeds):
        path = out / f"seed{s:04d}.png"
        grid_png(render(ws[i:i + 1], s), 1, path, height=full_h)
        files.append(str(path))
    strip = None
    if len(seeds) > 1:
        t = np.linspace(0.0, 1.0, steps, endpoint=False, dtype=np.float32)
        frames = [ws[i] + (ws[i + 1] - ws[i]) * t[:, None, None] for i in range(len(seeds) - 1)] + [ws[-1:]]
        frames = tf.concat(frames, axis=0)
        # frame by frame with one noise seed, so that only w moves along the strip
        strip_imgs = np.concatenate([render(frames[i:i + 1], seeds[0]) for i in range(len(frames))])
        strip = out / "interpolation.png"
        grid_png(strip_imgs, len(strip_imgs), strip, height=full_h)
    return {"files": files, "strip": None if strip is None else str(strip), "level": level, "alpha": alpha,
            "psi": psi, "kimg": nimg / 1000}
