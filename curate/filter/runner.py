"""Stage 1, filter: select posts from Danbooru metadata by favorites, date, tags, rating and size.

The per-post decisions live in curate.filter.rules (`FilterRules`, the shared line loop, the
`PostFilter` unit); `filter_block()` runs that loop over one block of lines and returns columns of
kept rows plus counts. `run_filter()` maps blocks over a
process pool and streams kept rows into a parquet file, applying in the main process the rules that
span inputs or touch the disk (duplicate ids across dumps, the image exists) to each block's kept
rows. An age window counted back from the newest post needs the whole input first: then the kept
rows go to a scratch file and a second pass over them applies all three.

A run is resumable and a rerun is free. One run at a time writes an output (a lock beside it,
`.<out>.lock`). Each finished block's kept rows and counts are saved, atomically, in a staging folder
beside the output (`.<out>.staging/`, keyed by a fingerprint of the inputs, the rules and the block
size): a killed run's rerun reads the finished blocks back instead of decoding them again, and then
writes the same bytes an uninterrupted run would have. The staging folder goes once the output and
its stats are in place. A rerun whose inputs, rules and dataset root are unchanged, with the output
as the stats file recorded it, writes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import json
import os
import shutil
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
from curate.core.errors import CurateError, environment_failure
from curate.core.location import as_location
from curate.core.lock import stage_lock
from curate.core.paths import refuse_output_among_inputs
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
    SameFile,
    _iso,
    family_winners,
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
        ("parent_id", pa.int64()),  # null: no parent (the variant group's parent, or a post alone)
        ("pixel_hash", pa.string()),  # null where the dump has none (all 2017-2020 exports)
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
    try:
        with block.mapped() as (data, start, end), _gc_paused():
            filter_lines(data, rules, res, rows, start, end)
    except OSError as e:  # an I/O error reading the input: name the file, not nothing
        if e.filename is None:
            e.filename = block.source
        raise
    with _gc_paused():
        res.kept = _kept_table(rows)
    return res


def _block_result(item: Block | str, rules: FilterRules) -> BlockResult:
    """A block's result: computed, or (a path) read back from the staging folder of an earlier run."""
    if isinstance(item, str):
        return _load_staged(item)
    return filter_block(item, rules)


# --------------------------------------------------------------------------------------------------
# Staged blocks: a finished block's kept rows, with its counts in the file's metadata

_BLOCK_KEY = b"curate.filter.block"


def _stage_block(path: Path, r: BlockResult) -> None:
    """Save one finished block (its kept rows and counts) atomically."""
    counts = {"source": r.source, "index": r.index, "disk_bytes": r.disk_bytes, "lines": r.lines,
              "blank": r.blank, "posts": r.posts, "newest": r.newest, "removed": dict(r.removed),
              "bad": dict(r.bad), "bad_samples": r.bad_samples}
    table = r.kept.replace_schema_metadata({_BLOCK_KEY: json.dumps(counts).encode()})  # type: ignore[union-attr]
    with atomic_path(path) as tmp:
        # one row group: read back, the table has the one chunk the fresh one had, so it is written alike
        pq.write_table(table, tmp, row_group_size=max(1, table.num_rows))


def _load_staged(path: str) -> BlockResult:
    table = pq.read_table(path)
    c = json.loads(table.schema.metadata[_BLOCK_KEY])
    res = BlockResult(c["source"], c["index"], c["disk_bytes"], lines=c["lines"], blank=c["blank"],
                      posts=c["posts"], newest=c["newest"], removed=Counter(c["removed"]), bad=Counter(c["bad"]),
                      bad_samples=[tuple(x) for x in c["bad_samples"]])
    res.kept = table.replace_schema_metadata(None)
    return res


def lock_path(out: str | os.PathLike) -> Path:
    """The lock one run holds while it writes `out`."""
    out = Path(out)
    return out.with_name(f".{out.name}.lock")


def staging_path(out: str | os.PathLike) -> Path:
    """Where a run keeps its finished blocks until `out` is complete."""
    out = Path(out)
    return out.with_name(f".{out.name}.staging")


