"""Stage 3b, dedup, the local runner: hash every crop once, find near-duplicates among all, keep the best.

`run_dedup()`:
1. hashes the crops it has no hash for (the `CropHasher` unit over the process pool, one resumable
   part of CHUNK crops at a time in WORKDIR/.dedup-state/): a crop is known by its id and its file's
   size and modification time; when those changed (a later `curate crop` rewrote it), the file's
   bytes are checked against the digest stored with its hash, and only different bytes are hashed again;
2. searches near-duplicates (curate.dedup.search: multi-index hashing, exact) of the crops not
   searched before against ALL hashed crops, old and new, and adds them to the pairs found before
   (kept in the state folder with the hashes they were found with): a rerun after more crops arrive
   hashes and searches only the new ones;
3. groups greedily: crops in order of preference (kept by score first, then the largest face in
   source pixels, then the highest person score, then crop_id), each crop not yet taken keeps
   itself and takes every untaken crop within the threshold of it as its near_duplicate. Greedy, not
   connected components: a chain of small steps (A~B~C) never removes a crop that is far from the
   crop kept in its stead, and every near_duplicate's twin is within the threshold of it;
4. writes dedup.parquet (DEDUP_SCHEMA, crops-table order) and dedup.stats.json, each atomically.

One run at a time per workdir (WORKDIR/.dedup.lock). A rerun with the same crops, scores and settings
finds dedup.parquet as its stats describe it and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import __version__
from curate.core.atomic import atomic_path, write_json
from curate.core.errors import CurateError, environment_failure, is_environment_error
from curate.core.hashing import file_sha256
from curate.core.image import DecodeFailure, read_bytes
from curate.core.location import readable
from curate.core.lock import stage_lock
from curate.core.pool import default_workers, ordered_map
from curate.core.workdir import DEDUP_SCHEMA, Workdir
from curate.dedup.search import near_pairs
from curate.dedup.unit import REASONS, CropHasher, DedupConfig

CHUNK = 512  # crops per resumable part: a few seconds of decoding and hashing
HASH_VERSION = "phash-32-8-lanczos-v1"  # bump when the hash changes: stored hashes are then redone
HASH_SCHEMA = pa.schema([("crop_id", pa.string()), ("stamp", pa.string()), ("phash", pa.int64()),
                         ("mirror", pa.int64()), ("reason", pa.string()), ("detail", pa.string()),
                         ("digest", pa.string()),  # blake2b-128 of the file's bytes: a rewrite of the same bytes is no change
                         ("hashed", pa.bool_())])  # decoded and hashed in this part (False: the digest matched)
PAIRS_SCHEMA = pa.schema([("a", pa.string()), ("b", pa.string()), ("distance", pa.int32())])
MEMBERS_SCHEMA = pa.schema([("crop_id", pa.string()), ("phash", pa.int64()), ("mirror", pa.int64())])


class DedupInputError(CurateError):
    """The workdir cannot be deduplicated (no crops table, wrong columns); the message says what to do."""


def state_root(wd: Workdir) -> Path:
    """Hashes, pairs and the searched set, kept between runs."""
    return wd.root / ".dedup-state"


def lock_path(wd: Workdir) -> Path:
    return wd.root / ".dedup.lock"


class _ReadAndHash:
    """A pool task: a chunk of (crop_id, path, stamp, the stored row or None) -> the chunk's hash rows.

    The file is read in the worker; bytes equal to the stored row's digest keep its hash undecoded."""

    def __init__(self, unit: CropHasher):
        self.unit = unit

    def __call__(self, chunk: list[tuple[str, str, str, tuple | None]]) -> pa.Table:
        rows: dict[str, list] = {f.name: [] for f in HASH_SCHEMA}
        for crop_id, path, stamp, stored in chunk:
            data = read_bytes(path)
            if isinstance(data, DecodeFailure):
                values = (None, None, data.reason, data.detail, None, True)
            else:
                digest = hashlib.blake2b(data, digest_size=16).hexdigest()
                if stored is not None and stored[5] == digest:
                    values = (*stored[1:5], digest, False)
                else:
                    values = (*self.unit(data), digest, True)
            for k, v in zip(HASH_SCHEMA.names, (crop_id, stamp, *values)):
                rows[k].append(v)
        return pa.table(rows, schema=HASH_SCHEMA)


