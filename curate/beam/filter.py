"""filter on Beam: the local filter's unit (`PostFilter`) on every line, the whole-input rules as Beam does them.

    inputs ─ Blocks ─ Reshuffle ─ FilterBlock ─┬─ kept (id, (pos, row)) ─ GroupByKey(id) ─ WholeInput ─┐
                                               ├─ counts per block ─ sum ────── side inputs ───────────┤
                                               └─ bad lines ─ 100 smallest pos ─────────────────────────┤
       ┌────────────────────────────────────────────────────────────────────────────────────────────────┘
       └─ GroupByKey(md5) ─ First ─ GroupByKey(pixel_hash) ─ First [─ GroupByKey(family) ─ Pick] ─ Write

- Blocks cuts each input file as the local runner does (`curate.filter.metadata.open_blocks`: plain
  files by byte range, compressed files and tar members as decompressed pieces); a block is the unit
  of parallelism, and `pos = (file, block, line)` keeps every line's place in input order.
- FilterBlock hands each line of a block to `PostFilter.verdict`, the local engine's own per-line
  decision, so a kept row, a removal reason or a bad line's reason is the same on both engines.
- The whole-input rules (FilterRules' `max_age` anchored on the newest post, `duplicate`,
  `missing_file`) run per post id after grouping: the newest post is a combined side input, and of
  one id's lines the earliest in input order that passes the age window is the one kept, as the
  local runner's single pass keeps it. Then the same-picture rule (`duplicate_file`) keeps, of the
  posts sharing an md5, the earliest in input order, and of those left, of the posts sharing a
  pixel_hash, the earliest (the local runner's `SameFile` in one pass gives the same); with
  --one-per-family each family's pick is `family_winners`, the local runner's own function.
- Write sorts the survivors by `pos` and writes FILTERED.parquet and FILTERED.stats.json through
  Beam's FileSystems (temporary name, then rename), with the same stats keys as the local runner.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict
from typing import Any, Iterable, Iterator

import apache_beam as beam
import pyarrow.parquet as pq

from curate import __version__
from curate.beam import io as bio
from curate.core.location import as_location
from curate.filter.metadata import Block, InputProblem, open_blocks
from curate.filter.rules import BAD_SAMPLES, RULES, ROW_KEYS, FilterRules, PostFilter, _iso, family_winners
from curate.filter.metadata import BLOCK_BYTES
from curate.filter.runner import _ROW_GROUP, _kept_table

_WHOLE_INPUT = ("max_age", "duplicate", "missing_file", "duplicate_file", "family_variant")


class _Blocks(beam.DoFn):
    """(file index, path) -> (file index, Block) for each block; whole-file problems to "problems"."""

    def __init__(self, block_bytes: int):
        self.block_bytes = block_bytes

    def process(self, item: tuple[int, str]) -> Iterator[Any]:
        index, path = item
        problems: list[InputProblem] = []
        _, blocks = open_blocks([as_location(path)], problems, self.block_bytes)
        for block in blocks:
            yield index, block
        for p in problems:
            yield beam.pvalue.TaggedOutput("problems", (index, asdict(p)))


class _FilterBlock(beam.DoFn):
    """One block's lines through PostFilter: kept rows, bad lines, and the block's counts."""

    def __init__(self, rules: FilterRules):
        self.unit = PostFilter(rules)

    def process(self, item: tuple[int, Block]) -> Iterator[Any]:
        file_index, block = item
        counts = {"source": block.source, "key": (file_index, block.index), "lines": 0, "blank": 0, "posts": 0,
                  "removed": Counter(), "bad": Counter(), "newest": None}
        data = block.read()
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()  # the block's final newline ends its last line; it does not start another
        for i, line in enumerate(lines):
            row, reason, detail, created_at = self.unit.verdict(line)
            if created_at is not None and (counts["newest"] is None or created_at > counts["newest"]):
                counts["newest"] = created_at
            if reason == "blank":
                counts["blank"] += 1
            elif row is not None:
                counts["posts"] += 1
                yield row["id"], ((file_index, block.index, i), row)
            elif reason in RULES:
                counts["posts"] += 1
                counts["removed"][reason] += 1
            else:
                counts["bad"][reason] += 1
                yield beam.pvalue.TaggedOutput("bad", ((file_index, block.index, i), block.source, reason, detail[:200]))
        counts["lines"] = len(lines)
        yield beam.pvalue.TaggedOutput("counts", counts)


class _SumCounts(beam.CombineFn):
    """Every block's counts -> the input's: totals, per input, lines per block, the newest post."""

    def create_accumulator(self) -> dict[str, Any]:
        return {"lines": 0, "blank": 0, "posts": 0, "removed": Counter(), "bad": Counter(), "newest": None,
                "per_input": {}, "block_lines": {}}

    def add_input(self, acc: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
        acc["lines"] += c["lines"]
        acc["blank"] += c["blank"]
        acc["posts"] += c["posts"]
        acc["removed"].update(c["removed"])
        acc["bad"].update(c["bad"])
        if c["newest"] is not None and (acc["newest"] is None or c["newest"] > acc["newest"]):
            acc["newest"] = c["newest"]
        entry = acc["per_input"].setdefault(c["source"], {"lines": 0, "bad_lines": 0, "posts": 0})
        entry["lines"] += c["lines"]
        entry["bad_lines"] += sum(c["bad"].values())
        entry["posts"] += c["posts"]
        acc["block_lines"][c["key"]] = c["lines"]
        return acc

    def merge_accumulators(self, accs: Iterable[dict[str, Any]]) -> dict[str, Any]:
        out = self.create_accumulator()
        for a in accs:
            for k in ("lines", "blank", "posts"):
                out[k] += a[k]
            out["removed"].update(a["removed"])
            out["bad"].update(a["bad"])
            if a["newest"] is not None and (out["newest"] is None or a["newest"] > out["newest"]):
                out["newest"] = a["newest"]
            for source, e in a["per_input"].items():
                entry = out["per_input"].setdefault(source, {"lines": 0, "bad_lines": 0, "posts": 0})
                for k in entry:
                    entry[k] += e[k]
            out["block_lines"].update(a["block_lines"])
        return out

    def extract_output(self, acc: dict[str, Any]) -> dict[str, Any]:
        return acc


class _WholeInput(beam.DoFn):
    """One post id's kept lines -> the one the local runner keeps, and why the others went."""

    def __init__(self, rules: FilterRules, dataset_root: str | None):
        self.rules, self.root = rules, dataset_root

    def process(self, item: tuple[int, Iterable[tuple[tuple, dict]]], totals: dict[str, Any]) -> Iterator[Any]:
        _, lines = item
        cutoff = self.rules.age_cutoff(totals["newest"]) if self.rules.needs_newest else self.rules.age_cutoff(None)
        seen = False
        for pos, row in sorted(lines, key=lambda pr: pr[0]):
            if cutoff is not None and row["created_at"] < cutoff:
                yield beam.pvalue.TaggedOutput("removed", "max_age")
            elif seen:
                yield beam.pvalue.TaggedOutput("removed", "duplicate")
            elif self.root is not None and not bio.exists(bio.join(self.root, row["path"])):
                seen = True
                yield beam.pvalue.TaggedOutput("removed", "missing_file")
            else:
                seen = True
                yield pos, row