def _open_staging(staging: Path, fingerprint: str) -> dict[int, Path]:
    """The finished blocks of an earlier run of the same work (block number -> file); else a fresh folder."""
    state = _read_json(staging / "run.json")
    if state is not None and state.get("fingerprint") == fingerprint:
        return {int(p.name[1:-8]): p for p in staging.glob("b*.parquet") if p.name[1:-8].isdigit()}
    _remove(staging)
    staging.mkdir()
    write_json(staging / "run.json", {"stage": "filter", "curate_version": __version__, "fingerprint": fingerprint})
    return {}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _file_key(path: Path) -> list:
    st = path.stat()
    return [os.path.realpath(path), st.st_size, st.st_mtime_ns]


def _import_pandas_before_forking() -> None:
    """pyarrow imports pandas (when installed) on a process's first pa.array or parquet write, ~0.2 s.
    This process needs it anyway for the output: importing it before the pool forks spares every
    worker its own import (measured: 5-10% of a 1 GB run on 2 cores)."""
    with contextlib.suppress(ImportError):
        import pandas  # noqa: F401


def _blocks_fingerprint(files: list[Path], problems: list[InputProblem], rules: FilterRules, block_bytes: int) -> str:
    """What decides every block's result: the input files as found, the rules and the block size."""
    blob = json.dumps([__version__, [_file_key(f) for f in files], [[p.file, p.reason] for p in problems],
                       rules.to_json(), block_bytes], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _root_state(root: Path | None) -> list | None:
    """What the missing-image rule depends on, cheaply: adding or removing an image changes its folder's mtime."""
    if root is None:
        return None
    try:
        with os.scandir(root / "original") as it:
            folders = sorted((e.name, e.stat().st_mtime_ns) for e in it if e.is_dir())
    except OSError:
        folders = None
    return [os.path.realpath(root), folders]


def _up_to_date(out: Path, fingerprint: str) -> dict[str, Any] | None:
    """The stats of `out` if it was written from this very work and is still as it was written."""
    old = _read_json(stats_path(out))
    if old is None or old.get("fingerprint") != fingerprint:
        return None
    try:
        st = out.stat()
    except OSError:
        return None
    if st.st_size != old.get("output_bytes") or st.st_mtime_ns != old.get("output_mtime_ns"):
        return None
    return old


def _ours(filename: Any, out: Path) -> bool:
    """Whether an error's file is one of the hidden files this stage keeps beside `out` (or unnamed)."""
    if filename is None:
        return True
    p = Path(os.fsdecode(filename))
    return p.name.startswith(f".{out.name}") or staging_path(out) in p.parents


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
    out = as_location(out)
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
    """Filter the metadata in `inputs` into the parquet table `out`; return (and save) the stats.

    Resumes a killed run of the same work from its finished blocks; returns the saved stats, with
    `up_to_date` true, and writes nothing when `out` already holds this work's result.
    """
    t0 = time.perf_counter()
    out = Path(out)
    roots = [dataset_root] if dataset_root else []
    refuse_output_among_inputs(out, inputs, roots)
    refuse_output_among_inputs(stats_path(out), inputs, roots, option="--out's stats file")
    problems: list[InputProblem] = []
    files = expand_inputs(inputs, problems)
    root = Path(dataset_root) if dataset_root else None
    blocks_fp = _blocks_fingerprint(files, problems, rules, block_bytes)
    fingerprint = hashlib.sha256(json.dumps([blocks_fp, _root_state(root)]).encode()).hexdigest()
    old = _up_to_date(out, fingerprint)
    if old is not None:
        if staging_path(out).exists():  # a run killed after its stats were written: only the clean-up is left
            with contextlib.suppress(CurateError, OSError), stage_lock(lock_path(out), str(out)):
                _remove(staging_path(out))
        return {**old, "up_to_date": True, "seconds": round(time.perf_counter() - t0, 3)}
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with stage_lock(lock_path(out), str(out)):
            return _run_locked(files, problems, out, rules, root, workers or default_workers(), block_bytes,
                               progress, blocks_fp, fingerprint, t0)
    except OSError as e:
        # A full or read-only disk shows first on a hidden file of ours (the lock, a staged block, the
        # temporary the output is written to): the user asked for `out`, so the line names it.
        if _ours(e.filename, out):
            raise environment_failure(e, out) from None
        raise


def _run_locked(files: list[Path], problems: list[InputProblem], out: Path, rules: FilterRules, root: Path | None,
                workers: int, block_bytes: int, progress: bool, blocks_fp: str, fingerprint: str,
                t0: float) -> dict[str, Any]:
    staging = staging_path(out)
    try:
        finished = _open_staging(staging, blocks_fp)
        stats = _filter_into(files, problems, out, rules, root, workers, block_bytes, progress, staging, finished, t0)
        stats["fingerprint"] = fingerprint
        write_json(stats_path(out), stats)
    except BaseException:
        # Keep what a rerun can resume from; a staging folder with no finished block is just clutter.
        with contextlib.suppress(OSError):
            if not any(staging.glob("b*.parquet")):
                _remove(staging)
        raise
    _remove(staging)
    return {**stats, "up_to_date": False}


def _filter_into(files: list[Path], problems: list[InputProblem], out: Path, rules: FilterRules, root: Path | None,
                 workers: int, block_bytes: int, progress: bool, staging: Path, finished: dict[int, Path],
                 t0: float) -> dict[str, Any]:
    total, blocks = open_blocks(files, problems, block_bytes)
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
    seen: set[int] = set()
    same_file = SameFile()
    # --one-per-family needs every survivor before it can pick: they go to a scratch file first.
    families = rules.one_per_family
    kept = 0
    n_blocks = 0

    def items():
        # A block an earlier run finished is read back from its staged file, not decoded again.
        for seq, block in enumerate(blocks):
            yield str(finished[seq]) if seq in finished else block

    scratch = scratch_path(out, "pass1")
    family_scratch = scratch_path(out, "families")
    try:
        with contextlib.ExitStack() as stack:
            dest = scratch if two_pass else family_scratch if families else stack.enter_context(atomic_path(out))
            writer = stack.enter_context(pq.ParquetWriter(dest, FILTERED_SCHEMA))
            bar = stack.enter_context(tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="filter",
                                           disable=not progress, dynamic_ncols=True))

            def flush() -> None:
                nonlocal buffered, buffered_rows, kept
                table = pa.concat_tables(buffered)
                if not two_pass:
                    table = _whole_input_rules(table, cutoff, root, seen, same_file, removed)
                    kept += table.num_rows
                writer.write_table(table)
                buffered, buffered_rows = [], 0

            _import_pandas_before_forking()
            work = functools.partial(_block_result, rules=rules)
            for seq, r in enumerate(ordered_map(work, items(), workers)):
                n_blocks += 1
                if seq not in finished:
                    _stage_block(staging / f"b{seq:06d}.parquet", r)
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
            if families:
                kept = _second_pass(scratch, family_scratch, cutoff, root, same_file, removed)
            else:
                with atomic_path(out) as tmp:
                    kept = _second_pass(scratch, tmp, cutoff, root, same_file, removed)
        if families:
            with atomic_path(out) as tmp:
                kept = _family_pass(family_scratch, tmp, removed)
    finally:
        scratch.unlink(missing_ok=True)
        family_scratch.unlink(missing_ok=True)

    seconds = time.perf_counter() - t0
    written = out.stat()
    resumed = sum(1 for seq in finished if seq < n_blocks)
    return {
        "stage": "filter",
        "curate_version": __version__,
        "output": str(out),
        "inputs": [{"file": str(f), "bytes": f.stat().st_size} for f in files],
        "per_input": per_input,
        "rules": rules.to_json(),
        "as_of": _iso(rules.as_of if rules.as_of is not None else newest) if (rules.as_of or newest) else None,
        "age_cutoff": _iso(cutoff) if cutoff is not None else None,
        "dataset_root": str(root) if root else None,
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
        "blocks": n_blocks,
        "blocks_resumed": resumed,  # read back from the staging of a killed run, not decoded again
        "block_bytes": block_bytes,
        "seconds": round(seconds, 3),
        "mb_per_s": round(total / 1e6 / seconds, 1) if seconds else None,
        "workers": workers,
        "output_bytes": written.st_size,
        "output_mtime_ns": written.st_mtime_ns,
    }


