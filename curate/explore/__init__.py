"""`curate explore`: the trained generator as a toy — generate, interpolate, attribute directions,
feature maps and local edits (the seed's model tool). The Python API behind `curate explore RUN` (the
browser app) and `curate generate --from PNG`.

    from curate.explore import Explorer, Edit
    ex = Explorer("runs/00003-stylegan-512x256")
    a, b = ex.from_seed(1), ex.from_seed(2)
    open("a.png", "wb").write(ex.png(a))              # the PNG carries a's latent
    images = ex.render([a], [Edit(level=5, channels=(3, 17), region=(0.2, 0.1, 0.8, 0.4), multiplier=4)])

TensorFlow loads only when an Explorer is made; the rest of the package is NumPy and Pillow.
"""

from __future__ import annotations

from curate.explore.latent import Edit, ExploreError, Latent

__all__ = ["Direction", "Edit", "Explorer", "ExploreError", "Latent"]


def __getattr__(name: str):
    if name == "Explorer":
        from curate.explore.model import Explorer

        return Explorer
    if name == "Direction":
        from curate.explore.directions import Direction

        return Direction
    raise AttributeError(name)
