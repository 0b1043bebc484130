"""`curate train` and `curate generate`: thin commands over curate.train.run (parse, validate once, run, summarise)."""

from __future__ import annotations

from pathlib import Path

import click

from curate.core.settings import SettingError
from curate.train.stylegan.config import CONFIGS, parse_set, replace


@click.command("train", context_settings={"max_content_width": 100})
@click.argument("dataset_dir", required=False, type=click.Path(path_type=Path))
@click.option("--config", "config_name", type=click.Choice(sorted(CONFIGS)), default="smoke", show_default=True,
              help="Named configuration: 'smoke' (CPU, tiny, minutes) or a full-size GPU one.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a setting (repeatable), e.g. --set total_kimg=12000 --set 'minibatch={\"256\": 16}'.")
@click.option("--runs-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"), show_default=True,
              metavar="DIR", help="Where numbered run folders are created.")
@click.option("--resume", type=click.Path(file_okay=False, path_type=Path), metavar="RUN",
              help="Continue a run folder from its latest checkpoint (only run-length and metric settings may change).")
@click.option("--backend", type=click.Choice(["tensorflow", "jax", "torch"]), default=None,
              help="Where the networks train: tensorflow (the trainer), or jax (Keras 3's portable networks; "
                   "float32, one device)  [default: $KERAS_BACKEND, else tensorflow]")
@click.option("--show-config", is_flag=True, help="Print the resolved configuration as JSON and exit.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def train_command(dataset_dir, config_name, sets, runs_dir, resume, backend, show_config, progress):
    """Train a progressive StyleGAN on the multi-resolution records in DATASET_DIR.

    Grows from 4x4 (square records) or 8x4 (2:1) to the records' full size (or the config's
    end_height): each level is faded in, then trained stable. DATASET_DIR is what `curate pack`
    wrote or a square dataset from NVlabs' dataset_tool (<name>-rNN.tfrecords, no dataset.json). Every run gets a new numbered folder under --runs-dir with
    config.json, stats.jsonl, log.txt, TensorBoard events, a sample grid per tick
    (fakes<tick>.png) and checkpoints; --resume continues one exactly where it stopped.
    --show-config lists every setting; --set precision=mixed_float16 (or mixed_bfloat16) trains
    both networks in 16 bits with float32 weights; --set replicas=auto (or N) splits each
    minibatch over the machine's GPUs, or across machines with TF_CONFIG. --backend jax trains
    the same networks written in Keras 3 on JAX (no TensorFlow needed; docs/training.md).

    \b
    Examples:
      curate train datasets/portraits                         # the smoke config, minutes on a CPU
      curate train datasets/portraits --config stylegan-512x256
      curate train datasets/portraits --config stylegan-512x256 --set total_kimg=12000 --set mirror_augment=false
      curate train datasets/portraits --config stylegan-512x256 --set precision=mixed_float16   # 16-bit on a GPU
      curate train datasets/portraits --config stylegan-512x256 --set replicas=auto   # every GPU (docs/training.md)
      curate train datasets/portraits --backend jax           # Keras 3 on JAX (a GPU machine without TensorFlow)
      curate train --resume runs/00003-stylegan-512x256
      tensorboard --logdir runs
    """
    import json
    import os

    from curate.train.runfolder import choose_backend

    backend = choose_backend(backend)
    os.environ["KERAS_BACKEND"] = backend  # before anything imports keras: Keras reads it once
    from curate.train.run import resume_config, run_training, summary_line

    try:  # a bad --set names the option (other errors reach curate.cli.main, which prints one line)
        changes = parse_set(list(sets))
        if resume is not None:
            config = resume_config(resume, changes)
        else:
            if dataset_dir is None:
                raise click.UsageError("give DATASET_DIR (the folder `curate pack` wrote), or --resume RUN")
            config = replace(CONFIGS[config_name], **changes)
    except SettingError as e:
        raise click.BadParameter(str(e), param_hint="--set") from None
    if show_config:
        click.echo(json.dumps(config.to_json(), indent=2))
        return
    summary = run_training(config, dataset_dir, runs_dir=runs_dir, resume=resume, echo=click.echo,
                           progress=progress, backend=backend)
    click.echo(summary_line(summary))


def _seeds(ctx: click.Context, param: click.Parameter, value: str) -> list[int]:
    from curate.explore.latent import ExploreError, parse_seeds  # NumPy and Pillow only: no TensorFlow

    try:
        return parse_seeds(value)
    except ExploreError as e:
        raise click.BadParameter(str(e)) from None


@click.command("generate", context_settings={"max_content_width": 100})
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seeds", default="0-7", show_default=True, callback=_seeds, metavar="LIST",
              help="Latent seeds: numbers and ranges, e.g. 1,5,10-12.")
@click.option("--truncation", "psi", type=click.FloatRange(0, 2), default=None, metavar="PSI",
              help="Truncation psi (1 = none)  [default: the run's, 0.7]")
@click.option("--cutoff", type=click.IntRange(min=0), default=None, metavar="N",
              help="Truncate only the first N style layers  [default: the run's, 8]")
@click.option("--steps", type=click.IntRange(min=1), default=8, show_default=True, metavar="N",
              help="Interpolation frames between consecutive seeds.")
@click.option("--from", "from_pngs", multiple=True, metavar="PNG",
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A PNG written by curate generate or curate explore: its image again (latent and edits). Repeatable.")
@click.option("--out", "-o", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Output folder  [default: RUN/generated]")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def generate_command(run, seeds, psi, cutoff, steps, from_pngs, out, progress):
    """Write images from RUN's latest checkpoint (the averaged generator Gs) and an interpolation strip.

    One PNG per seed (seed<NNNN>.png) at the resolution the run has reached, truncated towards
    the average w (psi 0.7 on the first 8 layers by default), and interpolation.png: a strip
    moving through the seeds in w space with the noise held fixed. Every PNG carries its latent
    (w, z, seed, psi) in a text chunk: `--from` one of them (or one saved by `curate explore`)
    draws it again, edits included. With --from and no --seeds, only those images are drawn.

    \b
    Examples:
      curate generate runs/00000-smoke
      curate generate runs/00003-stylegan-512x256 --seeds 1-16 --truncation 0.5 -o samples
      curate generate runs/00003-stylegan-512x256 --seeds 4,8,15 --steps 30 --truncation 1
      curate generate runs/00003-stylegan-512x256 --from liked.png --from other.png --steps 16
    """
    from curate.train.generate import generate_images

    if from_pngs and click.get_current_context().get_parameter_source("seeds").name == "DEFAULT":
        seeds = []
    res = generate_images(run, seeds, out or Path(run) / "generated", psi=psi, cutoff=cutoff, steps=steps,
                          from_pngs=from_pngs, progress=progress)
    strip = f" + {res['strip']}" if res["strip"] else ""
    click.echo(f"generate: {len(res['files'])} images at level {res['level']} (alpha {res['alpha']:.2f}, "
               f"kimg {res['kimg']:.3f}, psi {res['psi']}) -> {out or Path(run) / 'generated'}{strip}")
