"""`curate inspect`: read a packed dataset back with tf.data, check it, print a table, draw a grid."""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import click

from curate.core.errors import environment_failure, is_environment_error


def _check_writable(png: Path) -> None:
    """Fail now, not after reading every file, when the grid's folder cannot be written (read-only, no permission)."""
    folder = png.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        if is_environment_error(e) or isinstance(e, PermissionError):
            raise environment_failure(e, png) from None
        raise


@click.command("inspect", context_settings={"max_content_width": 100})
@click.argument("dataset_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--samples", "-n", type=click.IntRange(min=0), default=8, show_default=True, metavar="N",
              help="Images in the grid (the first N records: the same images at every level).")
@click.option("--grid", type=click.Path(dir_okay=False, path_type=Path), default=None, metavar="PNG",
              help="Where to write the grid  [default: DATASET_DIR/inspect-grid.png]")
@click.pass_context
def inspect_command(ctx, dataset_dir, samples, grid):
    """Read every file of DATASET_DIR with tf.data and check it against dataset.json.

    Checks each file's sha256 and record count, every record's checksum and shape, and the labels
    file; prints one table row per level and writes a PNG grid with the same samples at every level
    (one row per sample, each level scaled up to the top size). Each problem is reported as one line
    on stderr naming the file and what is wrong (missing file, hash mismatch, bad crc, truncated
    record, wrong shape, count mismatch); the exit status is then 1.

    \b
    Examples:
      curate inspect datasets/portraits
      curate inspect datasets/portraits -n 16 --grid /tmp/levels.png
    """
    if not dataset_dir.is_dir():
        raise click.BadParameter(f"{dataset_dir} is not a folder; give the --out folder of `curate pack`",
                                 param_hint="DATASET_DIR")
    if importlib.util.find_spec("tensorflow") is None:
        raise click.UsageError("curate inspect reads the files with TensorFlow; install it: pip install 'curate[train]'")
    from curate.core.paths import refuse_output_among_inputs
    from curate.dataset.inspect import dataset_inputs, inspect_dataset, level_table, sample_grid, write_grid

    if grid is not None:
        refuse_output_among_inputs(grid, inputs=dataset_inputs(dataset_dir), option="--grid")
    if samples:
        _check_writable(grid or dataset_dir / "inspect-grid.png")
    report = inspect_dataset(dataset_dir, samples=samples)
    click.echo(level_table(report))
    picture = sample_grid(report) if samples else None
    if picture is not None:
        grid = grid or dataset_dir / "inspect-grid.png"
        write_grid(picture, grid)
        click.echo(f"grid: {picture.shape[0]}x{picture.shape[1]} -> {grid}")
    count = report.manifest["count"] if report.manifest else (report.levels[0].records if report.levels else 0)
    if report.problems:
        for p in report.problems:
            click.echo(f"inspect: {p.line(dataset_dir)}", err=True)
        click.echo(f"inspect: {len(report.problems)} problem(s) in {dataset_dir}", err=True)
        ctx.exit(1)
    click.echo(f"inspect: {len(report.levels)} levels x {count:,} images, every file read by tf.data and matching "
               f"dataset.json -> ok")
