"""The trainer for Keras 3 backends other than TensorFlow: the portable networks, a pytree state and a
per-backend step module, behind the interface curate.train.run's tick loop drives (the TF `Trainer`'s).

    trainer.train_step(level, alpha, reals_u8) -> losses      one step; advances the counters
    trainer.generate(z, level, alpha, seed) -> uint8 NHWC     Gs images (grids, SWD)
    trainer.data_stream(level, position), trainer.reals(level, n)
    trainer.counters, trainer.opt_g.reset(), trainer.copy_g_to_gs(), trainer.scale_d.scale (None)

Data comes from the memmap reader (curate.dataset.levels), never tf.data, so nothing here imports
TensorFlow: this is what runs on a machine without it. Its stream is a full shuffle per epoch
(levels.epoch_order), a pure function of the position like the TF trainer's, but not the same order.
Checkpoints are .npz files (`PortableCheckpoints`) that name the backend that wrote them.

Backends with a step module: jax (curate.train.portable.jax_step). float32 and mixed_bfloat16 (no loss
scaling needed); mixed_float16 is the TF trainer's only.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from curate.core.atomic import atomic_path
from curate.train.checkpoints import FOLDER
from curate.train.data import DatasetInfo
from curate.train.runfolder import TrainError
from curate.train.steps import COUNTERS, check_levels, to_uint8
from curate.train.stylegan.config import TrainConfig

STEP_MODULES = {"jax": "curate.train.portable.jax_step"}
CHECKPOINT_FORMAT = 1


class Counter:
    """One run counter with the methods the tick loop calls on the TF trainer's tf.Variables."""

    def __init__(self, value=0, dtype=np.int64):
        self.dtype = dtype
        self.value = dtype(value)

    def numpy(self):
        return self.value

    read_value = numpy

    def assign(self, value) -> None:
        self.value = self.dtype(value)

    def assign_add(self, value) -> None:
        self.value = self.dtype(self.value + value)


class Counters:
    """The run's position, as the TF trainer's counters module: images, steps, ticks, phase, seconds."""

    def __init__(self):
        for name in COUNTERS:
            setattr(self, name, Counter())
        self.seconds = Counter(0.0, np.float64)

    def state(self) -> dict[str, np.ndarray]:
        return {name: np.asarray(getattr(self, name).value) for name in (*COUNTERS, "seconds")}

    def load(self, values: dict[str, np.ndarray]) -> None:
        for name in (*COUNTERS, "seconds"):
            getattr(self, name).assign(values[name])


class _NoLossScale:
    scale = None  # float32 only: the tick loop records loss scales when this is set


class _AdamReset:
    """`opt.reset()` for the phase changes (curate.train.phases): zero one network's Adam in the state."""

    def __init__(self, trainer, key: str):
        self.trainer, self.key = trainer, key

    def reset(self) -> None:
        t = self.trainer
        sm = t.step_module
        t.state[self.key] = sm.to_device(sm.adam_init(t.state[{"adam_g": "G", "adam_d": "D"}[self.key]]))


def backend_name() -> str:
    """The Keras backend this process runs (KERAS_BACKEND, read when keras is first imported)."""
    import keras

    return keras.backend.backend()


