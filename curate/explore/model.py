"""Explorer: a run's latest Gs, loaded once, and the few operations every explore function is made of.

Every image is rendered alone (a batch of one), so an image depends on its latent and edits only, never
on what else was asked for with it: the Noise layers draw per-batch noise from one seed. Rendering and
feature maps are tf.functions traced once per set of edited levels; an edit enters the synthesis
network through its hook (Synthesis.blocks), and without edits the traced ops are those of training.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from curate.explore.latent import Edit, ExploreError, Latent, png_bytes
from curate.train.runfolder import TrainError


class Explorer:
    """The generator of one run at the level (and fade-in) its latest checkpoint reached."""

    def __init__(self, run_dir: str | os.PathLike, cutoff: int | None = None):
        from curate.train.checkpoints import restore_gs
        from curate.train.runfolder import load_run
        from curate.train.stylegan.networks import Generator
        from curate.train.stylegan.ops import tf
        from curate.train.stylegan.schedule import Schedule

        self.tf = tf
        self.run_dir = Path(run_dir)
        try:
            self.config, self.dataset = load_run(run_dir)
            self.arch = self.config.arch(self.dataset["height"], self.dataset["width"])
            self.Gs = Generator(self.arch, seed=self.config.seed, name="Gs")
            nimg = restore_gs(run_dir, self.Gs)
        except TrainError as e:
            raise ExploreError(str(e)) from None
        self.kimg = nimg / 1000
        self.level, self.alpha = Schedule(self.config, self.arch.full_level).phase(nimg)
        self.height, self.width = self.arch.size(self.level)
        self.num_layers = self.arch.num_layers(self.level)
        self.cutoff = self.config.truncation_cutoff if cutoff is None else int(cutoff)  # layers psi applies to
        self.dlatent_size = self.arch.dlatent_size
        self._render = tf.function(self._render_fn, reduce_retracing=True)
        self._maps = tf.function(self._maps_fn, reduce_retracing=True)
        self._mapping = tf.function(self._mapping_fn, reduce_retracing=True)

    # ---- latents ---------------------------------------------------------------------------------

    def levels(self) -> list[dict[str, int]]:
        """The synthesis resolutions an edit or a feature map can use: 4x2 (level 2) up to the image's."""
        return [{"level": lv, "height": self.arch.size(lv)[0], "width": self.arch.size(lv)[1],
                 "channels": self.arch.nf(lv - 1)} for lv in range(2, self.level + 1)]

    def z_of_seed(self, seed: int) -> np.ndarray:
        """The z of a seed, as curate generate draws it."""
        return np.random.RandomState(seed).randn(self.arch.latent_size).astype(np.float32)

    def from_seed(self, seed: int, psi: float | None = None, noise: int = 0) -> Latent:
        """The latent of a seed, truncated by psi (default: the run's truncation_psi)."""
        return self.from_z(self.z_of_seed(int(seed)), psi, noise=noise, seed=int(seed))

    def from_z(self, z: np.ndarray, psi: float | None = None, noise: int = 0, seed: int | None = None) -> Latent:
        """The latent of a z [latent_size]: mapped, broadcast to every layer and truncated."""
        z = np.asarray(z, np.float32).reshape(self.arch.latent_size)
        psi = float(self.config.truncation_psi if psi is None else psi)
        w = self._mapping(self.tf.constant(z[None]), self.tf.constant(psi, self.tf.float32)).numpy()[0]
        return Latent(w=w, z=z, seed=seed, psi=psi, noise=int(noise))

    def _mapping_fn(self, z, psi):
        ws = self.Gs.ws(z, self.level, self.tf.constant([0, 0], self.tf.int64))
        return self.Gs.truncate(ws, psi, self.cutoff)

    def check(self, latent: Latent) -> Latent:
        """The latent, or ExploreError when it was made for another network shape."""
        want = (self.num_layers, self.dlatent_size)
        if tuple(latent.w.shape) != want:
            raise ExploreError(f"this latent's w is {list(latent.w.shape)}, the run's generator takes {list(want)}: "
                               "it comes from another run or level")
        return latent

    # ---- synthesis -------------------------------------------------------------------------------

    def _deltas(self, edits: Sequence[Edit]) -> dict[str, Any]:
        """{"L<level>": [h, w, C] float32} summed over the edits that do anything (multiplier != 0)."""
        out: dict[str, np.ndarray] = {}
        for e in edits:
            if e.multiplier == 0:
                continue
            if not 2 <= e.level <= self.level:
                raise ExploreError(f"an edit's level {e.level} is not one of this run's (2 to {self.level})")
            h, w = self.arch.size(e.level)
            c = self.arch.nf(e.level - 1)
            bad = [ch for ch in e.channels if not 0 <= ch < c]
            if bad:
                raise ExploreError(f"level {e.level} has channels 0 to {c - 1}, not {bad[0]}")
            onehot = np.zeros(c, np.float32)
            onehot[list(e.channels)] = 1.0
            d = e.mask(h, w)[:, :, None] * onehot[None, None, :] * np.float32(e.multiplier)
            key = f"L{e.level}"
            out[key] = out[key] + d if key in out else d
        return {k: self.tf.constant(v) for k, v in sorted(out.items())}

    def _hook(self, deltas):
        if not deltas:
            return None

        def hook(level, x):
            d = deltas.get(f"L{level}")
            return x if d is None else x + self.tf.cast(d, x.dtype)[None]

        return hook

    def _render_fn(self, ws, noise, deltas):
        tf = self.tf
        img = self.Gs.synthesis(ws, self.level, tf.constant(self.alpha, tf.float32), noise, hook=self._hook(deltas))
        return tf.cast(tf.clip_by_value(tf.round((img + 1.0) * 127.5), 0, 255), tf.uint8)

    def _maps_fn(self, ws, noise, deltas, upto):
        _, x = self.Gs.synthesis.blocks(ws, self.level, noise, hook=self._hook(deltas), upto=upto)
        return self.tf.cast(x, self.tf.float32)

    def _inputs(self, latent: Latent):
        tf = self.tf
        self.check(latent)
        return tf.constant(latent.w[None]), tf.constant([latent.noise, 0], tf.int64)

    def render(self, latents: Sequence[Latent], edits: Sequence[Edit] = ()) -> np.ndarray:
        """uint8 [N, H, W, 3]: each latent's image with the edits applied."""
        deltas = self._deltas(edits)
        out = [self._render(*self._inputs(lat), deltas).numpy()[0] for lat in latents]
        return np.stack(out) if out else np.zeros((0, self.height, self.width, 3), np.uint8)

    def feature_maps(self, latent: Latent, level: int, edits: Sequence[Edit] = ()) -> np.ndarray:
        """float32 [C, h, w]: the output of synthesis `level` (after its second style modulation)."""
        if not 2 <= int(level) <= self.level:
            raise ExploreError(f"level {level} is not one of this run's synthesis levels (2 to {self.level})")
        x = self._maps(*self._inputs(latent), self._deltas(edits), int(level)).numpy()[0]
        return np.ascontiguousarray(np.moveaxis(x, -1, 0))

    def png(self, latent: Latent, edits: Sequence[Edit] = ()) -> bytes:
        """The rendered image as a PNG that carries its latent, its edits and the run's name."""
        return png_bytes(self.render([latent], edits)[0], latent, list(edits), run=self.run_dir.name)
