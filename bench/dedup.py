"""Benchmark: curate dedup's near-duplicate search over N generated hashes, against brute force.

Generates N seeded 64-bit hashes (uniform, as pHash bits are close to; one in twenty a copy of
another with 0..threshold+2 bits flipped, so there are pairs to find), then times:

  multi-index   curate.dedup.search.mih_pairs over all N (every pair within the threshold, once)
  brute force   every hash against every other (the search a sliding window would replace), measured
                on Q queries against all N in the same run and extrapolated to N(N-1)/2 comparisons:
                its cost is exactly linear in the comparisons made, so the extrapolation is honest

and checks on those Q queries that multi-index hashing finds exactly the brute-force pairs.

    python bench/dedup.py                      # 1,000,000 hashes, the default threshold
    python bench/dedup.py --n 200000 --threshold 8 --queries 4000

The machine may be shared with other work while this runs: the ratio, measured in the same run,
carries; the absolute times say what this machine did then.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402


def generated(n: int, t: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    h = rng.integers(0, np.iinfo(np.uint64).max, n, dtype=np.uint64, endpoint=True)
    copies = rng.choice(n, n // 20, replace=False)
    originals = rng.integers(0, n, len(copies))
    flips = rng.integers(0, t + 3, len(copies))
    for c, o, k in zip(copies, originals, flips):
        x = h[o]
        for b in rng.choice(64, k, replace=False):
            x ^= np.uint64(1) << np.uint64(b)
        h[c] = x
    return h


def main() -> None:
    from curate.dedup.search import brute_force_pairs, chunk_count, chunk_radii, mih_pairs
    from curate.dedup.unit import DedupConfig

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="hashes")
    ap.add_argument("--threshold", type=int, default=DedupConfig().threshold, help="Hamming distance")
    ap.add_argument("--queries", type=int, default=2000, help="brute-force queries measured")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    n, t = args.n, args.threshold
    h = generated(n, t, args.seed)
    m = chunk_count(n, t)
    print(f"{n:,} generated hashes, threshold {t}: multi-index hashing with {m} chunks, radii {chunk_radii(m, t)}")

    q = h[: args.queries]
    t0 = time.perf_counter()
    brute = brute_force_pairs(q, h, t, same=False)
    brute_s = time.perf_counter() - t0
    per_comparison = brute_s / (len(q) * n)
    brute_full = per_comparison * n * (n - 1) / 2
    check = mih_pairs(q, h, t, same=False)
    same = np.array_equal(np.unique(brute, axis=0), check)
    print(f"brute force: {len(q):,} queries x {n:,} in {brute_s:.2f} s -> {per_comparison * 1e9:.2f} ns per comparison;"
          f" all {n * (n - 1) // 2:,} pairs: {brute_full:,.0f} s ({brute_full / 3600:.1f} h), extrapolated")
    print(f"multi-index on the same {len(q):,} queries: {'the same' if same else 'DIFFERENT'} pairs ({len(check):,})")
    if not same:
        sys.exit("bench/dedup.py: multi-index hashing and brute force disagree")

    t0 = time.perf_counter()
    pairs = mih_pairs(h, h, t, same=True)
    mih_s = time.perf_counter() - t0
    print(f"multi-index, all {n:,} hashes: {len(pairs):,} pairs in {mih_s:.1f} s ({mih_s / 60:.1f} min)")
    print(f"ratio: brute force (extrapolated) / multi-index = x{brute_full / mih_s:,.0f}")


if __name__ == "__main__":
    main()