class PortableTrainer:
    """Networks, a state pytree, counters and the per-level jitted step of one non-TF Keras backend."""

    def __init__(self, config: TrainConfig, data: DatasetInfo, backend: str):
        from curate.train.portable.networks import Discriminator, Generator
        from curate.train.portable.ops import variables_by_path, weights
        from curate.train.stylegan.schedule import Schedule

        if backend not in STEP_MODULES:
            raise TrainError(f"the {backend} backend has no training step yet; use --backend jax or tensorflow")
        if backend_name() != backend:
            raise TrainError(f"Keras runs on {backend_name()} in this process, not {backend}; "
                             f"set KERAS_BACKEND={backend} before anything imports keras")
        if config.precision == "mixed_float16":  # float16 needs dynamic loss scaling, not written for JAX yet
            raise TrainError("precision=mixed_float16 is TensorFlow-only so far; use --backend tensorflow, "
                             "or precision=mixed_bfloat16 or float32")
        if config.replicas != "1":
            raise TrainError(f"replicas={config.replicas} is TensorFlow-only so far; use --backend tensorflow or replicas=1")
        if config.fid_weights:
            raise TrainError("FID reads a Keras model with TensorFlow; leave fid_weights empty with --backend "
                             f"{backend} (SWD still runs)")
        import importlib

        config = config.resolved(data.height, data.width)
        self.backend, self.config, self.data = backend, config, data
        self.step_module = importlib.import_module(STEP_MODULES[backend])
        self.arch = config.arch(data.height, data.width)
        self._check_levels()
        self.schedule = Schedule(config, self.arch.full_level)
        self.replicas = 1
        from curate.train.stylegan.config import PRECISIONS

        dtype = None if config.precision == "float32" else PRECISIONS[config.precision]
        self.G = Generator(self.arch, seed=config.seed, compute_dtype=dtype)
        self.D = Discriminator(self.arch, seed=config.seed + 1, compute_dtype=dtype)
        self.Gs = Generator(self.arch, seed=config.seed)  # samples in float32 whatever G trains in
        self.g_vars = {k: v for k, v in variables_by_path(self.G).items() if k != "w_avg"}
        self.gs_vars = {k: v for k, v in variables_by_path(self.Gs).items() if k != "w_avg"}
        self.d_vars = variables_by_path(self.D)
        g, d = weights(self.G), weights(self.D)
        w_avg = g.pop("w_avg")
        sm = self.step_module
        self.state = sm.to_device({"G": g, "D": d, "Gs": dict(g), "w_avg": w_avg, "gs_w_avg": w_avg,
                                   "adam_g": sm.adam_init(g), "adam_d": sm.adam_init(d)})
        self.counters = Counters()
        self.opt_g, self.opt_d = _AdamReset(self, "adam_g"), _AdamReset(self, "adam_d")
        self.scale_g = self.scale_d = _NoLossScale()
        self._steps: dict = {}
        self._samplers: dict = {}
        self._levels: dict = {}

    def _check_levels(self) -> None:
        check_levels(self.data, self.arch, self.config)

    def copy_g_to_gs(self) -> None:
        """Gs starts as a copy of G (a new run)."""
        sm = self.step_module  # to_device copies: Gs gets buffers of its own (the step donates them)
        self.state["Gs"] = sm.to_device(self.state["G"])
        self.state["gs_w_avg"] = sm.to_device(self.state["w_avg"])

    # -- the step
    def step_fn(self, level: int):
        """The jitted step at a level: step(state, reals_u8, alpha, step_number, lr_g, lr_d) -> (state, losses)."""
        if level not in self._steps:
            self._steps[level] = self.step_module.make_step(self, level)
        return self._steps[level]

    def train_step(self, level: int, alpha: float, reals_u8) -> dict:
        """One step on a minibatch at the current step number; advances the step and image counters."""
        lr_g, lr_d = self.schedule.lrates(level)
        cnt = self.counters
        self.state, out = self.step_fn(level)(self.state, reals_u8, np.float32(alpha), np.int64(cnt.step.value),
                                              np.float32(lr_g), np.float32(lr_d))
        cnt.step.assign_add(1)
        cnt.nimg.assign_add(self.schedule.minibatch(level))
        return out

    # -- sampling
    def generate(self, z: np.ndarray, level: int, alpha: float, seed: int, batch: int = 32) -> np.ndarray:
        """uint8 NHWC images from Gs at a level."""
        sm = self.step_module
        if level not in self._samplers:
            self._samplers[level] = sm.make_sampler(self, level)
        sample, out = self._samplers[level], []
        for i in range(0, len(z), batch):
            x = sample(self.state["Gs"], self.state["gs_w_avg"], np.asarray(z[i:i + batch], np.float32),
                       np.float32(alpha), sm.seed_key(seed, i))
            out.append(to_uint8(np.asarray(x)))
        return np.concatenate(out)

    def latents(self, n: int, seed: int) -> np.ndarray:
        """n fixed float32 latents from a seed (the TF trainer's draw: the same grid latents on every backend)."""
        return np.random.RandomState(seed).randn(n, self.arch.latent_size).astype(np.float32)

    # -- data
    def level(self, level: int):
        from curate.dataset.levels import open_level

        if level not in self._levels:
            self._levels[level] = open_level(self.data.files[level])
        return self._levels[level]

    def data_stream(self, level: int, position: int):
        """uint8 [mb, H, W, 3] minibatches of a level from `position` on (memmap reader, one shuffle per epoch)."""
        from curate.dataset.levels import minibatches

        return minibatches(self.level(level), position, self.schedule.minibatch(level), self.config.seed)

    def reals(self, level: int, n: int) -> np.ndarray:
        """The first n records of a level (uint8 NHWC), for grids and metrics."""
        lv = self.level(level)
        return lv.images(np.arange(min(n, len(lv))))

    # -- checkpoint state
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Everything a checkpoint holds, flat: 'G/synthesis.conv1.3.w', 'adam_g/m/...', 'counters/nimg'."""
        tree = {**self.step_module.to_host(self.state), "counters": self.counters.state()}
        return {k: np.asarray(v) for k, v in _flatten(tree).items()}

    def load_state_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of state_arrays (ValueError when the paths or shapes are not this trainer's)."""
        mine = _flatten({**self.state, "counters": self.counters.state()})  # shapes only: nothing copied
        if set(mine) != set(arrays):
            missing, extra = sorted(set(mine) - set(arrays)), sorted(set(arrays) - set(mine))
            raise ValueError(f"missing {missing[:3]}, unexpected {extra[:3]}")
        bad = [k for k in mine if mine[k].shape != arrays[k].shape]
        if bad:
            raise ValueError(f"{bad[0]} has shape {arrays[bad[0]].shape}, the network's is {mine[bad[0]].shape}")
        state: dict = {}
        for k, v in arrays.items():
            if k.startswith("counters/"):
                continue
            node, parts = state, k.split("/")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = v
        self.state = self.step_module.to_device(state)
        self.counters.load({k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("counters/")})