def read_crops(wd: Workdir) -> pa.Table:
    """The crops table's columns dedup needs; DedupInputError when it is absent or wrong."""
    path = wd.crops_table
    if not path.is_file():
        raise DedupInputError(f"{path} not found; run 'curate crop' first (or give the workdir that holds crops.parquet)")
    try:
        return pq.read_table(readable(path), columns=["crop_id", "file", "face_w", "face_h"])
    except (pa.ArrowInvalid, KeyError, OSError) as e:
        if isinstance(e, OSError) and is_environment_error(e):
            raise
        raise DedupInputError(f"{path} is not a crops table with crop_id, file, face_w, face_h: {e}") from None


def _stamp(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return "missing"
    return f"{st.st_size}:{st.st_mtime_ns}"


def run_dedup(workdir: str | os.PathLike | Workdir, config: DedupConfig = DedupConfig(), workers: int | None = None,
              chunk: int = CHUNK, progress: bool = True, stop_after_chunks: int | None = None) -> dict[str, Any]:
    """Mark the workdir's near-duplicate crops in dedup.parquet; return (and save) the stats.

    `stop_after_chunks` ends the run after hashing that many new chunks, as a kill would (tests).
    """
    wd = workdir if isinstance(workdir, Workdir) else Workdir(workdir)
    crops = read_crops(wd)
    try:
        with stage_lock(lock_path(wd), f"the dedup of {wd.root}"):
            return _dedup_locked(wd, crops, config, workers or default_workers(), chunk, progress, stop_after_chunks)
    except OSError as e:
        if is_environment_error(e) or isinstance(e, PermissionError):
            raise environment_failure(e, wd.root) from None
        raise


def _fingerprint(wd: Workdir, crops_sha: str, stamps: list[str], config: DedupConfig) -> str:
    scores = file_sha256(wd.scores_table) if wd.scores_table.is_file() else None
    blob = json.dumps([__version__, HASH_VERSION, crops_sha, scores, config.to_json(),
                       hashlib.sha256("\n".join(stamps).encode()).hexdigest()])
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def _up_to_date(wd: Workdir, fp: str) -> dict[str, Any] | None:
    try:
        stats = json.loads(wd.dedup_stats.read_text())
        if stats.get("fingerprint") == fp and wd.dedup_table.is_file() \
                and file_sha256(wd.dedup_table) == stats.get("dedup_sha256"):
            return stats
    except (OSError, ValueError, AttributeError):
        pass
    return None


def _dedup_locked(wd: Workdir, crops: pa.Table, config: DedupConfig, workers: int, chunk: int, progress: bool,
                  stop_after_chunks: int | None) -> dict[str, Any]:
    from tqdm import tqdm

    t0 = time.perf_counter()
    ids = crops.column("crop_id").to_pylist()
    files = [wd.root / f for f in crops.column("file").to_pylist()]
    stamps = [_stamp(f) for f in files]
    crops_sha = file_sha256(wd.crops_table)
    fp = _fingerprint(wd, crops_sha, stamps, config)
    done = _up_to_date(wd, fp)
    if done is not None:
        return {**done, "up_to_date": True, "seconds": round(time.perf_counter() - t0, 3)}

    store = state_root(wd) / f"hashes-{HASH_VERSION}-{'mirror' if config.mirror else 'plain'}"
    store.mkdir(parents=True, exist_ok=True)
    for stale in state_root(wd).iterdir():  # hashes of another hash version or mirror setting
        if stale.is_dir() and stale != store:
            shutil.rmtree(stale, ignore_errors=True)
    known = _read_store(store)
    todo = [(c, str(f), s, known.get(c)) for c, f, s in zip(ids, files, stamps) if known.get(c, (None,))[0] != s]
    hashed_now = done_now = 0
    seq = 1 + max((int(p.stem.split("-")[1]) for p in store.glob("part-*.parquet")), default=0)
    chunks = [todo[i:i + chunk] for i in range(0, len(todo), chunk)]
    if stop_after_chunks is not None:
        chunks = chunks[:stop_after_chunks]
    with tqdm(total=len(todo), unit="crop", desc="dedup (hash)", disable=not progress, dynamic_ncols=True) as bar:
        for table in ordered_map(_ReadAndHash(CropHasher(config.mirror)), iter(chunks), min(workers, len(chunks) or 1)):
            with atomic_path(store / f"part-{seq:06d}.parquet") as tmp:
                pq.write_table(table, tmp)
            seq += 1
            done_now += table.num_rows
            hashed_now += sum(table.column("hashed").to_pylist())
            for row in zip(*(table.column(n).to_pylist() for n in HASH_SCHEMA.names)):
                known[row[0]] = row[1:]
            bar.update(table.num_rows)
    if done_now < len(todo):
        return {"stage": "dedup", "complete": False, "crops": len(ids), "hashed_now": hashed_now,
                "to_hash": len(todo)}

    current = [known[c] for c in ids]
    _compact(store, ids, current)
    hashes = {c: (k[1], k[2]) for c, k in zip(ids, current) if k[1] is not None}
    pairs, searched_now = _pairs(store, hashes, config)
    table, groups = _decide(wd, crops, current, pairs)
    with atomic_path(wd.dedup_table) as tmp:
        pq.write_table(table, tmp)
    reasons = Counter(r for r in table.column("reason").to_pylist() if r is not None)
    seconds = time.perf_counter() - t0
    stats = {
        "stage": "dedup",
        "complete": True,
        "curate_version": __version__,
        "output": str(wd.dedup_table),
        "config": config.to_json(),
        "hash": HASH_VERSION,
        "crops": len(ids),
        "hashed_now": hashed_now,
        "hashes_reused": len(ids) - hashed_now,
        "compared": len(hashes),
        "searched_now": searched_now,
        "pairs": len(pairs),
        "groups": len(groups),
        "largest_group": max((len(g) for g in groups.values()), default=0),
        "near_duplicate": reasons["near_duplicate"],
        "kept": len(ids) - reasons["near_duplicate"],
        "not_compared": {r: reasons[r] for r in REASONS if reasons[r] and r != "near_duplicate"},
        "crops_sha256": crops_sha,
        "fingerprint": fp,
        "dedup_sha256": file_sha256(wd.dedup_table),
        "seconds": round(seconds, 3),
    }
    write_json(wd.dedup_stats, stats)
    return {**stats, "up_to_date": False}


def _read_store(store: Path) -> dict[str, tuple]:
    """crop_id -> (stamp, hash, mirror, reason, detail, digest, hashed), later parts overriding earlier ones."""
    known: dict[str, tuple] = {}
    for part in sorted(store.glob("*.parquet")):
        if part.name.startswith(("pairs", "members")):
            continue
        try:
            t = pq.read_table(part, schema=HASH_SCHEMA)
        except (pa.ArrowException, OSError) as e:
            if isinstance(e, OSError) and is_environment_error(e):
                raise
            continue  # a damaged part: its crops are hashed again
        for row in zip(*(t.column(n).to_pylist() for n in HASH_SCHEMA.names)):
            known[row[0]] = row[1:]
    return known


def _compact(store: Path, ids: list[str], current: list[tuple]) -> None:
    """The current crops' hashes as one file (parts of earlier runs folded in, departed crops dropped)."""
    cols = list(zip(*current)) if current else [[]] * (len(HASH_SCHEMA) - 1)
    table = pa.table({"crop_id": ids, **{n: list(v) for n, v in zip(HASH_SCHEMA.names[1:], cols)}}, schema=HASH_SCHEMA)
    with atomic_path(store / "hashes.parquet") as tmp:
        pq.write_table(table, tmp)
    for part in store.glob("part-*.parquet"):
        part.unlink()


def _pairs(store: Path, hashes: dict[str, tuple[int, int | None]], config: DedupConfig) -> tuple[pa.Table, int]:
    """Every near pair among `hashes`: those found before between crops whose hash is unchanged, plus
    a search of the others against all. Returns (pairs by crop id, how many crops were searched)."""
    setting = f"t{config.threshold}"
    pairs_file, members_file = store / f"pairs-{setting}.parquet", store / f"members-{setting}.parquet"
    old: set[str] = set()
    old_pairs = PAIRS_SCHEMA.empty_table()
    if pairs_file.is_file() and members_file.is_file():
        try:
            members = pq.read_table(members_file, schema=MEMBERS_SCHEMA).to_pylist()
            old = {m["crop_id"] for m in members if hashes.get(m["crop_id"]) == (m["phash"], m["mirror"])}
            old_pairs = pq.read_table(pairs_file, schema=PAIRS_SCHEMA)
            keep = pc.and_(pc.is_in(old_pairs.column("a"), value_set=pa.array(sorted(old), pa.string())),
                           pc.is_in(old_pairs.column("b"), value_set=pa.array(sorted(old), pa.string())))
            old_pairs = old_pairs.filter(keep)
        except (pa.ArrowException, OSError) as e:
            if isinstance(e, OSError) and is_environment_error(e):
                raise
            old, old_pairs = set(), PAIRS_SCHEMA.empty_table()
    names = sorted(hashes)
    plain = np.array([hashes[c][0] for c in names], dtype=np.int64).view(np.uint64)
    new_pos = np.array([i for i, c in enumerate(names) if c not in old], dtype=np.int64)
    found = [_search(plain[new_pos], plain, config.threshold, new_pos)]
    if config.mirror:
        mirrored = np.array([hashes[c][1] for c in names], dtype=np.int64).view(np.uint64)
        found.append(_search(mirrored[new_pos], plain, config.threshold, new_pos))  # a new crop's mirror vs all
        found.append(_search(plain[new_pos], mirrored, config.threshold, new_pos))  # a new crop vs every mirror
    both = np.concatenate(found)
    a, b = np.minimum(both[:, 0], both[:, 1]), np.maximum(both[:, 0], both[:, 1])
    keep = a != b
    order = np.lexsort((both[keep, 2], b[keep], a[keep]))
    a, b, d = a[keep][order], b[keep][order], both[keep, 2][order]
    first = np.ones(len(a), dtype=bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])  # a pair found twice keeps its smallest distance
    new_pairs = pa.table({"a": [names[i] for i in a[first]], "b": [names[i] for i in b[first]],
                          "distance": d[first].astype(np.int32)}, schema=PAIRS_SCHEMA)
    pairs = pa.concat_tables([old_pairs, new_pairs]).sort_by([("a", "ascending"), ("b", "ascending")])
    # pairs first: killed between the two writes, the next run searches these crops again (same pairs)
    with atomic_path(pairs_file) as tmp:
        pq.write_table(pairs, tmp)
    members = pa.table({"crop_id": names, "phash": [hashes[c][0] for c in names],
                        "mirror": [hashes[c][1] for c in names]}, schema=MEMBERS_SCHEMA)
    with atomic_path(members_file) as tmp:
        pq.write_table(members, tmp)
    for stale in store.glob("pairs-*.parquet"):
        if stale != pairs_file:
            stale.unlink()
    for stale in store.glob("members-*.parquet"):
        if stale != members_file:
            stale.unlink()
    return pairs, len(new_pos)


