"""Interpolation between two images: linear in W (the mapping's output) or spherical in Z (its input).

The end frames are the two images themselves, bit for bit: the first frame is `a` and the last is `b`,
not a recomputation of them. The frames before the middle take a's noise seed, the rest b's.
"""

from __future__ import annotations

import numpy as np

from curate.explore.latent import ExploreError, Latent

SPACES = ("w", "z")


def slerp(z0: np.ndarray, z1: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation (Shoemake) of two vectors; linear when they are (anti)parallel."""
    a, b = z0.astype(np.float64), z1.astype(np.float64)
    cos = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12)
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if np.sin(omega) < 1e-6:
        return ((1 - t) * a + t * b).astype(np.float32)
    return ((np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / np.sin(omega)).astype(np.float32)


def interpolate(ex, a: Latent, b: Latent, frames: int, space: str = "w") -> list[Latent]:
    """`frames` latents from a to b (both included); Z needs both images' z (they came from seeds or z)."""
    if space not in SPACES:
        raise ExploreError(f"interpolate in {' or '.join(SPACES)}, not {space!r}")
    if frames < 2:
        raise ExploreError("an interpolation needs at least 2 frames")
    ex.check(a), ex.check(b)
    ts = np.linspace(0.0, 1.0, frames)
    out = [a]
    for t in ts[1:-1]:
        noise = a.noise if t < 0.5 else b.noise
        if space == "w":
            w = ((1.0 - t) * a.w + t * b.w).astype(np.float32)
            out.append(Latent(w=w, psi=a.psi, noise=noise))
        else:
            if a.z is None or b.z is None:
                raise ExploreError("Z interpolation needs both images' z: one of them was moved or edited in W; use W")
            out.append(ex.from_z(slerp(a.z, b.z, float(t)), (1.0 - t) * a.psi + t * b.psi, noise=noise))
    return out + [b]
