"""Stage 1, filter: select posts from Danbooru metadata by favorites, date, tags, rating and size.

The per-post decisions live in curate.filter.rules (`FilterRules`, the shared line loop, the
`PostFilter` unit); `filter_block()` runs that loop over one block of lines and returns columns of
kept rows plus counts. `run_filter()` maps blocks over a
process pool and streams kept rows into a parquet file, applying in the main process the rules that
span inputs or touch the disk (duplicate ids across dumps, the image exists) to each block's kept
rows. An age window counted back from the newest post needs the whole input first: then the kept
rows go to a scratch file and a second pass over them applies all three.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import os
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from curate import __version__
from curate.core.atomic import atomic_path, scratch_path, write_json
from curate.filter.metadata import (
    BLOCK_BYTES,
    CATEGORY_CODE,
    TAG_CATEGORIES,
    Block,
    InputProblem,
    expand_inputs,
    open_blocks,
)
from curate.core.pool import default_workers, ordered_map
from curate.filter.rules import (  # noqa: F401  RULES, FilterRules: re-exported, the runner's public names
    BAD_SAMPLES,
    RULES,
    ROW_KEYS,
    _SCALARS,
    BlockResult,
    FilterRules,
    _iso,
    filter_lines,
)

FILTERED_SCHEMA = pa.schema(
    [
        ("id", pa.int64()),
        ("path", pa.string()),  # relative to the dataset root
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("favs", pa.int32()),
        ("score", pa.int32()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("rating", pa.string()),
        ("file_ext", pa.string()),
        ("md5", pa.string()),
    ]
    + [(f"tags_{c}", pa.list_(pa.string())) for c in TAG_CATEGORIES]
)


def _kept_table(rows: dict[str, list]) -> pa.Table:
    """Rows to the output schema; tags are split into per-category list columns vectorised."""
    n = len(rows["id"])
    names = pa.array(rows["tag_names"], pa.list_(pa.string()))
    codes = pa.array(rows["tag_codes"], pa.list_(pa.string()))
    flat_names = pc.list_flatten(names)
    flat_codes = pc.list_flatten(codes)
    parents = pc.list_parent_indices(names)
    columns = {k: pa.array(rows[k], FILTERED_SCHEMA.field(k).type) for k in _SCALARS}
    # unknown category codes count as general, as in Post.tags()
    known = pc.is_in(flat_codes, value_set=pa.array([CATEGORY_CODE[c] for c in TAG_CATEGORIES]))
    flat_codes = pc.if_else(known, flat_codes, CATEGORY_CODE["general"])
    for category in TAG_CATEGORIES:
        mask = pc.equal(flat_codes, CATEGORY_CODE[category])
        counts = np.bincount(parents.filter(mask).to_numpy(zero_copy_only=False), minlength=n)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
        columns[f"tags_{category}"] = pa.ListArray.from_arrays(pa.array(offsets), flat_names.filter(mask))
    return pa.table(columns, schema=FILTERED_SCHEMA)


def filter_block(block: Block, rules: FilterRules) -> BlockResult:
    """Decode and check every line of one block. Pure apart from reading the block's bytes."""
    res = BlockResult(block.source, block.index, block.disk_bytes)
    rows: dict[str, list] = {k: [] for k in ROW_KEYS}
    with _gc_paused():
        filter_lines(block.read(), rules, res, rows)
        res.kept = _kept_table(rows)
    return res