def _search(queries: np.ndarray, index: np.ndarray, t: int, query_pos: np.ndarray) -> np.ndarray:
    """(index position of the query, index position, distance) rows."""
    found = near_pairs(queries, index, t, same=False)
    return np.stack([query_pos[found[:, 0]], found[:, 1], found[:, 2]], axis=1) if len(found) \
        else np.empty((0, 3), np.int64)


def _preference(wd: Workdir, crops: pa.Table) -> list[str]:
    """Crop ids, the one to keep first: kept by score, largest source face, highest person score, crop_id."""
    area = (np.asarray(crops.column("face_w").fill_null(0), dtype=np.int64)
            * np.asarray(crops.column("face_h").fill_null(0), dtype=np.int64))
    ids = crops.column("crop_id").to_pylist()
    kept = np.ones(len(ids), dtype=np.int64)
    person = np.full(len(ids), -1.0)
    if wd.scores_table.is_file():
        scores = pq.read_table(wd.scores_table, columns=["crop_id", "kept", "person"]).to_pylist()
        by_id = {s["crop_id"]: s for s in scores}
        for i, c in enumerate(ids):
            s = by_id.get(c)
            if s is not None:
                kept[i] = 1 if s["kept"] else 0
                person[i] = -1.0 if s["person"] is None else s["person"]
    rank = sorted(range(len(ids)), key=lambda i: (-kept[i], -area[i], -person[i], ids[i]))
    return [ids[i] for i in rank]