def _keyed_on(field: str):
    """(pos, row) -> (row[field], (pos, row)); a row without the field gets a key of its own (its place)."""
    def key(item: tuple[tuple, dict]) -> tuple[str, tuple[tuple, dict]]:
        pos, row = item
        return (f"v{row[field]}" if row[field] else f"p{pos}"), item
    return key


class _FirstOfKey(beam.DoFn):
    """The posts sharing one key -> the earliest in input order; the others are removed as `reason`."""

    def __init__(self, reason: str):
        self.reason = reason

    def process(self, item: tuple[str, Iterable[tuple[tuple, dict]]]) -> Iterator[Any]:
        _, group = item
        first, *rest = sorted(group, key=lambda pr: pr[0])
        yield first
        for _ in rest:
            yield beam.pvalue.TaggedOutput("removed", self.reason)


class _FamilyPick(beam.DoFn):
    """One variant group -> its pick (family_winners, as the local runner decides); the others family_variant."""

    def process(self, item: tuple[int, Iterable[tuple[tuple, dict]]]) -> Iterator[Any]:
        _, group = item
        group = list(group)
        (winner,) = family_winners([r["id"] for _, r in group], [r["parent_id"] for _, r in group],
                                   [r["favs"] for _, r in group])
        for pos, row in group:
            if row["id"] == winner:
                yield pos, row
            else:
                yield beam.pvalue.TaggedOutput("removed", "family_variant")