@contextlib.contextmanager
def _gc_paused():
    # A block allocates millions of small containers and none of them form cycles; left on, the
    # cyclic collector rescans them over and over and costs more than the decoding itself.
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def stats_path(out: str | os.PathLike) -> Path:
    """Where the stats of an output table go: FILTERED.parquet -> FILTERED.stats.json."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".parquet") + ".stats.json")


_ROW_GROUP = 65536


def run_filter(
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    rules: FilterRules,
    dataset_root: str | os.PathLike | None = None,
    workers: int | None = None,
    block_bytes: int = BLOCK_BYTES,
    progress: bool = True,
) -> dict[str, Any]:
    """Filter the metadata in `inputs` into the parquet table `out`; return (and save) the stats."""
    t0 = time.perf_counter()
    out = Path(out)
    files = expand_inputs(inputs)
    problems: list[InputProblem] = []
    total, blocks = open_blocks(files, problems, block_bytes)
    workers = workers or default_workers()

    lines_per_source: Counter = Counter()
    per_input: dict[str, dict[str, int]] = {}
    removed: Counter = Counter()
    bad: Counter = Counter()
    bad_samples: list[dict[str, Any]] = []
    posts = blank = lines = 0
    newest: int | None = None
    buffered: list[pa.Table] = []
    buffered_rows = 0
    # The age window anchored on the newest post needs the whole input first: kept rows then go to a
    # scratch file and a second pass applies it. Otherwise every rule is known up front, and the
    # whole-input rules (duplicates, image on disk) are applied to each block as it arrives.
    two_pass = rules.needs_newest
    cutoff = None if two_pass else rules.age_cutoff(None)
    root = Path(dataset_root) if dataset_root else None
    seen: set[int] = set()
    kept = 0

    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = scratch_path(out, "pass1")
    try:
        with contextlib.ExitStack() as stack:
            dest = scratch if two_pass else stack.enter_context(atomic_path(out))
            writer = stack.enter_context(pq.ParquetWriter(dest, FILTERED_SCHEMA))
            bar = stack.enter_context(tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="filter",
                                           disable=not progress, dynamic_ncols=True))

            def flush() -> None:
                nonlocal buffered, buffered_rows, kept
                table = pa.concat_tables(buffered)
                if not two_pass:
                    table = _whole_input_rules(table, cutoff, root, seen, removed)
                    kept += table.num_rows
                writer.write_table(table)
                buffered, buffered_rows = [], 0

            work = functools.partial(filter_block, rules=rules)
            for r in ordered_map(work, blocks, workers):
                first_line = lines_per_source[r.source]
                lines_per_source[r.source] += r.lines
                entry = per_input.setdefault(r.source, {"lines": 0, "bad_lines": 0, "posts": 0})
                entry["lines"] += r.lines
                entry["bad_lines"] += sum(r.bad.values())
                entry["posts"] += r.posts
                lines += r.lines
                blank += r.blank
                posts += r.posts
                removed.update(r.removed)
                bad.update(r.bad)
                for i, reason, detail in r.bad_samples:
                    if len(bad_samples) < BAD_SAMPLES:
                        bad_samples.append({"file": r.source, "line": first_line + i + 1, "reason": reason, "detail": detail})
                if r.newest is not None and (newest is None or r.newest > newest):
                    newest = r.newest
                buffered.append(r.kept)
                buffered_rows += r.kept.num_rows
                if buffered_rows >= _ROW_GROUP:
                    flush()
                bar.update(r.disk_bytes)
            if buffered_rows:
                flush()
            bar.update(total - bar.n)  # compressed framing and tar headers are not in any block

        if two_pass:
            cutoff = rules.age_cutoff(newest)
            with atomic_path(out) as tmp:
                kept = _second_pass(scratch, tmp, cutoff, root, removed)
    finally:
        scratch.unlink(missing_ok=True)

    seconds = time.perf_counter() - t0
    stats = {
        "stage": "filter",
        "curate_version": __version__,
        "output": str(out),
        "inputs": [{"file": str(f), "bytes": f.stat().st_size} for f in files],
        "per_input": per_input,
        "rules": rules.to_json(),
        "as_of": _iso(rules.as_of if rules.as_of is not None else newest) if (rules.as_of or newest) else None,
        "age_cutoff": _iso(cutoff) if cutoff is not None else None,
        "dataset_root": str(dataset_root) if dataset_root else None,
        "lines": lines,
        "blank_lines": blank,
        "bad_lines": sum(bad.values()),
        "bad_reasons": dict(sorted(bad.items())),
        "posts": posts,
        "removed": {rule: removed[rule] for rule in RULES if removed[rule]},
        "kept": kept,
        "bad_samples": bad_samples,
        "input_problems": [asdict(p) for p in problems],
        "bytes": total,
        "seconds": round(seconds, 3),
        "mb_per_s": round(total / 1e6 / seconds, 1) if seconds else None,
        "workers": workers,
    }
    write_json(stats_path(out), stats)
    return stats


def _second_pass(scratch: Path, dest: Path, cutoff: int | None, root: Path | None, removed: Counter) -> int:
    """Apply the whole-input rules to the kept rows of the first pass, once the age cutoff is known."""
    seen: set[int] = set()
    kept = 0
    pf = pq.ParquetFile(scratch)
    with pq.ParquetWriter(dest, FILTERED_SCHEMA) as writer:
        for i in range(pf.num_row_groups):
            table = _whole_input_rules(pf.read_row_group(i), cutoff, root, seen, removed)
            kept += table.num_rows
            writer.write_table(table)
    return kept


def _whole_input_rules(table: pa.Table, cutoff: int | None, root: Path | None, seen: set[int], removed: Counter) -> pa.Table:
    """The rows of `table` that pass the age window, are not a duplicate id and (with a root) have their image."""
    ids = table.column("id").to_pylist()
    created = table.column("created_at").cast(pa.int64()).to_pylist() if cutoff is not None else None
    paths = table.column("path").to_pylist() if root is not None else None
    keep = []
    for k, post_id in enumerate(ids):
        if cutoff is not None and created[k] < cutoff:  # type: ignore[index]
            removed["max_age"] += 1
            keep.append(False)
        elif post_id in seen:
            removed["duplicate"] += 1
            keep.append(False)
        elif root is not None and not (root / paths[k]).is_file():  # type: ignore[index]
            seen.add(post_id)
            removed["missing_file"] += 1
            keep.append(False)
        else:
            seen.add(post_id)
            keep.append(True)
    return table if all(keep) else table.filter(pa.array(keep, pa.bool_()))


def summary_line(stats: dict[str, Any]) -> str:
    """One line a person reads at the end of the stage."""
    removed = ", ".join(f"{k} {v:,}" for k, v in sorted(stats["removed"].items(), key=lambda kv: -kv[1]))
    problems = f"; {len(stats['input_problems'])} input problem(s)" if stats["input_problems"] else ""
    return (
        f"filter: {stats['lines']:,} lines -> {stats['posts']:,} posts, kept {stats['kept']:,} "
        f"({stats['bad_lines']:,} bad lines{problems}; removed: {removed or 'none'}) "
        f"in {stats['seconds']:.1f}s, {stats['mb_per_s'] or 0:.0f} MB/s -> {stats['output']}"
    )
