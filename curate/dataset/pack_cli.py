"""`curate pack`: the thin command over curate.dataset.pack (parse, validate once, run, summarise)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from curate.core.engine import current_engine
from curate.core.location import LocationType

from curate.dataset import schema as R
from curate.core.settings import default_of
from curate.dataset.pack import LabelSpec, PackConfig, run_pack, summary_line

_D = PackConfig()  # every field has a default: each option's is read from it


def _size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", value.strip().lower())
    if not m or not (R.is_power_of_two(int(m[1])) and R.is_power_of_two(int(m[2]))):
        raise click.BadParameter(f"{value!r} is not HEIGHTxWIDTH in powers of two, e.g. 4x2 or 8x4")
    return int(m[1]), int(m[2])


def _optional_size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    return None if value is None else _size(ctx, param, value)


def _labels(ctx: click.Context, param: click.Parameter, value: str | None) -> LabelSpec | None:
    if value is None:
        return None
    try:
        return LabelSpec.parse(value.strip())
    except ValueError as e:
        raise click.BadParameter(str(e)) from None


@click.command("pack", context_settings={"max_content_width": 100})
@click.argument("workdir", type=LocationType(file_okay=False))
@click.option("--out", "-o", required=True, type=LocationType(file_okay=False), metavar="DATASET_DIR",
              help="Output folder: <NAME>-r<NN>.tfrecords per level, dataset.json, optional labels.")
@click.option("--name", default=_D.name, show_default=True, metavar="NAME", help="File name prefix.")
@click.option("--seed", type=int, default=_D.seed, show_default=True, metavar="N",
              help="Shuffle seed (NVlabs used 123); every level file has the same order.")
@click.option("--size", default=None, callback=_optional_size, metavar="HxW",
              help="The crop size, the top level; a crop of another size is skipped (wrong_size)  "
                   "[default: the size `curate crop` recorded in crops.stats.json, else the most common]")
@click.option("--min-size", default=None, callback=_optional_size, metavar="HxW",
              help="Smallest level; levels halve from the crop size down to this  "
                   "[default: 4 high: 4x2 for 2:1 crops, 4x4 for square images as NVlabs]")
@click.option("--resize", is_flag=True,
              help="Scale an image of the size's aspect but another size to it (e.g. 128x128 faces packed "
                   "--size 256x256); an image of another aspect is still skipped (wrong_size), never stretched.")
@click.option("--shard-size", type=click.IntRange(min=1), default=_D.shard_size, metavar="N",
              help="Split each level into files of N records: <NAME>-r<NN>-<i>-of-<n>.tfrecords  [default: one file]")
@click.option("--labels", callback=_labels, metavar="scores|tags:A,B",
              help="Also write <NAME>-rxx.labels (float32 [N, D]): 'scores' = person and rating probabilities "
                   "from scores.parquet; 'tags:1girl,smile' = 1/0 per tag (needs --posts).")
@click.option("--posts", type=click.Path(dir_okay=False, path_type=Path), metavar="FILTERED.parquet",
              help="The table `curate filter` wrote, for tag labels (joined on the crops' post_id).")
@click.option("--overwrite", is_flag=True, help="Replace a different dataset already in DATASET_DIR.")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=default_of(run_pack, "checkpoint_every"), show_default=True, metavar="N",
              help="Crops between resume points (a killed pack restarts from the last one).")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None, metavar="N",
              help="Processes decoding crops and building levels  [default: one per core]")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def pack_command(workdir, out, name, seed, size, min_size, resize, shard_size, labels, posts, overwrite, checkpoint_every,
                 workers, progress):
    """Pack the crops of WORKDIR that survived scoring and review (or a plain folder of same-size
    images) into multi-resolution TFRecords.

    Writes one file per level, from the crop size (512x256) down to --min-size, in the NVlabs
    StyleGAN layout (shape = int64 [C, H, W], data = raw uint8 CHW, no compression); each level is
    the 2x2 float32 box average of the one above, rounded as NVlabs does. The order is shuffled
    with --seed and is the same in every file. dataset.json records counts, sizes, the inputs'
    hashes and the sha256 of every file. A killed pack resumes from its last checkpoint; a rerun
    with the same inputs changes nothing. Check the result with `curate inspect DATASET_DIR`.

    A crop that cannot be packed is skipped, and dataset.json counts it under a reason: the image
    reader's codes (missing_file, unreadable, empty_file, not_an_image, truncated, corrupt, ...) or
    wrong_size (not the crop size, see --size). Only a full, read-only or failing output stops the
    stage (exit 1); run the same command again to resume.

    WORKDIR may instead be a plain folder of images (no crops.parquet), square or 2:1 or any
    power-of-two size: its image files, in name order, are packed at --size or their most common
    size, levels down to 4x4 for square images (NVlabs' layout), and an image of another size is
    skipped as wrong_size (or scaled with --resize when its aspect is the same).

    \b
    Examples:
      curate pack work --out datasets/portraits
      curate pack work --out datasets/portraits --shard-size 10000 --labels scores
      curate pack work --out ds --labels tags:1girl,blonde_hair,smile --posts work/filtered.parquet
      curate pack work --out ds-8x4 --min-size 8x4 --name faces
      curate pack ~/faces-128 --out datasets/faces                  # a folder of 128x128 images
      curate pack ~/faces-128 --out datasets/faces-256 --size 256x256 --resize
    """
    if not re.fullmatch(r"[A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*", name) or re.search(r"-r\d\d$", name):
        raise click.BadParameter(f"{name!r}: use letters, digits, '_', '.', '-'", param_hint="--name")
    if posts is not None and not posts.is_file():
        raise click.BadParameter(f"{posts} does not exist", param_hint="--posts")
    if posts is not None and (labels is None or labels.kind != "tags"):
        raise click.BadParameter("--posts is only used with --labels tags:...", param_hint="--posts")
    if not workdir.is_dir():
        raise click.BadParameter(f"{workdir} is not a folder; give the workdir `curate crop` wrote or a folder of images",
                                 param_hint="WORKDIR")
    if resize and size is None:
        raise click.BadParameter("--resize needs --size HxW (the size to scale to)", param_hint="--resize")
    config = PackConfig(name=name, seed=seed, size=size, min_size=min_size, resize=resize, shard_size=shard_size, labels=labels,
                        posts=str(posts.resolve()) if posts else None)
    stats = current_engine().pack(workdir, out, config, workers=workers, progress=progress, overwrite=overwrite,
                     checkpoint_every=checkpoint_every)
    click.echo(summary_line(stats, out))