def _second_pass(scratch: Path, dest: Path, cutoff: int | None, root: Path | None, same_file: SameFile,
                 removed: Counter) -> int:
    """Apply the whole-input rules to the kept rows of the first pass, once the age cutoff is known."""
    seen: set[int] = set()
    kept = 0
    pf = pq.ParquetFile(scratch)
    with pq.ParquetWriter(dest, FILTERED_SCHEMA) as writer:
        for i in range(pf.num_row_groups):
            table = _whole_input_rules(pf.read_row_group(i), cutoff, root, seen, same_file, removed)
            kept += table.num_rows
            writer.write_table(table)
    return kept


def _family_pass(scratch: Path, dest: Path, removed: Counter) -> int:
    """--one-per-family over every survivor: the rows of the family's pick, in input order."""
    pf = pq.ParquetFile(scratch)
    cols = pf.read(columns=["id", "parent_id", "favs"])
    winners = pa.array(family_winners(cols.column("id").to_numpy(),
                                      cols.column("parent_id").to_pylist(),
                                      cols.column("favs").to_numpy()))
    kept = 0
    with pq.ParquetWriter(dest, FILTERED_SCHEMA) as writer:
        for i in range(pf.num_row_groups):
            table = pf.read_row_group(i)
            table = table.filter(pc.is_in(table.column("id"), value_set=winners))
            kept += table.num_rows
            writer.write_table(table)
    removed["family_variant"] += cols.num_rows - kept
    return kept


