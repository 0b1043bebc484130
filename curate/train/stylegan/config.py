"""Network shapes and training configurations (NVlabs StyleGAN's defaults), importable without TensorFlow.

The tables are keyed by image height (512 means 512x256 for 2:1 data), as NVlabs keys them by the side
of a square image; a 512x256 step costs about half a 512x512 one, so the 1-GPU tables are conservative.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from typing import Any

from curate.core.settings import SettingError, parse_assignments, typed_changes


@dataclass(frozen=True)
class Arch:
    """The shape of both networks (NVlabs' defaults; smoke configs shrink fmap_base/fmap_max/latent)."""

    full_height: int = 512
    full_width: int = 256
    fmap_base: int = 8192
    fmap_decay: float = 1.0
    fmap_max: int = 512
    latent_size: int = 512
    dlatent_size: int = 512
    mapping_layers: int = 8
    mapping_fmaps: int = 512
    mapping_lrmul: float = 0.01
    fused_min: int = 128  # fused up/down convolutions from this many pixels on the short side
    mbstd_group: int = 4

    @property
    def full_level(self) -> int:
        """log2 of the full height."""
        return self.full_height.bit_length() - 1

    @property
    def aspect(self) -> int:
        """Height / width (2 for 512x256)."""
        return self.full_height // self.full_width

    def size(self, level: int) -> tuple[int, int]:
        """(H, W) of a level."""
        return 2 ** level, 2 ** level // self.aspect

    def nf(self, stage: int) -> int:
        """Feature maps at a stage (stage = level - 1): min(fmap_base / 2**stage, fmap_max)."""
        return max(1, min(int(self.fmap_base / (2.0 ** (stage * self.fmap_decay))), self.fmap_max))

    def num_layers(self, level: int | None = None) -> int:
        """Style inputs (two per level) up to `level` (default: the full network)."""
        return 2 * ((self.full_level if level is None else level) - 1)

    def fused(self, level: int) -> bool:
        """Whether the up/down convolution at this level is fused."""
        return min(self.size(level)) >= self.fused_min


# NVlabs stylegan train.py, one GPU
NVLABS_MINIBATCH = {4: 128, 8: 128, 16: 128, 32: 64, 64: 32, 128: 16, 256: 8, 512: 4}
NVLABS_LRATE = {128: 0.0015, 256: 0.002, 512: 0.003, 1024: 0.003}
NVLABS_TICK_KIMG = {4: 160, 8: 140, 16: 120, 32: 100, 64: 80, 128: 60, 256: 40, 512: 30, 1024: 20}

# `precision` -> the dtype the generator's synthesis and the discriminator compute in (variables, Adam,
# Gs, the losses and the mapping network stay float32 in every case)
PRECISIONS = {"float32": "float32", "mixed_float16": "float16", "mixed_bfloat16": "bfloat16"}


@dataclass(frozen=True)
class TrainConfig:
    """Everything a run depends on; saved resolved as config.json in the run folder."""

    name: str = "stylegan-512x256"
    # networks: flat here so `--set fmap_max=256` works; the defaults are Arch's, in one place
    fmap_base: int = Arch.fmap_base
    fmap_decay: float = Arch.fmap_decay
    fmap_max: int = Arch.fmap_max
    latent_size: int = Arch.latent_size
    dlatent_size: int = Arch.dlatent_size
    mapping_layers: int = Arch.mapping_layers
    mapping_fmaps: int = Arch.mapping_fmaps
    mapping_lrmul: float = Arch.mapping_lrmul
    fused_min: int = Arch.fused_min
    mbstd_group: int = Arch.mbstd_group
    # progressive growing
    start_height: int = 0  # 0: from the records' shape, 4 for square (4x4, NVlabs), 8 for 2:1 (8x4)
    end_height: int = 0  # 0: the records' full height
    training_kimg: float = 600.0  # stabilise phase per level
    transition_kimg: float = 600.0  # fade-in phase per level
    total_kimg: float = 25000.0
    minibatch: dict[int, int] = field(default_factory=lambda: dict(NVLABS_MINIBATCH))
    minibatch_base: int = 4
    lrate_base: float = 0.001
    g_lrate: dict[int, int | float] = field(default_factory=lambda: dict(NVLABS_LRATE))
    d_lrate: dict[int, int | float] = field(default_factory=lambda: dict(NVLABS_LRATE))
    tick_kimg: dict[int, int | float] = field(default_factory=lambda: dict(NVLABS_TICK_KIMG))
    tick_kimg_base: float = 160.0
    # optimisation and losses
    adam_beta1: float = 0.0
    adam_beta2: float = 0.99
    adam_epsilon: float = 1e-8
    r1_gamma: float = 10.0
    style_mixing: float = 0.9
    ema_kimg: float = 10.0  # half-life of the generator average Gs
    w_avg_beta: float = 0.995
    mirror_augment: bool = True
    # precision: mixed_* runs both networks in 16 bits (for GPUs with 16-bit tensor cores; see PRECISIONS)
    precision: str = "float32"
    # dynamic loss scaling (mixed_float16 only): the scale starts here, halves on every step whose
    # gradients overflow (that step is skipped), and doubles after this many steps without overflow
    loss_scale_init: float = 32768.0
    loss_scale_growth_steps: int = 2000
    # sampling (generate only; the tick grids are untruncated as in NVlabs)
    truncation_psi: float = 0.7
    truncation_cutoff: int = 8
    # runs
    seed: int = 1000
    shuffle_buffer: int = 4096
    snapshot_ticks: int = 10
    keep_checkpoints: int = 5
    grid_cols: int = 8
    grid_rows: int = 4
    swd_images: int = 1024  # 0: no SWD
    swd_ticks: int = 1
    fid_weights: str = ""  # a Keras model file (Inception pool features); empty: no FID
    fid_images: int = 5000
    fid_ticks: int = 10
    xla: bool = False
    # devices: "1" one device (no tf.distribute), "auto" every GPU, or a count; under TF_CONFIG, every GPU
    # of each worker (curate.train.replicas). The global minibatch is split: it must divide by replicas x mbstd_group
    replicas: str = "1"

    def resolved(self, full_height: int, full_width: int) -> TrainConfig:
        """The config with start_height 0 resolved for records of this size (4x4 for square, 8x4 for 2:1)."""
        if self.start_height:
            return self
        return dataclasses.replace(self, start_height=4 if full_height == full_width else 8)

    def arch(self, full_height: int, full_width: int) -> Arch:
        """The network shape for a dataset of this full size (cut at end_height when set)."""
        h = self.end_height or full_height
        knobs = {f.name: getattr(self, f.name) for f in fields(Arch) if f.name not in ("full_height", "full_width")}
        return Arch(full_height=h, full_width=h * full_width // full_height, **knobs)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (table keys as strings)."""
        return {k: ({str(a): b for a, b in v.items()} if isinstance(v, dict) else v)
                for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of to_json; unknown keys are an error."""
        return replace(cls(), **d)


# keys that may change when a run resumes: they do not change what a step computes (replicas: only
# to float rounding, the same global batch split another way)
RESUMABLE = {"total_kimg", "snapshot_ticks", "keep_checkpoints", "swd_images", "swd_ticks", "fid_weights",
             "fid_images", "fid_ticks", "grid_cols", "grid_rows", "replicas"}

CONFIGS: dict[str, TrainConfig] = {
    # NVlabs defaults on 512x256 records: 8x4 -> 512x256, 600 + 600 kimg per level, 25M images
    "stylegan-512x256": TrainConfig(),
    # the same, stopping at 256x128 (records may still be 512x256)
    "stylegan-256x128": TrainConfig(name="stylegan-256x128", end_height=256),
    # CPU in minutes: tiny widths, 8x4 -> 32x16, 1 kimg per phase
    "smoke": TrainConfig(
        name="smoke", fmap_base=256, fmap_max=32, latent_size=32, dlatent_size=32, mapping_fmaps=32,
        end_height=32, training_kimg=1.0, transition_kimg=1.0, total_kimg=5.0, minibatch={}, minibatch_base=16,
        g_lrate={}, d_lrate={}, lrate_base=0.002, tick_kimg={}, tick_kimg_base=0.5, shuffle_buffer=256,
        snapshot_ticks=2, keep_checkpoints=2, swd_images=128, swd_ticks=2),
}


def replace(config: TrainConfig, **changes: Any) -> TrainConfig:
    """A copy with changes, each converted to the field's type by msgspec (tables: JSON objects keyed by height)."""
    if isinstance(changes.get("replicas"), int) and not isinstance(changes["replicas"], bool):
        changes = {**changes, "replicas": str(changes["replicas"])}  # --set replicas=2 reads as a number
    out = dataclasses.replace(config, **typed_changes(TrainConfig, changes))
    check(out)
    return out


def parse_set(items: list[str]) -> dict[str, Any]:
    """`key=value` strings -> values, read by the one --set grammar (curate.core.settings)."""
    return parse_assignments(items)


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def check(c: TrainConfig) -> None:
    """SettingError (a ValueError) when settings contradict each other."""
    if c.start_height and (not _pow2(c.start_height) or c.start_height < 4):
        raise SettingError(f"start_height {c.start_height} must be a power of two >= 4, or 0 for the records' shape")
    if c.end_height and (not _pow2(c.end_height) or c.end_height < c.start_height):
        raise SettingError(f"end_height {c.end_height} must be a power of two >= start_height, or 0 for full size")
    if c.training_kimg < 0 or c.transition_kimg < 0 or c.training_kimg + c.transition_kimg <= 0:
        raise SettingError("training_kimg and transition_kimg must be >= 0 and not both 0")
    if c.total_kimg <= 0:
        raise SettingError("total_kimg must be > 0")
    for k in ("minibatch", "g_lrate", "d_lrate", "tick_kimg"):
        for h, v in getattr(c, k).items():
            if not _pow2(h) or not isinstance(v, (int, float)) or v <= 0:
                raise SettingError(f"{k}: {h}: {v} is not a positive value for a power-of-two height")
    for h, mb in list(c.minibatch.items()) + [(0, c.minibatch_base)]:
        if not isinstance(mb, int) or mb % min(mb, c.mbstd_group):
            raise SettingError(f"minibatch {mb} (height {h or 'base'}) must be an integer multiple of mbstd_group")
    if not 0 <= c.style_mixing <= 1:
        raise SettingError("style_mixing is a probability in [0, 1]")
    if c.precision not in PRECISIONS:
        raise SettingError(f"precision {c.precision!r} is not one of {', '.join(PRECISIONS)}")
    if c.replicas != "auto" and not (c.replicas.isdigit() and int(c.replicas) >= 1):
        raise SettingError(f"replicas {c.replicas!r} must be auto (every GPU) or a device count >= 1")
    if c.loss_scale_init < 1 or c.loss_scale_growth_steps < 1:
        raise SettingError("loss_scale_init must be >= 1 and loss_scale_growth_steps >= 1")


