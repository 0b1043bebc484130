"""Benchmark: each `curate crop --detector` setting's precision, recall and speed on the sample.

Precision and recall are measured against tests/data/faces-truth.json (the 50 sample images' faces,
boxed by eye; curate.testing.faces: a found face is right when its box overlaps a truth face by
IoU >= 0.3, one to one; the one ambiguous face counts neither way). Every face the setting finds is
scored, before placement (a face whose 2:1 box does not fit the 512 px image is still a face found).

Speed: images/s of the detection step (decode for the detector + detect + landmarks), one process,
the images in memory, median of --rounds alternating rounds, each setting as a ratio to `lbp` (the
cascade alone, the project's detector before AnimeFace) measured in the same rounds. With
--large N, the same on N images upscaled to Danbooru-original sizes (bench/crop.py's corpus, long
side 1200-3000 px), where no truth exists: speed and faces found only.

    python bench/detectors.py                 # the sample, 3 rounds
    python bench/detectors.py --large 20      # and 20 large images

Timings on a shared VM are noisy: each round is printed with the median.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

SAMPLE = ROOT.parent / "shared" / "data" / "danbooru-sample"
SETTINGS = {  # name -> CropConfig fields
    "lbp": {"detector": "lbp"},
    "animeface": {"detector": "animeface"},
    "both": {"detector": "both"},
    "both --unconfirmed reject": {"detector": "both", "unconfirmed": "reject"},
}


def croppers():
    from curate.crop import CropConfig, Cropper
    from curate.crop.cascades import resolve_cascade, sha256_of

    cascade = resolve_cascade("animeface")
    base = CropConfig(cascade=str(cascade), cascade_sha256=sha256_of(cascade))
    import dataclasses

    return {name: Cropper(dataclasses.replace(base, **kw)) for name, kw in SETTINGS.items()}


def detect_all(cropper, images: list[bytes]) -> tuple[float, list[list]]:
    """Seconds for the detection step over all images, and each image's face boxes."""
    from curate.crop import ImageResult

    t = time.perf_counter()
    boxes = []
    for data in images:
        found = cropper.find_faces(data, ImageResult(""))
        boxes.append([] if not isinstance(found, tuple) else [tuple(f.box) for f in found[1]])
    return time.perf_counter() - t, boxes


def measure(croppers, images: list[bytes], rounds: int, label: str) -> dict[str, tuple[float, list]]:
    times: dict[str, list[float]] = {name: [] for name in croppers}
    boxes: dict[str, list] = {}
    for c in croppers.values():  # load the cascade and libnvxs before any clock starts
        detect_all(c, images[:1])
    for r in range(rounds):
        line = []
        for name, c in croppers.items():
            seconds, boxes[name] = detect_all(c, images)
            times[name].append(seconds)
            line.append(f"{name} {seconds:5.1f}s")
        print(f"  {label} round {r + 1}: " + "  ".join(line), flush=True)
    return {name: (len(images) / statistics.median(t), boxes[name]) for name, t in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--large", type=int, default=0, help="also time N large images (bench/crop.py's corpus)")
    ap.add_argument("--sample", type=Path, default=SAMPLE)
    args = ap.parse_args()

    from curate.testing.faces import MATCH_IOU, Score, load_truth

    truth = load_truth()
    missing = [s for s in truth if not (args.sample / s).is_file()]
    if missing:
        sys.exit(f"bench/detectors.py: the Danbooru sample is not at {args.sample}")
    sources = sorted(truth)
    images = [(args.sample / s).read_bytes() for s in sources]
    cs = croppers()
    clear = sum(not f.ambiguous for faces in truth.values() for f in faces)
    print(f"sample: {len(images)} images (512 px), {clear} clear faces in the truth (+1 ambiguous); "
          f"IoU >= {MATCH_IOU}; one process, rounds={args.rounds}")
    res = measure(cs, images, args.rounds, "sample")
    base = res["lbp"][0]
    print(f"\n  {'setting':28s} {'found':>5s} {'TP':>4s} {'FP':>4s} {'FN':>4s} {'precision':>9s} {'recall':>6s}"
          f" {'img/s':>7s} {'vs lbp':>7s}")
    for name, (rate, boxes) in res.items():
        s = Score()
        for source, found in zip(sources, boxes):
            s.add(source, truth[source], found)
        print(f"  {name:28s} {sum(map(len, boxes)):5d} {s.tp:4d} {s.fp:4d} {s.fn:4d} {s.precision:9.3f} {s.recall:6.3f}"
              f" {rate:7.2f} {rate / base:6.3f}x")
        if s.false:
            print(f"  {'':28s} false faces in: {', '.join(Path(x).stem for x in s.false)}")
        print(f"  {'':28s} missed faces in: {', '.join(Path(x).stem for x in s.missed)}")
    if args.large:
        import os

        from crop import make_corpus

        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "curate-bench"
        files = make_corpus(cache / f"crop-corpus-n{args.large}-seed3", args.large, 3)
        big = [f.read_bytes() for f in files]
        print(f"\nlarge: {len(big)} JPEGs q90, long side 1200-3000 px (no truth: speed and faces found)")
        res = measure(cs, big, args.rounds, "large")
        base = res["lbp"][0]
        for name, (rate, boxes) in res.items():
            print(f"  {name:28s} faces {sum(map(len, boxes)):4d}  {rate:7.2f} img/s  {rate / base:6.3f}x lbp")


if __name__ == "__main__":
    main()
