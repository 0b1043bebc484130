"""`curate report`: the thin command over curate.report.build."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report", context_settings={"max_content_width": 100})
@click.argument("workdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE.html",
              help="Where to write the page  [default: WORKDIR/report.html]")
@click.option("--filtered", type=click.Path(dir_okay=False, path_type=Path), metavar="FILTERED.parquet",
              help="The filter stage's table  [default: WORKDIR/filtered.parquet]")
@click.option("--samples", type=click.IntRange(min=1), default=36, show_default=True, metavar="N",
              help="Crops shown in each sample grid.")
def report_command(workdir, out, filtered, samples):
    """Write a self-contained HTML report of what every stage did in WORKDIR.

    The funnel (counts and reasons), plots (face sizes, scores, tag frequencies, source
    resolutions) and sample grids of kept crops and of rejects per reason. Works on a
    half-run pipeline: it shows the stages that ran.

    \b
    Examples:
      curate report work/sample
      curate report work/danbooru2018-portraits -o ~/portraits-report.html
    """
    from curate.report.build import build

    if not workdir.is_dir():
        raise click.BadParameter(f"{workdir} is not a folder; give a pipeline's workdir, e.g. work/sample",
                                 param_hint="WORKDIR")
    path = build(workdir, out, samples=samples, filtered=filtered)
    click.echo(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB)")
