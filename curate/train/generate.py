"""`curate generate`: images from a run's latest Gs (truncated in w) or from PNGs that carry a latent,
and an interpolation strip through them; drawn by curate.explore's Explorer, as the explore app draws."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from curate.core.atomic import write_bytes
from curate.core.grid import upscale_to
from curate.explore.latent import png_bytes, read_png
from curate.explore.media import strip_png


def generate_images(run_dir: str | os.PathLike, seeds: Sequence[int], out_dir: str | os.PathLike,
                    psi: float | None = None, cutoff: int | None = None, steps: int = 8,
                    from_pngs: Sequence[str | os.PathLike] = (), progress: bool = False) -> dict[str, Any]:
    """One PNG per seed (seed<NNNN>.png) and per latent PNG given (<name>.png, its edits applied again),
    each carrying its latent, plus interpolation.png through all of them in w."""
    from curate.explore.interp import interpolate
    from curate.explore.model import Explorer

    ex = Explorer(run_dir, cutoff=cutoff)
    full_h = 2 ** ex.arch.full_level
    items = [(f"seed{s:04d}.png", ex.from_seed(s, psi), []) for s in seeds]
    for p in from_pngs:  # read them all first: a bad one stops the command before anything is written
        prov = read_png(p)
        items.append((f"{Path(p).stem}.png", ex.check(prov.latent), prov.edits))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items) + (len(items) > 1), desc="generate", unit="image")
    for name, latent, edits in items:
        image = upscale_to(ex.render([latent], edits), full_h)[0]
        write_bytes(out / name, png_bytes(image, latent, edits, run=ex.run_dir.name))
        files.append(str(out / name))
        if bar is not None:
            bar.update()
    strip = None
    if len(items) > 1:
        frames = []
        for (_, a, _), (_, b, _) in zip(items[:-1], items[1:]):
            frames += interpolate(ex, a, b, steps + 1, "w")[:-1]
        frames.append(items[-1][1])
        strip = out / "interpolation.png"
        write_bytes(strip, strip_png(upscale_to(ex.render(frames), full_h)))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    used = ex.from_seed(0, psi).psi
    return {"files": files, "strip": None if strip is None else str(strip), "level": ex.level, "alpha": ex.alpha,
            "psi": used, "kimg": ex.kimg}