def _flatten(tree: dict, prefix: str = "") -> dict:
    """Nested dicts -> {'a/b/c': leaf}."""
    out = {}
    for k, v in tree.items():
        path = f"{prefix}/{k}" if prefix else k
        out.update(_flatten(v, path) if isinstance(v, dict) else {path: v})
    return out


_CKPT = re.compile(r"^ckpt-(\d+)\.npz$")


def portable_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """A run folder's .npz checkpoints, oldest first."""
    folder = Path(run_dir) / FOLDER
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _CKPT.match(p.name))]
    return [p for _, p in sorted(found)]


def load_gs(run_dir: str | os.PathLike) -> tuple[dict[str, np.ndarray], int]:
    """Gs's weights by path (w_avg included) from a run's latest .npz checkpoint, and the images trained."""
    found = portable_checkpoints(run_dir)
    if not found:
        raise TrainError(f"{run_dir} has no checkpoint yet")
    with np.load(found[-1]) as f:
        values = {k[3:]: f[k] for k in f.files if k.startswith("Gs/")}
        values["w_avg"] = f["gs_w_avg"]
        return values, int(f["counters/nimg"])


class PortableCheckpoints:
    """A run folder's .npz checkpoints of one PortableTrainer: restore the latest, save at a tick."""

    def __init__(self, trainer: PortableTrainer, run_dir: Path, keep: int, source: Path | None = None):
        self.trainer, self.run_dir, self.keep = trainer, Path(run_dir), keep
        self.counters, self.source = trainer.counters, Path(source or run_dir)

    def restore(self) -> None:
        """Load the latest checkpoint into the trainer (TrainError when there is none, or another backend's)."""
        # (a run started on another backend is refused before this, from its config.json: curate.train.run)
        found = portable_checkpoints(self.source)
        if not found:
            raise TrainError(f"{self.source} has no checkpoint yet; start a new run instead")
        with np.load(found[-1]) as f:
            arrays = {k: f[k] for k in f.files}
        backend, version = str(arrays.pop("meta/backend")), int(arrays.pop("meta/format"))
        if version != CHECKPOINT_FORMAT:
            raise TrainError(f"{found[-1]} is checkpoint format {version}; this curate reads {CHECKPOINT_FORMAT}")
        if backend != self.trainer.backend:
            raise TrainError(f"{found[-1]} was written by the {backend} backend; resume with --backend {backend} "
                             f"(checkpoints do not move between backends)")
        try:
            self.trainer.load_state_arrays(arrays)
        except ValueError as e:
            raise TrainError(f"{found[-1]} does not fit this run's networks: {e}") from None

    def save(self) -> None:
        """ckpt-<tick>.npz, written whole (temporary file, then rename); keeps the newest `keep`."""
        tick = int(self.counters.tick.numpy())
        folder = self.run_dir / FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {**self.trainer.state_arrays(), "meta/backend": np.asarray(self.trainer.backend),
                  "meta/format": np.asarray(CHECKPOINT_FORMAT)}
        with atomic_path(folder / f"ckpt-{tick}.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        for old in portable_checkpoints(self.run_dir)[:-self.keep]:
            old.unlink()

    def save_if_behind(self) -> None:
        """Save unless the latest checkpoint is already of the current tick (the end of a run)."""
        found = portable_checkpoints(self.run_dir)
        if not found or int(_CKPT.match(found[-1].name).group(1)) != int(self.counters.tick.numpy()):
            self.save()