class _Write(beam.DoFn):
    """All survivors -> FILTERED.parquet and FILTERED.stats.json, each written whole or not at all."""

    def __init__(self, rules: FilterRules, out: str, stats_out: str, inputs: list[dict[str, Any]],
                 dataset_root: str | None, started: float, listed: list[tuple[int, dict]], block_bytes: int):
        self.rules, self.out, self.stats_out, self.block_bytes = rules, out, stats_out, block_bytes
        self.inputs, self.root, self.started, self.listed = inputs, dataset_root, started, listed

    def process(self, kept: list[tuple[tuple, dict]], totals: dict[str, Any], late: dict[str, int],
                bad: list[tuple], problems: list[tuple[int, dict]]) -> Iterator[dict[str, Any]]:
        kept = sorted(kept, key=lambda pr: pr[0])
        rows: dict[str, list] = {k: [] for k in ROW_KEYS}
        for _, row in kept:
            for k in ROW_KEYS:
                rows[k].append(row[k])
        table = _kept_table(rows)
        with bio.atomic_create(self.out) as f:
            pq.write_table(table, f, row_group_size=_ROW_GROUP)
        stats = self._stats(totals, late, bad, problems, table.num_rows)
        bio.write_bytes_atomic(self.stats_out, (json.dumps(stats, indent=2, default=str) + "\n").encode())
        yield stats

    def _stats(self, totals, late, bad, problems, kept: int) -> dict[str, Any]:
        removed = Counter(totals["removed"])
        removed.update(late)
        newest = totals["newest"]
        rules = self.rules
        cutoff = rules.age_cutoff(newest) if rules.needs_newest else rules.age_cutoff(None)
        # a bad line's number within its source: the lines of the source's earlier blocks, plus its own
        before: dict[tuple[int, int], int] = {}
        for (f, b) in sorted(totals["block_lines"]):
            before[(f, b)] = sum(n for (f2, b2), n in totals["block_lines"].items() if f2 == f and b2 < b)
        samples = [{"file": source, "line": before.get((f, b), 0) + i + 1, "reason": reason, "detail": detail}
                   for (f, b, i), source, reason, detail in sorted(bad, key=lambda s: s[0])]
        seconds = time.time() - self.started
        total = sum(i["bytes"] for i in self.inputs)
        anchor = rules.as_of if rules.as_of is not None else newest
        return {
            "stage": "filter",
            "engine": "beam",
            "curate_version": __version__,
            "output": self.out,
            "inputs": self.inputs,
            "per_input": totals["per_input"],
            "rules": rules.to_json(),
            "as_of": _iso(anchor) if anchor else None,
            "age_cutoff": _iso(cutoff) if cutoff is not None else None,
            "dataset_root": self.root,
            "lines": totals["lines"],
            "blank_lines": totals["blank"],
            "bad_lines": sum(totals["bad"].values()),
            "bad_reasons": dict(sorted(totals["bad"].items())),
            "posts": totals["posts"],
            "removed": {rule: removed[rule] for rule in RULES if removed[rule]},
            "kept": kept,
            "bad_samples": samples,
            "input_problems": [p for _, p in sorted([*self.listed, *problems], key=lambda ip: ip[0])],
            "bytes": total,
            "blocks": len(totals["block_lines"]),
            "blocks_resumed": 0,
            "block_bytes": self.block_bytes,
            "seconds": round(seconds, 3),
            "mb_per_s": round(total / 1e6 / seconds, 1) if seconds else None,
            "workers": None,
        }


