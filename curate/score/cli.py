"""`curate score`: the thin command over curate.score.runner (parse, validate once, run, summarise)."""

from __future__ import annotations

from pathlib import Path

import click

from curate.core.engine import current_engine
from curate.core.location import LocationType

from curate.core.settings import default_of
from curate.score.runner import run_score, summary_line
from curate.score.scorer import SCORERS, ScoreRules

_D = ScoreRules()


def _run(name: str):
    """A default of run_score's own parameters (scorer, batch size, top-k)."""
    return default_of(run_score, name)


@click.command("score", context_settings={"max_content_width": 100})
@click.argument("workdir", type=LocationType(file_okay=False))
@click.option("--scorer", type=click.Choice(("auto",) + SCORERS), default=_run("scorer"), show_default=True,
              help="auto = illustration2vec when installed (curate models list), else heuristic.")
@click.option("--min-person", type=click.FloatRange(0, 1), default=_D.min_person, show_default=True, metavar="P",
              help="illustration2vec: reject crops whose person probability is below P (no_person).")
@click.option("--min-confidence", type=float, default=None, metavar="C",
              help="heuristic: reject crops whose detector confidence is below C (low_confidence)  [default: off]")
@click.option("--min-contrast", type=click.FloatRange(min=0), default=_D.min_contrast, show_default=True, metavar="S",
              help="Reject near-empty crops: grey-level std below S (flat).")
@click.option("--max-dominant", type=click.FloatRange(0, 1), default=_D.max_dominant, show_default=True, metavar="F",
              help="Reject crops where one colour covers more than F of the pixels (flat).")
@click.option("--min-colours", type=click.IntRange(min=0), default=_D.min_colours, show_default=True, metavar="N",
              help="Reject crops with fewer than N colours, each covering >= 0.1% (few_colours).")
@click.option("--min-sharpness", type=click.FloatRange(min=0), default=_D.min_sharpness, show_default=True, metavar="V",
              help="Reject crops whose variance of the Laplacian is below V (blurry).")
@click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Models folder  [default: $CURATE_MODELS or ~/.cache/curate/models]")
@click.option("--batch-size", type=click.IntRange(min=1), default=_run("batch_size"), show_default=True, metavar="N",
              help="Crops per inference batch.")
@click.option("--top-k", type=click.IntRange(min=0, max=512), default=_run("top_k"), show_default=True, metavar="K",
              help="General tags kept per crop (top_tags, top_probs).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def score_command(workdir, scorer, min_person, min_confidence, min_contrast, max_dominant, min_colours,
                  min_sharpness, models_dir, batch_size, top_k, progress):
    """Score the crops in WORKDIR: does each show a person? Writes scores.parquet + scores.stats.json.

    With illustration2vec installed (curate models install illustration2vec) each crop gets the
    person probability (the largest of 1girl, 2girls, multiple girls, 1boy, ..., solo), the three
    rating probabilities and its top general tags. Without it the heuristic scorer runs: detector
    confidence plus image checks; it has no person probability and says so. Either way crops that
    cannot be read (rejected with the reader's code: missing_file, truncated, corrupt, ...), are
    flat, have too few colours or are blurry are rejected with that reason.
    Resumable: a killed run continues at the next chunk; changing only thresholds re-decides
    without re-scoring; a rerun with the same inputs and thresholds rewrites nothing. One score
    run at a time per workdir (a second refuses). A full or read-only workdir stops the stage
    with exit 1, keeping the chunks already scored: free space and run it again.

    \b
    Examples:
      curate score work
      curate score work --min-person 0.8
      curate score work --scorer heuristic --min-confidence 1.5 --min-sharpness 20
    """
    rules = ScoreRules(min_person=min_person, min_confidence=min_confidence, min_contrast=min_contrast,
                       max_dominant=max_dominant, min_colours=min_colours, min_sharpness=min_sharpness)
    stats = current_engine().score(workdir, rules, scorer=scorer, models_root=models_dir, batch_size=batch_size,
                      top_k=top_k, progress=progress)
    click.echo(summary_line(stats))
