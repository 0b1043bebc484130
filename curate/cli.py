"""The `curate` command: a click group whose stage commands live in their own modules.

Subcommands load lazily, so `curate filter` never imports what `curate train` needs. Misuse (a bad
option, a missing input) prints a single line that says what to do, never a traceback: click's own
errors, and any `curate.core.errors.CurateError` a stage raises, as `curate <cmd>: error: <message>`.
Exit codes: 2 for misuse and unusable input (click's usage errors and most CurateErrors), 1 for a
failure outside the request (a CurateError with exit_code 1, e.g. no network for `curate fetch`, or
any OSError that escapes a command: a full, read-only or failing disk, named with its path), 130 when
interrupted. `CURATE_DEBUG=1` lets an OSError's traceback through, for bug reports.
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from curate import __version__
from curate.core.errors import CurateError, environment_failure

# name -> "module:attribute"; the order here is the order `curate --help` lists them.
COMMANDS = {
    "fetch": "curate.fetch.cli:fetch_command",
    "filter": "curate.filter.cli:filter_command",
    "crop": "curate.crop.cli:crop_command",
    "score": "curate.score.cli:score_command",
    "dedup": "curate.dedup.cli:dedup_command",
    "review": "curate.review.cli:review_group",
    "pack": "curate.dataset.pack_cli:pack_command",
    "inspect": "curate.dataset.inspect_cli:inspect_command",
    "train": "curate.train.cli:train_command",
    "generate": "curate.train.cli:generate_command",
    "explore": "curate.explore.cli:explore_command",
    "run": "curate.pipeline.cli:run_command",
    "report": "curate.report.cli:report_command",
    "models": "curate.score.models_cli:models_group",
}


class StageFailure(click.ClickException):
    """A CurateError that escaped a command, with the command it escaped from: shown as one line."""

    def __init__(self, error: CurateError, command_path: str):
        super().__init__(" ".join(str(error).split("\n")))
        self.exit_code = error.exit_code
        self.command_path = command_path

    def line(self) -> str:
        """`curate <cmd>: error: <message>`, with the help hint when the request itself is wrong (exit 2)."""
        hint = f" (see '{self.command_path} --help')" if self.exit_code == 2 else ""
        return f"{self.command_path}: error: {self.message}{hint}"

    def show(self, file=None) -> None:
        click.echo(self.line(), file=file, err=file is None)


class StageGroup(click.Group):
    """A group that turns a CurateError escaping a subcommand into a StageFailure naming that subcommand."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except CurateError as e:
            where = getattr(e, "command_path", None) or f"{ctx.command_path} {ctx.invoked_subcommand}"
            raise StageFailure(e, where) from None
        except OSError as e:
            # The machine failed the command (a full or read-only disk, a permission, an I/O error):
            # one line naming the path and the cause. CURATE_DEBUG=1 shows the traceback instead.
            if os.environ.get("CURATE_DEBUG"):
                raise
            where = f"{ctx.command_path} {ctx.invoked_subcommand}"
            raise StageFailure(environment_failure(e), where) from None


class LazyGroup(StageGroup):
    """A group that imports a subcommand's module only when that subcommand is used or listed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        target = COMMANDS.get(name)
        if target is None:
            return None
        module, attr = target.split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "-V", "--version", prog_name="curate")
def cli() -> None:
    """Turn a Danbooru dump into a clean 512x256 portrait dataset for StyleGAN, stage by stage.

    \b
    Stages (each resumable, each writes a table and a stats file you can inspect):
      fetch    Danbooru API -> a small dump   (when you have no local dump)
      filter   metadata -> FILTERED.parquet   (favorites, date, tags, rating, size)
      crop     FILTERED.parquet or a folder -> WORKDIR/crops/ + crops.parquet   (512x256 face portraits)
      score    WORKDIR crops -> scores.parquet (illustration2vec person probability, or a heuristic)
      dedup    WORKDIR crops -> dedup.parquet  (near-duplicates by perceptual hash; pack leaves them out)
      review   crops -> WORKDIR/review.sqlite  (browser grid; export; contact sheet)
      pack     WORKDIR -> multi-resolution TFRecords + dataset.json (512x256 .. 4x2)
      inspect  read a packed dataset back with tf.data; check hashes, counts, shapes
      train    DATASET_DIR -> a progressive StyleGAN run (8x4 .. 512x256), resumable
      generate RUN -> images and an interpolation strip from the trained generator
      explore  RUN -> a browser page: interpolate, attribute directions, feature maps, local edits
      models   install / list pretrained weights (illustration2vec)
      run      a pipeline from pipelines/: every stage, rerunning only what changed
      report   WORKDIR -> report.html        (funnel, plots, sample grids)

    \b
    Examples:
      curate filter /data/danbooru2018/metadata --dataset-root /data/danbooru2018 --out work/filtered.parquet
      curate filter posts.json.gz --min-favs 10 --max-age-years 6 --out filtered.parquet
      curate crop work/filtered.parquet --dataset-root /data/danbooru2018 --out work
      curate review grid work
    """


def main(argv: list[str] | None = None) -> None:
    """Console entry point: run the group, turning click's errors and CurateErrors into one line each."""
    try:
        rv = cli.main(args=argv, prog_name="curate", standalone_mode=False)
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx else "curate"
        click.echo(f"{where}: error: {e.format_message()} (see '{where} --help')", err=True)
        sys.exit(2)
    except StageFailure as e:
        e.show()
        sys.exit(e.exit_code)
    except click.ClickException as e:
        click.echo(f"curate: error: {e.format_message()}", err=True)
        sys.exit(e.exit_code)
    except click.Abort:
        click.echo("curate: interrupted", err=True)
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)

