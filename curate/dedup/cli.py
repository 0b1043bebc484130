"""`curate dedup`: the thin command over curate.dedup.runner (parse, validate once, run, summarise)."""

from __future__ import annotations

import click

from curate.core.engine import current_engine
from curate.core.location import LocationType
from curate.core.settings import default_of
from curate.dedup.runner import summary_line
from curate.dedup.unit import DedupConfig


@click.command("dedup", context_settings={"max_content_width": 100})
@click.argument("workdir", type=LocationType(file_okay=False))
@click.option("--threshold", type=click.IntRange(0, 16), default=default_of(DedupConfig, "threshold"),
              show_default=True, metavar="BITS",
              help="Near-duplicates differ in at most BITS of their 64-bit perceptual hashes (docs/dedup.md: "
                   "how the default was measured).")
@click.option("--mirror/--no-mirror", default=default_of(DedupConfig, "mirror"), show_default=True,
              help="Also count a left-right flipped copy as a duplicate.")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None, metavar="N",
              help="Processes hashing crops  [default: one per core]")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def dedup_command(workdir, threshold, mirror, workers, progress):
    """Find near-duplicate crops in WORKDIR; writes dedup.parquet + dedup.stats.json.

    Every crop gets a 64-bit perceptual hash (pHash: the 8x8 lowest frequencies of its 32x32 grey
    DCT); every pair of crops within --threshold bits, over all crops, is found (multi-index
    hashing, exact). Crops are grouped greedily in order of preference: kept by score first, then
    the largest face in the source image, then the highest person score, then crop_id. Each crop
    not yet taken keeps itself and marks every untaken crop near it near_duplicate, with its id
    as the twin. `curate pack` then leaves near-duplicates out, as it leaves out rejected crops.
    Blank or near-uniform crops are `flat` and unreadable ones get the reader's code: neither is
    compared, so blank crops never collapse into one group.

    Incremental: a rerun after more crops arrive hashes only the new crops and searches them
    against all the others; a rerun with nothing new writes nothing. A killed run keeps the
    hashes it made and resumes. One dedup run at a time per workdir.

    \b
    Examples:
      curate dedup work
      curate dedup work --threshold 6
      curate dedup work --mirror
    """
    if not (workdir / "crops.parquet").is_file():
        raise click.UsageError(f"{workdir} holds no crops.parquet; run 'curate crop ... --out {workdir}' first")
    stats = current_engine().dedup(workdir, DedupConfig(threshold=threshold, mirror=mirror), workers=workers,
                                   progress=progress)
    click.echo(summary_line(stats))
