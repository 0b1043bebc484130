"""`curate report`: one self-contained HTML page showing what every stage did to the data.

Reads whatever the workdir holds (filter, crop, score and pack stats, the tables, the review log), so
a report of a half-run pipeline shows the stages that ran. The page has the funnel (counts and the
reasons things were removed), plots made with matplotlib (face sizes, scores, tag frequencies, source
resolutions) and sample grids of kept crops and of rejects per reason. Pictures are embedded as data
URIs: the file can be mailed or archived on its own. The page is the Jinja2 template
templates/report.html (autoescaped); this module gathers what it shows.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curate import __version__
from curate.core.atomic import write_bytes
from curate.core.grid import png_bytes, read_tiles, render_grid
from curate.core.errors import InputError
from curate.core.paths import refuse_output_among_inputs
from curate.core.workdir import Workdir, latest_decisions, surviving_crops

THUMB = (128, 64)  # height, width: a 512x256 crop at a quarter


@dataclass
class Step:
    """One row of the funnel: what remained after a stage, and why the rest went."""

    stage: str
    label: str
    count: int
    removed: dict[str, int] = field(default_factory=dict)


def _json(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError as e:  # not JSON, or not UTF-8
        raise InputError(f"{path} is not a stats file ({e}); rerun the stage that wrote it") from None


def check_tables(wd: Workdir, filtered: Path | None = None) -> None:
    """InputError (one line naming it) for a table or review database in the workdir that cannot be read."""
    filtered = filtered or wd.root / "filtered.parquet"
    for table in (filtered, wd.crops_table, wd.scores_table, wd.dedup_table):
        if table.exists():
            try:
                pq.read_schema(table)
            except (pa.ArrowException, OSError) as e:
                cause = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise InputError(f"{table} cannot be read as a table ({cause}); rerun the stage that wrote it") from None
    latest_decisions(wd.review_db)  # a log that cannot be read is one line naming it (core.reviewlog)


def report_inputs(wd: Workdir, filtered: Path | None = None) -> list[Path]:
    """Every file and folder the report reads: its --out must be none of them."""
    filtered = filtered or wd.root / "filtered.parquet"
    return [filtered, filtered.with_name(filtered.name.removesuffix(".parquet") + ".stats.json"),
            wd.crops_table, wd.crops_dir, wd.root / "crops.stats.json", wd.scores_table, wd.root / "scores.stats.json",
            wd.dedup_table, wd.dedup_stats, wd.review_db, wd.root / "dataset" / "dataset.json"]


def gather(wd: Workdir, filtered: Path | None = None) -> dict[str, Any]:
    """Every stats file and table the workdir holds (None where a stage has not run)."""
    filtered = filtered or wd.root / "filtered.parquet"
    return {
        "filter": _json(filtered.with_name(filtered.name.removesuffix(".parquet") + ".stats.json")),
        "filtered_table": filtered if filtered.exists() else None,
        "crop": _json(wd.root / "crops.stats.json"),
        "score": _json(wd.root / "scores.stats.json"),
        "dedup": _json(wd.dedup_stats),
        "pack": _json(wd.root / "dataset" / "dataset.json"),
        "decisions": latest_decisions(wd.review_db),
    }


def funnel(info: dict[str, Any], wd: Workdir) -> list[Step]:
    """The funnel from metadata lines to packed records, as far as the stages have run."""
    steps: list[Step] = []
    f = info["filter"]
    if f:
        steps.append(Step("filter", "posts in the metadata", f["posts"],
                          {"bad lines": f["bad_lines"]} if f["bad_lines"] else {}))
        steps.append(Step("filter", "posts kept by the filter", f["kept"], dict(f["removed"])))
    c = info["crop"]
    if c:
        removed = dict(c.get("decode_failures", {}))
        if c.get("no_face"):
            removed["no face"] = c["no_face"]
        steps.append(Step("crop", "images with a face", c["images_with_faces"], removed))
        found = c.get("found_by") or {}
        if found:  # --detector animeface|both: who proposed each face, and how many AnimeFace confirmed
            steps.append(Step("crop", "faces proposed by a detector", sum(found.values()), {}))
            confirmed = found.get("both", 0) + found.get("animeface", 0)
            steps.append(Step("crop", "faces confirmed by AnimeFace (with landmarks)", confirmed,
                              {"cascade only, not confirmed": found["lbp"]} if found.get("lbp") else {}))
        rejected = {k: v for k, v in c.get("rejected_faces", {}).items() if v}
        if c.get("over_max_faces"):
            rejected["over --max-faces"] = c["over_max_faces"]
        steps.append(Step("crop", "portrait crops", c["crops"], rejected))
    s = info["score"]
    if s:
        steps.append(Step("score", f"crops kept by the {s['scorer']} scorer", s["kept"], dict(s.get("rejected", {}))))
    if wd.crops_table.exists():
        _, counts = surviving_crops(wd)
        d = info["dedup"]
        if d and "removed_by_dedup" in counts:
            left = counts["crops"] - counts.get("removed_by_score", 0) - counts["removed_by_dedup"]
            steps.append(Step("dedup", f"crops that are no near-duplicate (threshold {d['config']['threshold']})", left,
                              {"near_duplicate": counts["removed_by_dedup"]} if counts["removed_by_dedup"] else {}))
        if counts.get("removed_by_review"):
            steps.append(Step("review", "crops not rejected in review", counts["surviving"],
                              {"rejected by a person": counts["removed_by_review"]}))
    p = info["pack"]
    if p:
        skipped = p.get("source", {}).get("skipped", {})
        steps.append(Step("pack", "records in the dataset", p["count"], dict(skipped)))
    return steps


# ---------------------------------------------------------------------------------------------------
# pictures

def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def _figure_uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return _png_uri(buf.getvalue())


def _plt():
    import matplotlib

    matplotlib.use("Agg")  # no display: render to files only
    import matplotlib.pyplot as plt

    return plt


def plot_funnel(steps: list[Step]) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(steps) + 0.8))
    labels = [f"{s.stage}: {s.label}" for s in steps][::-1]
    counts = [s.count for s in steps][::-1]
    ax.barh(labels, counts, color="#4C78A8")
    for y, v in enumerate(counts):
        ax.text(v, y, f" {v:,}", va="center", fontsize=9)
    if max(counts) > 100 * max(1, min(counts)):  # a log axis only where counts span orders of magnitude
        ax.set_xscale("symlog")
        ax.set_xlabel("count (log scale)")
    else:
        ax.set_xlabel("count")
    ax.spines[["top", "right"]].set_visible(False)
    return _figure_uri(fig)


def plot_histogram(values: np.ndarray, title: str, xlabel: str, bins: int = 40) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(values, bins=bins, color="#54A24B")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    ax.spines[["top", "right"]].set_visible(False)
    return _figure_uri(fig)


def plot_tags(counter: Counter, title: str, n: int = 25) -> str:
    plt = _plt()
    top = counter.most_common(n)[::-1]
    fig, ax = plt.subplots(figsize=(5, 0.22 * len(top) + 0.8))
    ax.barh([t for t, _ in top], [c for _, c in top], color="#F58518")
    ax.set_title(title)
    ax.tick_params(axis="y", labelsize=8)
    ax.spines[["top", "right"]].set_visible(False)
    return _figure_uri(fig)


def plot_resolutions(width: np.ndarray, height: np.ndarray) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    ax.scatter(width, height, s=6, alpha=0.5, color="#B279A2")
    ax.set_xlabel("source width (px)")
    ax.set_ylabel("source height (px)")
    ax.set_title("source resolutions")
    ax.spines[["top", "right"]].set_visible(False)
    return _figure_uri(fig)


def contact_sheet(files: list[Path], columns: int = 12) -> str | None:
    """A grid of crop thumbnails as a PNG data URI (unreadable files show as grey tiles)."""
    if not files:
        return None
    h, w = THUMB
    sheet = render_grid(read_tiles(files), columns, (w, h), gap=4, background=(245, 245, 245),
                        resample=Image.Resampling.LANCZOS)
    return _png_uri(png_bytes(sheet, optimize=True))


def group_sheet(wd: Workdir, files_by_id: dict[str, str], max_groups: int, columns: int = 6) -> tuple[str | None, int]:
    """dedup's groups side by side, one row each (the kept crop first), as a PNG data URI; and how many groups."""
    rows = pq.read_table(wd.dedup_table, columns=["crop_id", "twin", "distance", "group"]).to_pylist()
    groups: dict[str, list[tuple[str, int | None]]] = {}
    for r in rows:
        if r["group"] is not None:
            groups.setdefault(r["group"], []).append((r["crop_id"], r["distance"]))
    if not groups:
        return None, 0
    h, w = THUMB
    blank = np.full((h, w, 3), 245, np.uint8)
    tiles, captions = [], []
    columns = min(columns, max(len(m) for m in groups.values()))
    for keeper, members in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:max_groups]:
        members = sorted(members, key=lambda m: (m[1] is not None, m[1] or 0, m[0]))[:columns]
        row = read_tiles([wd.root / files_by_id[c] for c, _ in members if c in files_by_id])
        tiles += row + [blank] * (columns - len(row))
        captions += [c if d is None else f"d={d}: {c}" for c, d in members if c in files_by_id]
        captions += [""] * (columns - len(row))
    sheet = render_grid(tiles, columns, (w, h), captions=captions, gap=4, background=(245, 245, 245),
                        caption_colour=(60, 60, 60), resample=Image.Resampling.LANCZOS)
    return _png_uri(png_bytes(sheet, optimize=True)), len(groups)


