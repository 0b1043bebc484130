"""Measurement: which Hamming threshold catches near-duplicates of the sample's crops, and no distinct pair.

Crops the 50-image Danbooru sample (no tag exclusions, every rating, boxes padded where they do
not fit, so that every face the cascade finds gives a crop), then makes variants of each crop:

  jpeg70    re-encoded as JPEG quality 70
  resize    down to half size and back up (bilinear)
  shift2    the picture moved 2% right and 2% down (edge pixels repeated)
  hue       hue turned by 30 degrees (HSV), saturation and value unchanged
  mirror    left-right flip (only caught with --mirror: reported apart)

and reports, for each threshold, the share of variants within it of their original (caught), the
share of pairs of distinct crops within it (false matches; the sample's known pairs, 2142264 /
2142265 and 2142326 / 2142348, are counted apart and must be caught), and where the default of
curate.dedup.DedupConfig stands. Then compares this project's NumPy pHash with `imagehash.phash`
(when installed): bit-identical hashes, and hashes per second on the same decoded images, as a
ratio measured in the same run.

    python bench/dedup_threshold.py
    python bench/dedup_threshold.py --max-threshold 20 --rounds 5
    python bench/dedup_threshold.py --workdir work/danbooru2018-portraits   # any workdir's crops
"""

from __future__ import annotations

import argparse
import io
import itertools
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "danbooru-sample"
# Pairs of the sample that are the same picture, found by looking at them: a background-colour
# variant (2142264 / 2142265) and a small edit of one drawing (2142326 / 2142348).
KNOWN_PAIRS = [("2142264", "2142265"), ("2142326", "2142348")]
KINDS = ("jpeg70", "resize", "shift2", "hue", "mirror")


def sample_crops(work: Path) -> list[tuple[str, Image.Image]]:
    """(crop_id, RGB image) of every crop of the sample, padded boxes allowed."""
    import pyarrow.parquet as pq

    from curate.crop.cascades import ANIMEFACE_FILE, CASCADE_DIR, sha256_of
    from curate.crop.cropper import CropConfig
    from curate.crop.runner import open_sources, run_crop
    from curate.filter.runner import FilterRules, run_filter

    rules = FilterRules(exclude_tags=frozenset(), ratings=frozenset("gsqe"))
    run_filter([SAMPLE / "metadata"], work / "filtered.parquet", rules, dataset_root=SAMPLE, workers=1, progress=False)
    cascade = CASCADE_DIR / ANIMEFACE_FILE
    config = CropConfig(cascade=str(cascade), cascade_sha256=sha256_of(cascade), pad=True)
    sources, _ = open_sources(work / "filtered.parquet", SAMPLE)
    run_crop(sources, work, config, workers=2, progress=False)
    table = pq.read_table(work / "crops.parquet", columns=["crop_id", "file"]).to_pylist()
    return [(r["crop_id"], Image.open(work / r["file"]).convert("RGB")) for r in table]


def workdir_crops(workdir: Path) -> list[tuple[str, Image.Image]]:
    """(crop_id, RGB image) of every crop a workdir holds."""
    import pyarrow.parquet as pq

    table = pq.read_table(workdir / "crops.parquet", columns=["crop_id", "file"]).to_pylist()
    return [(r["crop_id"], Image.open(workdir / r["file"]).convert("RGB")) for r in table]


