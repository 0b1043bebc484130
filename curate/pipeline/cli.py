"""`curate run`: the thin command over curate.pipeline.runner."""

from __future__ import annotations

import click

from curate.pipeline.runner import check_engine, load, plan, resolve, run


@click.command("run", context_settings={"max_content_width": 100})
@click.argument("pipeline", metavar="PIPELINE")
@click.option("--from", "start", metavar="STAGE", help="Start at STAGE (and run it even if unchanged).")
@click.option("--until", "stop", metavar="STAGE", help="Stop after STAGE.")
@click.option("--set", "overrides", multiple=True, metavar="STAGE.OPTION=VALUE",
              help="Override one option, e.g. --set filter.min_favs=20 (repeatable).")
@click.option("--dry-run", is_flag=True, help="Print the plan and do nothing.")
@click.option("--engine", type=click.Choice(["local", "beam"]), default="local", show_default=True,
              help="Who does the stages' work: this machine's process pool, or Apache Beam (see docs/beam.md).")
@click.option("--beam-runner", metavar="NAME", default=None,
              help="Beam's runner for --engine beam (default DirectRunner, in processes, one per core): "
                   "DataflowRunner, FlinkRunner, SparkRunner, ...")
@click.argument("beam_options", nargs=-1, type=click.UNPROCESSED, metavar="[-- BEAM_OPTIONS...]")
def run_command(pipeline, start, stop, overrides, dry_run, engine, beam_runner, beam_options):
    """Run the stages of PIPELINE (a name from pipelines/ or a .toml path), skipping what is unchanged.

    Prints the plan first: each stage runs only when its options or inputs changed since its
    last finished run (or an earlier stage reran); an unchanged rerun does nothing and says so.
    One run at a time per workdir (WORKDIR/.run.lock): a second one refuses while the first
    lives. A failing stage stops the run with that stage's one-line error and exit code
    (e.g. `curate crop: error: ...`); the next run starts again at that stage.

    With --engine beam, filter, crop, score and pack each run as an Apache Beam pipeline built
    from the same per-item units, with the same outputs, byte for byte; options after `--` go to
    Beam unchanged. fetch always runs here. On Beam, the pipeline's input and workdir may be
    object storage (gs://, s3://: docs/beam.md); a bucket workdir has no lock, so run one at a time.

    \b
    Examples:
      curate run sample
      DANBOORU=/data/danbooru2018 curate run danbooru2018-portraits
      curate run danbooru2018-portraits --set filter.min_favs=20 --until crop
      curate run pipelines/my-recipe.toml --from score --dry-run
      curate run sample --engine beam -- --direct_num_workers 2
      curate run danbooru2018-portraits --engine beam --beam-runner DataflowRunner -- \\
          --project my-project --region us-central1 --temp_location gs://my-bucket/tmp \\
          --sdk_container_image gcr.io/my-project/curate-beam:latest
      DANBOORU=s3://my-dumps/danbooru2018 WORK=s3://my-work \\
          curate run danbooru2018-portraits --engine beam -- --s3_region_name eu-west-1
    """
    from curate.beam.engine import engine_for

    chosen = engine_for(engine, beam_runner, list(beam_options))
    p = load(resolve(pipeline), list(overrides))
    if dry_run:
        check_engine(p, None if chosen.name == "local" else chosen)
        for s in plan(p, start, stop):
            click.echo(f"{s['action']:4s} {s['stage']:7s} {s['why']:26s} curate {s['stage']} {' '.join(s['argv'])}")
        return
    run(p, start, stop, echo=click.echo, engine=None if chosen.name == "local" else chosen)