# ---------------------------------------------------------------------------------------------------
# the page

def build(workdir: str | Path, out: str | Path | None = None, samples: int = 36, filtered: Path | None = None) -> Path:
    """Write the report for `workdir` (default WORKDIR/report.html) and return its path."""
    wd = Workdir(workdir)
    out = Path(out) if out else wd.root / "report.html"
    refuse_output_among_inputs(out, inputs=[p for p in report_inputs(wd, filtered) if p.exists()])
    check_tables(wd, filtered)
    info = gather(wd, filtered)
    steps = funnel(info, wd)
    figures: list[tuple[str, str]] = []
    grids: list[tuple[str, str, int]] = []

    if steps:
        figures.append(("The funnel", plot_funnel(steps)))
    crops = pq.read_table(wd.crops_table).to_pandas() if wd.crops_table.exists() else None
    if crops is not None and len(crops):
        figures.append(("Face sizes", plot_histogram(crops["face_h"].to_numpy(), "detected face height", "px in the source")))
        figures.append(("Source resolutions", plot_resolutions(crops["source_width"].to_numpy(), crops["source_height"].to_numpy())))
    elif info["filtered_table"] is not None:
        t = pq.read_table(info["filtered_table"], columns=["width", "height"]).to_pandas()
        if len(t):
            figures.append(("Source resolutions", plot_resolutions(t["width"].to_numpy(), t["height"].to_numpy())))
    scores = pq.read_table(wd.scores_table).to_pandas() if wd.scores_table.exists() else None
    if scores is not None and scores["person"].notna().any():
        figures.append(("Person scores", plot_histogram(scores["person"].dropna().to_numpy(), "person probability", "illustration2vec")))
    if info["filtered_table"] is not None:
        tags = pq.read_table(info["filtered_table"], columns=["tags_general"]).column("tags_general").to_pylist()
        counter = Counter(t for row in tags for t in row)
        if counter:
            figures.append(("Tags of kept posts", plot_tags(counter, "most frequent general tags")))

    if crops is not None and len(crops):
        kept, _ = surviving_crops(wd)
        files = [wd.root / f for f in kept.column("file").to_pylist()[:samples]]
        grids.append(("Kept crops", contact_sheet(files) or "", kept.num_rows))
        by_id = dict(zip(crops["crop_id"], crops["file"]))
        if scores is not None:
            for reason, group in scores[~scores["kept"]].groupby("reason"):
                files = [wd.root / by_id[c] for c in group["crop_id"][:samples // 2] if c in by_id]
                grids.append((f"Rejected by score: {reason}", contact_sheet(files) or "", len(group)))
        if wd.dedup_table.exists():
            sheet, n_groups = group_sheet(wd, by_id, samples // 3)
            if sheet:
                grids.append(("Near-duplicate groups (the kept crop first, then its twins: d = bits apart)",
                              sheet, n_groups))
        rejected = [c for c, s in info["decisions"].items() if s == "rejected" and c in by_id]
        if rejected:
            files = [wd.root / by_id[c] for c in rejected[:samples // 2]]
            grids.append(("Rejected in review", contact_sheet(files) or "", len(rejected)))

    write_bytes(out, _page(wd, steps, figures, grids, info).encode())
    return out


TEMPLATES = Path(__file__).parent / "templates"


@functools.lru_cache(maxsize=1)
def _environment():
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["thousands"] = lambda n: f"{n:,}"
    return env


def _why(step: Step) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(step.removed.items(), key=lambda kv: -kv[1]) if v)


def _page(wd: Workdir, steps: list[Step], figures, grids, info) -> str:
    """The page, rendered from templates/report.html (autoescaped; pictures inline as data URIs)."""
    return _environment().get_template("report.html").render(
        name=wd.root.name,
        root=str(wd.root),
        version=__version__,
        generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        scorer=info["score"]["scorer"] if info["score"] else None,
        steps=[{"stage": s.stage, "label": s.label, "count": s.count, "why": _why(s)} for s in steps],
        figures=figures,
        grids=grids,
    )
