"""Run folders: <runs>/<NNNNN>-<config>, never reused, and the config.json a run starts with."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from curate.core.atomic import write_json
from curate.core.errors import CurateError
from curate.train.stylegan.config import TrainConfig

CONFIG_FILE = "config.json"
STATS_FILE = "stats.jsonl"


class TrainError(CurateError):
    """A dataset or run folder that cannot be used (the CLI turns it into one line)."""


def new_run_dir(runs_dir: str | os.PathLike, config_name: str) -> Path:
    """<runs_dir>/<NNNNN>-<config>, numbered one past the highest there; mkdir is the lock, never reused."""
    runs = Path(runs_dir)
    runs.mkdir(parents=True, exist_ok=True)
    nums = [int(p.name.split("-", 1)[0]) for p in runs.iterdir() if p.name[:5].isdigit()]
    n = max(nums, default=-1) + 1
    while True:
        path = runs / f"{n:05d}-{config_name}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1


BACKENDS = ("tensorflow", "jax", "torch")


def write_run_config(run_dir: Path, config: TrainConfig, dataset: dict[str, Any], levels: list[list[int]],
                     backend: str = "tensorflow") -> None:
    """config.json: the resolved config, the dataset it trains on, the (height, width) of each level grown
    and, for a backend other than TensorFlow, the backend (a TF run's config.json is as before)."""
    saved = {"config": config.to_json(), "dataset": dataset, "levels": levels}
    if backend != "tensorflow":
        saved["backend"] = backend
    write_json(run_dir / CONFIG_FILE, saved)


def run_backend(run_dir: str | os.PathLike) -> str:
    """The backend a run folder was trained on ('tensorflow' unless its config.json names another)."""
    p = Path(run_dir) / CONFIG_FILE
    return json.loads(p.read_text()).get("backend", "tensorflow") if p.is_file() else "tensorflow"


def choose_backend(requested: str | None) -> str:
    """--backend, else KERAS_BACKEND, else tensorflow (TrainError for a name Keras does not have)."""
    name = (requested or os.environ.get("KERAS_BACKEND") or "tensorflow").lower()
    if name not in BACKENDS:
        raise TrainError(f"backend {name!r} is not one of {', '.join(BACKENDS)} (from --backend or KERAS_BACKEND)")
    if name == "torch":  # refused before Keras is ever imported under it (importing keras needs torch then)
        raise TrainError("the torch backend has no training step yet; use --backend jax or tensorflow")
    return name


def load_run(run_dir: str | os.PathLike) -> tuple[TrainConfig, dict[str, Any]]:
    """The config and dataset entry a run folder was started with (TrainError if it is not a run)."""
    p = Path(run_dir) / CONFIG_FILE
    if not p.is_file():
        raise TrainError(f"{run_dir} is not a run folder (no {CONFIG_FILE}); give one that `curate train` made")
    saved = json.loads(p.read_text())
    return TrainConfig.from_json(saved["config"]), saved["dataset"]
