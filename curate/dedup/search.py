"""Near-duplicate search over 64-bit hashes: every pair within a Hamming distance, over ALL hashes.

Multi-index hashing (Norouzi, Punjani & Fleet, CVPR 2012): the 64 bits are cut into m chunks; two
hashes within distance t agree to within r_c bits on at least one chunk c when the radii satisfy
sum(r_c + 1) = t + 1 (pigeonhole). Each
chunk gets a lookup table (chunk value -> the hashes holding it, as counting-sort offsets), and a
query probes every value within its chunk's radius of its own chunk value: all in NumPy, one pass per
(chunk, flip mask) over every query at once. Candidates are then checked on the full 64 bits. The
result is exact: the same pairs as comparing every hash with every other (`brute_force_pairs`,
the tests' oracle and the bench's baseline), at a small fraction of the work for large sets.

m is chosen so that a chunk has about log2(N) bits (the paper's rule: buckets then hold about one
hash each), at least 3 chunks so that a table has at most 2^22 entries.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

BITS = 64
_MAX_PAIRS_PER_BATCH = 1 << 24  # candidate pairs checked at once: bounded memory (~400 MB at most)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each uint64."""
    return np.bitwise_count(x)


def brute_force_pairs(queries: np.ndarray, index: np.ndarray, t: int, same: bool) -> np.ndarray:
    """Every (query position, index position, distance) with distance <= t, by comparing all of them.

    `same`: the queries are the index itself; each unordered pair is given once (i < j)."""
    queries = np.asarray(queries, dtype=np.uint64)
    index = np.asarray(index, dtype=np.uint64)
    out = []
    step = max(1, _MAX_PAIRS_PER_BATCH // max(1, len(index)))
    for start in range(0, len(queries), step):
        q = queries[start:start + step]
        d = popcount(q[:, None] ^ index[None, :])
        qi, ii = np.nonzero(d <= t)
        if same:
            keep = qi + start < ii
            qi, ii = qi[keep], ii[keep]
        out.append(np.stack([qi + start, ii, d[qi, ii]], axis=1).astype(np.int64))
    return np.concatenate(out) if out else np.empty((0, 3), np.int64)


def chunk_count(n: int, t: int) -> int:
    """How many chunks for n hashes and distance t: about log2(n) bits each, between 3 and t + 1."""
    by_size = round(BITS / max(1.0, math.log2(max(2, n))))
    return max(3, min(by_size, t + 1, 16))


def _flip_masks(bits: int, radius: int) -> np.ndarray:
    masks = [0]
    for r in range(1, radius + 1):
        for combo in itertools.combinations(range(bits), r):
            masks.append(sum(1 << b for b in combo))
    return np.array(masks, dtype=np.uint64)


def chunk_radii(m: int, t: int) -> list[int]:
    """Each chunk's search radius: sum(r + 1) = t + 1, so a pair within t is within r of one chunk."""
    base, extra = divmod(t + 1, m)
    return [base + (1 if c < extra else 0) - 1 for c in range(m)]


def mih_pairs(queries: np.ndarray, index: np.ndarray, t: int, same: bool, chunks: int | None = None) -> np.ndarray:
    """brute_force_pairs' answer (as a set of rows, sorted) by multi-index hashing.

    The chunk radii follow the generalised pigeonhole rule (sum of radius + 1 over the chunks is
    t + 1: for t = 10 in three chunks, radii 3, 3 and 2), which probes fewer values than t // m in
    every chunk would. Queries are visited in the order of their chunk value, so that the lookups of
    one pass (value XOR flip mask) walk the tables nearly in order instead of at random.
    """
    queries = np.asarray(queries, dtype=np.uint64)
    index = np.asarray(index, dtype=np.uint64)
    if len(queries) == 0 or len(index) == 0:
        return np.empty((0, 3), np.int64)
    m = chunks or chunk_count(len(index), t)
    bounds = np.linspace(0, BITS, m + 1).round().astype(int)
    found = []
    for c, radius in enumerate(chunk_radii(m, t)):
        if radius < 0:
            continue  # t + 1 < m: this chunk need not be searched at all
        lo, width = int(bounds[c]), int(bounds[c + 1] - bounds[c])
        mask = np.uint64((1 << width) - 1)
        keys = ((index >> np.uint64(lo)) & mask).astype(np.int64)
        order = np.argsort(keys, kind="stable")
        counts = np.bincount(keys, minlength=1 << width).astype(np.int32)
        starts = (np.cumsum(counts, dtype=np.int64) - counts).astype(np.int64)
        qkeys = ((queries >> np.uint64(lo)) & mask).astype(np.int64)
        qorder = np.argsort(qkeys, kind="stable")
        sorted_keys = qkeys[qorder]
        # both sides laid out in chunk-value order: a pass reads them nearly in sequence
        sorted_queries, sorted_index = queries[qorder], index[order]

        def check(qpos: np.ndarray, ipos: np.ndarray) -> None:
            d = popcount(sorted_queries[qpos] ^ sorted_index[ipos])
            ok = np.flatnonzero(d <= t)
            qi, ii = qorder[qpos[ok]], order[ipos[ok]]
            if same:
                keep = qi < ii
                qi, ii, dd = qi[keep], ii[keep], d[ok][keep]
            else:
                dd = d[ok]
            found.append(np.stack([qi, ii, dd], axis=1).astype(np.int64))

        for flip in _flip_masks(width, radius).astype(np.int64):
            probe = sorted_keys ^ flip
            n = counts[probe]
            hit = np.flatnonzero(n)
            if not len(hit):
                continue
            n_hit = n[hit]
            first = starts[probe[hit]]
            one = n_hit == 1  # most buckets hold one hash: no expansion needed
            check(hit[one], first[one])
            if not one.all():
                many = ~one
                hit, n_hit, first = hit[many], n_hit[many].astype(np.int64), first[many]
                for part in _batches(n_hit):
                    nh = n_hit[part]
                    offs = np.arange(int(nh.sum())) - np.repeat(np.cumsum(nh) - nh, nh)
                    check(np.repeat(hit[part], nh), np.repeat(first[part], nh) + offs)
    if not found:
        return np.empty((0, 3), np.int64)
    return np.unique(np.concatenate(found), axis=0)  # a pair close on several chunks is found several times


def _batches(n_hit: np.ndarray):
    """Slices of the hit queries whose candidates together stay under _MAX_PAIRS_PER_BATCH."""
    total = np.cumsum(n_hit)
    start = 0
    while start < len(n_hit):
        base = total[start - 1] if start else 0
        stop = int(np.searchsorted(total, base + _MAX_PAIRS_PER_BATCH, side="right"))
        stop = max(stop, start + 1)
        yield slice(start, stop)
        start = stop


def near_pairs(queries: np.ndarray, index: np.ndarray, t: int, same: bool) -> np.ndarray:
    """The pairs within t: brute force when the comparison is small, else multi-index hashing."""
    if len(queries) * len(index) <= 1 << 22:
        pairs = brute_force_pairs(queries, index, t, same)
        return np.unique(pairs, axis=0) if len(pairs) else pairs
    return mih_pairs(queries, index, t, same)
