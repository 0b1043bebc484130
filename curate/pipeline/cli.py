"""`curate run`: the thin command over curate.pipeline.runner."""

from __future__ import annotations

import click

from curate.pipeline.runner import load, plan, resolve, run


@click.command("run", context_settings={"max_content_width": 100})
@click.argument("pipeline", metavar="PIPELINE")
@click.option("--from", "start", metavar="STAGE", help="Start at STAGE (and run it even if unchanged).")
@click.option("--until", "stop", metavar="STAGE", help="Stop after STAGE.")
@click.option("--set", "overrides", multiple=True, metavar="STAGE.OPTION=VALUE",
              help="Override one option, e.g. --set filter.min_favs=20 (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the plan and do nothing.")
def run_command(pipeline, start, stop, overrides, dry_run):
    """Run the stages of PIPELINE (a name from pipelines/ or a .toml path), skipping what is unchanged.

    Prints the plan first: each stage runs only when its options or inputs changed since its
    last finished run (or an earlier stage reran); an unchanged rerun does nothing and says so.
    One run at a time per workdir (WORKDIR/.run.lock): a second one refuses while the first
    lives. A failing stage stops the run with that stage's one-line error and exit code
    (e.g. `curate crop: error: ...`); the next run starts again at that stage.

    \b
    Examples:
      curate run sample
      DANBOORU=/data/danbooru2018 curate run danbooru2018-portraits
      curate run danbooru2018-portraits --set filter.min_favs=20 --until crop
      curate run pipelines/my-recipe.toml --from score --dry-run
    """
    p = load(resolve(pipeline), list(overrides))
    if dry_run:
        for s in plan(p, start, stop):
            click.echo(f"{s['action']:4s} {s['stage']:7s} {s['why']:26s} curate {s['stage']} {' '.join(s['argv'])}")
        return
    run(p, start, stop, echo=click.echo)
