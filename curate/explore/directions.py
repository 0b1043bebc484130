"""Attribute directions in W: the mean w of images with an attribute minus the mean w of the rest.

Marked by hand (at least 2 images with and 2 without), or from illustration2vec's tags over generated
samples when its weights are installed. Saved beside the run in RUN/explore/directions.json as
{name, vector (per layer), source}; exported, imported and combined (weighted sums).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from curate.explore.latent import ExploreError, Latent
from curate.explore.store import Store

MIN_EACH = 2
# the attributes a portrait's tags describe well (illustration2vec's names, as Danbooru's with spaces)
ATTRIBUTE_TAGS = (
    "blonde hair", "brown hair", "black hair", "blue hair", "pink hair", "purple hair", "red hair", "silver hair",
    "white hair", "green hair", "blue eyes", "red eyes", "brown eyes", "green eyes", "purple eyes", "yellow eyes",
    "smile", "open mouth", "blush", "long hair", "short hair", "twintails", "ponytail", "hat", "glasses",
)


@dataclass(frozen=True, eq=False)
class Direction:
    """A named vector [num_layers, D] in W, and how it was made."""

    name: str
    vector: np.ndarray
    source: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "vector": self.vector.astype(np.float32).tolist(), "source": self.source}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Direction:
        try:
            v = np.asarray(d["vector"], np.float32)
        except (KeyError, TypeError, ValueError) as e:
            raise ExploreError(f"direction {d.get('name')!r} has no vector of numbers ({e})") from None
        if v.ndim == 1:
            v = v[None]  # one w for every layer
        if v.ndim != 2 or not np.isfinite(v).all():
            raise ExploreError(f"direction {d.get('name')!r}: the vector must be finite numbers, [D] or [layers, D]")
        return cls(name=str(d["name"]), vector=v, source=str(d.get("source", "")))

    def fit(self, ex) -> Direction:
        """This direction for a run's generator (a [D] vector applies to every layer), or ExploreError."""
        want = (ex.num_layers, ex.dlatent_size)
        if self.vector.shape == want:
            return self
        if self.vector.shape == (1, want[1]):
            return Direction(self.name, np.repeat(self.vector, want[0], axis=0), self.source)
        raise ExploreError(f"direction {self.name!r} is {list(self.vector.shape)}; this run's w is {list(want)}")


def from_marks(name: str, with_: Sequence[Latent], without: Sequence[Latent], source: str = "") -> Direction:
    """mean(w of `with_`) - mean(w of `without`)."""
    if len(with_) < MIN_EACH or len(without) < MIN_EACH:
        raise ExploreError(f"mark at least {MIN_EACH} images with {name!r} and {MIN_EACH} without "
                           f"(now {len(with_)} and {len(without)})")
    v = np.mean([x.w for x in with_], axis=0) - np.mean([x.w for x in without], axis=0)
    return Direction(name, v.astype(np.float32), source or f"marked: {len(with_)} with, {len(without)} without")


def move(latent: Latent, moves: Sequence[tuple[Direction, float]]) -> Latent:
    """The latent moved by amount * vector along each direction."""
    w = latent.w.astype(np.float32).copy()
    for d, amount in moves:
        if amount:
            if d.vector.shape[-1] != w.shape[-1]:
                raise ExploreError(f"direction {d.name!r} is for another generator (w of {d.vector.shape[-1]})")
            w += np.float32(amount) * d.vector
    return latent if w.tobytes() == latent.w.tobytes() else latent.replace(w=w)


def combine(name: str, parts: Sequence[tuple[Direction, float]]) -> Direction:
    """A weighted sum of directions, as a new one."""
    if not parts:
        raise ExploreError("combine at least one direction")
    v = sum(np.float32(k) * d.vector for d, k in parts)
    return Direction(name, np.asarray(v, np.float32), "combined: " + " + ".join(f"{k:g}*{d.name}" for d, k in parts))


def from_tags(ex, tagger, tags: Sequence[str], samples: int = 200, psi: float | None = None,
              share: float = 0.25) -> list[Direction]:
    """One direction per tag from `samples` generated images: the top `share` by the tag's probability
    against the bottom `share`. `tagger(images uint8 [N, H, W, 3]) -> {tag: probabilities [N]}`."""
    latents = [ex.from_seed(s, psi) for s in range(samples)]
    probs = tagger(ex.render(latents))
    k = max(MIN_EACH, int(samples * share))
    out = []
    for tag in tags:
        p = np.asarray(probs[tag])
        order = np.argsort(p, kind="stable")
        out.append(from_marks(tag, [latents[i] for i in order[-k:]], [latents[i] for i in order[:k]],
                              source=f"illustration2vec: {tag!r}, top {k} of {samples} samples against the bottom {k}"))
    return out


def installed_tagger(models_root: str | os.PathLike | None = None):
    """A tagger over the installed illustration2vec for from_tags, and its tag names; None when it is not installed."""
    from curate.score.models import installed, load_illustration2vec, models_dir
    from curate.score.scorer import Illustration2VecScorer

    root = models_dir(models_root)
    if installed(root) is None:
        return None
    model, tags, _ = load_illustration2vec(root)
    scorer = Illustration2VecScorer(model, tags)
    index = {t: i for i, t in enumerate(tags)}

    def tagger(images) -> dict[str, np.ndarray]:
        p = scorer.probabilities(list(images))
        return {t: p[:, i] for t, i in index.items()}

    tagger.tags = tags
    return tagger


class DirectionStore(Store[Direction]):
    """RUN/explore/directions.json."""

    def __init__(self, run_dir: str | os.PathLike):
        super().__init__(run_dir, "directions.json", "directions", Direction.from_json, Direction.to_json)
