"""What a generated image is made from (its Latent and Edits), and the PNG text chunk that carries them.

A PNG written by curate explore or curate generate holds, in one compressed iTXt chunk named
`curate:latent`, a JSON object: the per-layer w (exact: float32 bytes in base64), the z and seed it came
from when it came from one, the truncation psi, the noise seed, the run and any local edits. Reading that
chunk back gives the same image again from the same run.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from curate.core.errors import CurateError

CHUNK = "curate:latent"
FORMAT = "curate-latent/1"


class ExploreError(CurateError):
    """A run, latent, direction or edit that cannot be used (one line for the CLI and the page)."""


def parse_seeds(text: str, limit: int | None = None) -> list[int]:
    """'1,5,10-12' -> [1, 5, 10, 11, 12]; ExploreError for anything else, or for more than `limit` seeds."""
    out: list[int] = []
    for part in str(text).split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise ExploreError(f"{part.strip()!r} is not a seed or a range like 3-7")
        lo, hi = int(m[1]), int(m[2] or m[1])
        if hi < lo:
            raise ExploreError(f"{part.strip()!r}: the range is backwards")
        if limit is not None and len(out) + hi - lo + 1 > limit:
            raise ExploreError(f"at most {limit} seeds at a time")
        out.extend(range(lo, hi + 1))
    return out


def _pack(a: np.ndarray | None) -> dict[str, Any] | None:
    if a is None:
        return None
    a = np.ascontiguousarray(a, dtype="<f4")
    return {"shape": list(a.shape), "float32": base64.b64encode(a.tobytes()).decode("ascii")}


def _unpack(d: dict[str, Any] | None) -> np.ndarray | None:
    if d is None:
        return None
    try:
        a = np.frombuffer(base64.b64decode(d["float32"], validate=True), "<f4").astype(np.float32)
        return a.reshape([int(n) for n in d["shape"]])
    except (KeyError, TypeError, ValueError) as e:
        raise ExploreError(f"a latent array cannot be read ({e})") from None


@dataclass(frozen=True, eq=False)
class Latent:
    """One image's inputs: w per synthesis layer [num_layers, D], and where it came from.

    z and seed are set when it came from a seed or a z (Z interpolation needs them); psi is the
    truncation it was made with; noise is the seed of the per-pixel noise.
    """

    w: np.ndarray
    z: np.ndarray | None = None
    seed: int | None = None
    psi: float = 1.0
    noise: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"w": _pack(self.w), "z": _pack(self.z), "seed": self.seed, "psi": self.psi, "noise": self.noise}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Latent:
        if not isinstance(d, dict) or "w" not in d:
            raise ExploreError("a latent must be an object with a w")
        w = _unpack(d["w"])
        if w is None or w.ndim != 2:
            raise ExploreError("a latent's w must be [layers, dlatent]")
        try:
            return cls(w=w, z=_unpack(d.get("z")), seed=None if d.get("seed") is None else int(d["seed"]),
                       psi=float(d.get("psi", 1.0)), noise=int(d.get("noise", 0)))
        except (TypeError, ValueError) as e:
            raise ExploreError(f"a latent's seed, psi or noise is not a number ({e})") from None

    def replace(self, **changes) -> Latent:
        """A copy with changes; a new w drops z and seed (the image no longer comes from them)."""
        if "w" in changes:
            changes.setdefault("z", None)
            changes.setdefault("seed", None)
        return Latent(**{**self.__dict__, **changes})


@dataclass(frozen=True)
class Edit:
    """Add `multiplier` to `channels` of the feature maps of synthesis `level`, inside `region`.

    region is (x0, y0, x1, y1) in fractions of the image (0..1, left/top to right/bottom); a cell of
    the level's map is inside when its centre is (at least the cell nearest the region's centre is).
    A multiplier of 0 is no edit at all: the image is bit-identical to the unedited one.
    """

    level: int
    channels: tuple[int, ...]
    region: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)
    multiplier: float = 1.0
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "region", tuple(float(v) for v in self.region))
        if len(self.region) != 4:
            raise ExploreError("an edit's region is (x0, y0, x1, y1)")
        x0, y0, x1, y1 = self.region
        if not (0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1):
            raise ExploreError(f"an edit's region {self.region} must satisfy 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1")
        if not self.channels:
            raise ExploreError("an edit needs at least one channel")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level, "channels": list(self.channels), "region": list(self.region),
                "multiplier": self.multiplier}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Edit:
        try:
            return cls(level=int(d["level"]), channels=tuple(d["channels"]), region=tuple(d.get("region", (0, 0, 1, 1))),
                       multiplier=float(d.get("multiplier", 1.0)), name=str(d.get("name", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise ExploreError(f"an edit must have a level, channels, a region and a multiplier ({e})") from None

    def mask(self, height: int, width: int) -> np.ndarray:
        """[height, width] float32: 1 for the map cells inside the region."""
        x0, y0, x1, y1 = self.region
        cy = (np.arange(height) + 0.5) / height
        cx = (np.arange(width) + 0.5) / width
        m = ((cy >= y0) & (cy <= y1))[:, None] & ((cx >= x0) & (cx <= x1))[None, :]
        if not m.any():
            m[min(int((y0 + y1) / 2 * height), height - 1), min(int((x0 + x1) / 2 * width), width - 1)] = True
        return m.astype(np.float32)


@dataclass(frozen=True)
class Provenance:
    """What a PNG says about itself: its latent, its edits, and the run it came from."""

    latent: Latent
    edits: list[Edit] = field(default_factory=list)
    run: str = ""


def png_bytes(image: np.ndarray, latent: Latent, edits: list[Edit] = (), run: str = "") -> bytes:
    """An RGB uint8 [H, W, 3] image as PNG bytes carrying its latent, edits and run."""
    info = PngImagePlugin.PngInfo()
    meta = {"format": FORMAT, "run": run, "latent": latent.to_json(), "edits": [e.to_json() for e in edits]}
    info.add_itxt(CHUNK, json.dumps(meta, separators=(",", ":")), zip=True)
    buf = io.BytesIO()
    Image.fromarray(np.asarray(image, np.uint8), "RGB").save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def read_png(data: bytes | str | os.PathLike) -> Provenance:
    """The latent, edits and run a PNG carries (ExploreError when it is not such a PNG)."""
    name = "the image"
    if not isinstance(data, (bytes, bytearray)):
        name = str(data)
        try:
            data = Path(data).read_bytes()
        except OSError as e:
            raise ExploreError(f"cannot read {name}: {e.strerror or e}") from None
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "PNG":
                raise ExploreError(f"{name} is a {im.format}, not a PNG that curate wrote")
            text = getattr(im, "text", {}).get(CHUNK)
    except UnidentifiedImageError:
        raise ExploreError(f"{name} is not an image (its bytes are no format Pillow knows)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ExploreError(f"{name} is not a readable image ({e})") from None
    if text is None:
        raise ExploreError(f"{name} carries no latent: only PNGs written by curate explore or curate generate do")
    try:
        meta = json.loads(text)
    except ValueError:
        raise ExploreError(f"{name}'s latent chunk is not JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ExploreError(f"{name}'s latent is not in the {FORMAT} format")
    edits = meta.get("edits") or []
    if not isinstance(edits, list):
        raise ExploreError(f"{name}'s edits are not a list")
    return Provenance(Latent.from_json(meta.get("latent")), [Edit.from_json(e) for e in edits], str(meta.get("run", "")))


def read_png_latent(data: bytes | str | os.PathLike) -> Latent:
    """Only the latent of read_png."""
    return read_png(data).latent
