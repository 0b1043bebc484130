"""The sample's face truth (tests/data/faces-truth.json) and detections scored against it.

A detection matches a truth face when their boxes overlap by IoU >= MATCH_IOU (0.3, lenient because
the detectors and a person draw a face's box by different conventions: AnimeFace's square runs from
brow to chin, the cascade's is about a third wider, the truth's spans ear to ear and hairline to chin).
Matching is greedy, best overlap first, one detection per face. Faces marked ambiguous count
neither way: a detection on one is no false positive, a miss no false negative.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from curate.crop.geometry import iou, match_boxes

TRUTH = Path(__file__).resolve().parents[2] / "tests" / "data" / "faces-truth.json"
MATCH_IOU = 0.3

BoxT = Sequence[float]  # (x, y, w, h)


@dataclass(frozen=True)
class TruthFace:
    """One face a person boxed."""

    box: tuple[int, int, int, int]
    ambiguous: bool = False
    note: str = ""


def load_truth(path: str | Path = TRUTH) -> dict[str, list[TruthFace]]:
    """Source path (relative to the sample root) -> its faces."""
    data = json.loads(Path(path).read_text())
    return {src: [TruthFace(tuple(f["box"]), bool(f.get("ambiguous", False)), f.get("note", "")) for f in faces]
            for src, faces in data["images"].items()}


@dataclass
class Score:
    """Counts over images: true positives, false positives, false negatives, and the images missed."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    missed: list[str] = field(default_factory=list)
    false: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    def add(self, source: str, truth: list[TruthFace], found: Sequence[BoxT], threshold: float = MATCH_IOU) -> None:
        """Score one image's detections."""
        pairs = match_boxes([t.box for t in truth], found, threshold)
        hit_t = {i for i, _, _ in pairs}
        hit_f = {j for _, j, _ in pairs}
        # a detection on an ambiguous face is not false; a match of one is not a hit either
        amb_f = {j for j, f in enumerate(found) if j not in hit_f
                 and any(t.ambiguous and iou(t.box, f) >= threshold for t in truth)}
        self.tp += sum(1 for i in hit_t if not truth[i].ambiguous)
        misses = [i for i, t in enumerate(truth) if i not in hit_t and not t.ambiguous]
        self.fn += len(misses)
        falses = [j for j in range(len(found)) if j not in hit_f and j not in amb_f]
        self.fp += len(falses)
        if misses:
            self.missed.append(source)
        if falses:
            self.false.append(source)