def variant(im: Image.Image, kind: str) -> Image.Image:
    """One generated variant of a crop."""
    if kind == "jpeg70":
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=70)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    if kind == "resize":
        w, h = im.size
        return im.resize((w // 2, h // 2), Image.Resampling.BILINEAR).resize((w, h), Image.Resampling.BILINEAR)
    if kind == "shift2":
        a = np.asarray(im)
        dy, dx = max(1, round(a.shape[0] * 0.02)), max(1, round(a.shape[1] * 0.02))
        a = np.pad(a, ((dy, 0), (dx, 0), (0, 0)), mode="edge")[: im.size[1], : im.size[0]]
        return Image.fromarray(a)
    if kind == "hue":
        hsv = np.asarray(im.convert("HSV")).copy()
        hsv[..., 0] = (hsv[..., 0].astype(np.int32) + 256 * 30 // 360) % 256
        return Image.fromarray(hsv, "HSV").convert("RGB")
    if kind == "mirror":
        return im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    raise ValueError(kind)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--max-threshold", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="timing rounds of the hash comparison (median)")
    ap.add_argument("--workdir", type=Path, default=None,
                    help="measure the crops of this workdir instead of cropping the sample (no known pairs)")
    args = ap.parse_args()
    if args.workdir is None and not (SAMPLE / "metadata").is_dir():
        sys.exit(f"bench/dedup_threshold.py: the Danbooru sample is not at {SAMPLE}")

    from curate.dedup.phash import distance, phash
    from curate.dedup.unit import DedupConfig

    if args.workdir is not None:
        crops = workdir_crops(args.workdir)
        print(f"{len(crops)} crops of {args.workdir}; variants: {', '.join(KINDS)}")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            crops = sample_crops(Path(tmp))
        print(f"{len(crops)} crops of the sample (padded boxes allowed); variants: {', '.join(KINDS)}")
    hashes = {cid: phash(im)[0] for cid, im in crops if phash(im) is not None}
    flat = [cid for cid, im in crops if phash(im) is None]
    post = {cid: cid.split("_")[0] for cid, _ in crops}
    variant_d: dict[str, list[int]] = {k: [] for k in KINDS}
    for cid, im in crops:
        if cid not in hashes:
            continue
        for kind in KINDS:
            h = phash(variant(im, kind))
            variant_d[kind].append(64 if h is None else distance(hashes[cid], h[0]))
    known = {frozenset(p) for p in KNOWN_PAIRS}
    known_d, distinct_d, same_post_d = [], [], []
    for a, b in itertools.combinations(sorted(hashes), 2):
        d = distance(hashes[a], hashes[b])
        if frozenset((post[a], post[b])) in known:
            known_d.append(d)
        elif post[a] == post[b]:
            same_post_d.append(d)  # two faces of one picture: distinct crops, reported apart
        else:
            distinct_d.append(d)
    if not known_d and args.workdir is None:
        sys.exit("bench/dedup_threshold.py: the known pairs gave no crops")
    print(f"flat crops (not hashed): {len(flat)}; distinct pairs: {len(distinct_d)} (plus {len(same_post_d)} "
          f"pairs of faces of one picture); known pairs' distances: {known_d}")
    print("median variant distance: " + ", ".join(f"{k} {int(np.median(v))}" for k, v in variant_d.items()))
    print(f"closest distinct pair: {min(distinct_d)}; closest faces of one picture: "
          f"{min(same_post_d) if same_post_d else '-'}")
    default = DedupConfig().threshold
    header = "  t  " + "  ".join(f"{k:>7s}" for k in KINDS) + "  known  false-match  (same-picture faces)"
    print("\ncaught (share of variants within t of their crop), false matches among distinct crops:")
    print(header)
    for t in range(args.max_threshold + 1):
        caught = "  ".join(f"{np.mean(np.array(variant_d[k]) <= t):7.0%}" for k in KINDS)
        fm = np.mean(np.array(distinct_d) <= t)
        same = np.mean(np.array(same_post_d) <= t) if same_post_d else 0.0
        mark = "   <- default" if t == default else ""
        known_caught = ("yes" if max(known_d) <= t else "no ") if known_d else "-"
        print(f"{t:3d}  {caught}  {known_caught:>5s}  {fm:11.2%}  ({same:.0%}){mark}")

    try:
        import imagehash
    except ImportError:
        print("\nimagehash is not installed: the library comparison is skipped (pip install imagehash)")
        return
    from curate.dedup.phash import grey_thumbnail, hash_bits

    images = [im for _, im in crops] + [variant(im, k) for _, im in crops for k in KINDS]
    ours = [hash_bits(grey_thumbnail(im)) for im in images]
    theirs = [int(str(imagehash.phash(im)), 16) for im in images]
    same_bits = sum(a == b for a, b in zip(ours, theirs))
    print(f"\nimagehash {imagehash.__version__} vs curate.dedup.phash on {len(images)} images: "
          f"{same_bits} of {len(images)} hashes bit-identical")
    timings: dict[str, list[float]] = {"imagehash.phash": [], "curate phash": []}
    for _ in range(args.rounds):
        for name, fn in (("imagehash.phash", imagehash.phash), ("curate phash", lambda im: hash_bits(grey_thumbnail(im)))):
            t0 = time.perf_counter()
            for im in images:
                fn(im)
            timings[name].append(time.perf_counter() - t0)
    # the transform alone, thumbnails made before the clock starts
    greys = [grey_thumbnail(im) for im in images]
    import scipy.fftpack

    def scipy_bits(g):
        low = scipy.fftpack.dct(scipy.fftpack.dct(g, axis=0), axis=1)[:8, :8]
        return low > np.median(low)
    for name, fn in (("imagehash's DCT (scipy) alone", scipy_bits), ("curate's DCT (matrices) alone", hash_bits)):
        t0 = time.perf_counter()
        for _ in range(args.rounds):
            for g in greys:
                fn(g)
        timings[name] = [(time.perf_counter() - t0) / args.rounds]
    base = float(np.median(timings["imagehash.phash"]))
    print("per image, median of rounds (the machine is shared with other work: ratios, not absolutes, carry):")
    for name, ts in timings.items():
        med = float(np.median(ts))
        ref = float(np.median(timings["imagehash's DCT (scipy) alone"])) if "alone" in name else base
        print(f"  {name:32s} {med / len(images) * 1e3:7.3f} ms   x{ref / med:5.2f} vs "
              f"{'scipy DCT' if 'alone' in name else 'imagehash.phash'}")


if __name__ == "__main__":
    main()