class FilterTransform(beam.PTransform):
    """The filter stage on Beam: metadata files -> FILTERED.parquet + FILTERED.stats.json.

    Its output is a one-element PCollection: the stats dict (what the local `run_filter` returns).
    """

    def __init__(self, files: list[str], out: str, rules: FilterRules, dataset_root: str | None = None,
                 input_problems: list[InputProblem] = (), block_bytes: int = BLOCK_BYTES):
        super().__init__()
        self.block_bytes = block_bytes
        self.files, self.out, self.rules, self.root = files, out, rules, dataset_root
        self.input_problems = list(input_problems)  # found while listing the inputs (expand_inputs)

    def expand(self, pbegin):
        from curate.filter.runner import stats_path

        inputs = [{"file": f, "bytes": bio.size(f)} for f in self.files]
        started = time.time()
        listed = [(-1, asdict(p)) for p in self.input_problems]
        blocks = (pbegin | "Files" >> beam.Create(list(enumerate(self.files)))
                  | "Blocks" >> beam.ParDo(_Blocks(self.block_bytes)).with_outputs("problems", main="blocks"))
        lines = (blocks.blocks | "Spread" >> beam.Reshuffle()
                 | "FilterBlock" >> beam.ParDo(_FilterBlock(self.rules)).with_outputs("counts", "bad", main="kept"))
        totals = lines.counts | "Totals" >> beam.CombineGlobally(_SumCounts())
        bad = lines.bad | "FirstBad" >> beam.combiners.Top.Of(BAD_SAMPLES, key=lambda s: s[0], reverse=True)
        survivors = (lines.kept | "ById" >> beam.GroupByKey()
                     | "WholeInput" >> beam.ParDo(_WholeInput(self.rules, self.root),
                                                  totals=beam.pvalue.AsSingleton(totals)).with_outputs("removed", main="kept"))
        by_md5 = (survivors.kept | "KeyMd5" >> beam.Map(_keyed_on("md5")) | "ByMd5" >> beam.GroupByKey()
                  | "FirstOfMd5" >> beam.ParDo(_FirstOfKey("duplicate_file")).with_outputs("removed", main="kept"))
        by_pixels = (by_md5.kept | "KeyPixels" >> beam.Map(_keyed_on("pixel_hash"))
                     | "ByPixels" >> beam.GroupByKey()
                     | "FirstOfPixels" >> beam.ParDo(_FirstOfKey("duplicate_file")).with_outputs("removed", main="kept"))
        kept, removed = by_pixels.kept, [survivors.removed, by_md5.removed, by_pixels.removed]
        if self.rules.one_per_family:
            picked = (kept | "KeyFamily" >> beam.Map(lambda pr: (pr[1]["parent_id"] or pr[1]["id"], pr))
                      | "ByFamily" >> beam.GroupByKey()
                      | "FamilyPick" >> beam.ParDo(_FamilyPick()).with_outputs("removed", main="kept"))
            kept = picked.kept
            removed.append(picked.removed)
        late = (removed | "AllRemoved" >> beam.Flatten() | "CountLate" >> beam.combiners.Count.PerElement())
        return (kept | "AllKept" >> beam.combiners.ToList()
                | "Write" >> beam.ParDo(
                    _Write(self.rules, self.out, str(stats_path(self.out)), inputs, self.root, started, listed,
                           self.block_bytes),
                    totals=beam.pvalue.AsSingleton(totals), late=beam.pvalue.AsDict(late),
                    bad=beam.pvalue.AsSingleton(bad, default_value=[]), problems=beam.pvalue.AsList(blocks.problems)))