def _whole_input_rules(table: pa.Table, cutoff: int | None, root: Path | None, seen: set[int],
                       same_file: SameFile, removed: Counter) -> pa.Table:
    """The rows of `table` that pass the age window, are not a duplicate id, (with a root) have their
    image, and are not a copy of an earlier post's file (duplicate_file)."""
    ids = table.column("id").to_pylist()
    created = table.column("created_at").cast(pa.int64()).to_pylist() if cutoff is not None else None
    paths = table.column("path").to_pylist() if root is not None else None
    md5s = table.column("md5").to_pylist()
    pixels = table.column("pixel_hash").to_pylist()
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
        elif same_file.is_copy(md5s[k], pixels[k]):
            seen.add(post_id)
            removed["duplicate_file"] += 1
            keep.append(False)
        else:
            seen.add(post_id)
            keep.append(True)
    return table if all(keep) else table.filter(pa.array(keep, pa.bool_()))


def summary_line(stats: dict[str, Any]) -> str:
    """One line a person reads at the end of the stage."""
    if stats.get("up_to_date"):
        return (f"filter: already up to date ({stats['posts']:,} posts, kept {stats['kept']:,}; same inputs and "
                f"rules as the run that wrote it) -> {stats['output']}")
    resumed = f", {stats['blocks_resumed']:,} of {stats['blocks']:,} blocks resumed" if stats.get("blocks_resumed") else ""
    removed = ", ".join(f"{k} {v:,}" for k, v in sorted(stats["removed"].items(), key=lambda kv: -kv[1]))
    problems = f"; {len(stats['input_problems'])} input problem(s)" if stats["input_problems"] else ""
    return (
        f"filter: {stats['lines']:,} lines -> {stats['posts']:,} posts, kept {stats['kept']:,} "
        f"({stats['bad_lines']:,} bad lines{problems}; removed: {removed or 'none'}) "
        f"in {stats['seconds']:.1f}s, {stats['mb_per_s'] or 0:.0f} MB/s{resumed} -> {stats['output']}"
    )