def _decide(wd: Workdir, crops: pa.Table, current: list[tuple], pairs: pa.Table
            ) -> tuple[pa.Table, dict[str, list[str]]]:
    """Greedy grouping over the pairs -> the dedup table (crops-table order) and groups (kept -> members)."""
    near: dict[str, list[tuple[str, int]]] = {}
    for a, b, d in zip(*(pairs.column(n).to_pylist() for n in ("a", "b", "distance"))):
        near.setdefault(a, []).append((b, d))
        near.setdefault(b, []).append((a, d))
    twin: dict[str, tuple[str, int]] = {}
    groups: dict[str, list[str]] = {}
    for crop in _preference(wd, crops):
        if crop in twin or crop not in near:
            continue
        taken = [(other, d) for other, d in near[crop] if other not in twin and other not in groups]
        if taken:
            groups[crop] = [crop]
            for other, d in sorted(taken):
                twin[other] = (crop, d)
                groups[crop].append(other)
    ids = crops.column("crop_id").to_pylist()
    rows: dict[str, list] = {f.name: [] for f in DEDUP_SCHEMA}
    for crop, (_, h, _, reason, *_) in zip(ids, current):
        t = twin.get(crop)
        rows["crop_id"].append(crop)
        rows["phash"].append(h)
        rows["reason"].append("near_duplicate" if t else reason)
        rows["twin"].append(t[0] if t else None)
        rows["distance"].append(t[1] if t else None)
        rows["group"].append(t[0] if t else crop if crop in groups else None)
    return pa.table(rows, schema=DEDUP_SCHEMA), groups


def summary_line(stats: dict[str, Any]) -> str:
    """One line a person reads at the end of the stage."""
    if not stats.get("complete"):
        return f"dedup: stopped after hashing {stats['hashed_now']:,} of {stats['to_hash']:,} crops; run again to resume"
    if stats.get("up_to_date"):
        return (f"dedup: {stats['crops']:,} crops -> kept {stats['kept']:,}: already up to date -> {stats['output']}")
    other = ", ".join(f"{k} {v:,}" for k, v in stats["not_compared"].items())
    return (f"dedup: {stats['crops']:,} crops ({stats['hashed_now']:,} hashed now, {stats['searched_now']:,} searched "
            f"against all {stats['compared']:,}) -> {stats['near_duplicate']:,} near-duplicates in "
            f"{stats['groups']:,} groups (threshold {stats['config']['threshold']}), kept {stats['kept']:,}"
            f"{'; not compared: ' + other if other else ''} in {stats['seconds']:.1f}s -> {stats['output']}")
