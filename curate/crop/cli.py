"""`curate crop`: the thin command over curate.crop.runner (parse, validate once, run, summarise)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from curate.core.engine import current_engine
from curate.core.location import LocationType

from curate.core.settings import default_of
from curate.crop.cropper import CropConfig

_SIZE = re.compile(r"^(\d+)x(\d+)$")


def _D(name: str):
    """A CropConfig default: written once, on the config field."""
    return default_of(CropConfig, name)


def _size(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    m = _SIZE.match(value.strip().lower())
    if not m or int(m[1]) < 8 or int(m[2]) < 4:
        raise click.BadParameter(f"{value!r} is not HEIGHTxWIDTH, e.g. 512x256")
    height, width = int(m[1]), int(m[2])
    if height != 2 * width:
        raise click.BadParameter(f"{value!r}: portraits are 2:1 (height = 2 x width), e.g. 512x256 or 256x128")
    return height, width


@click.command("crop")
@click.argument("input_path", metavar="INPUT", type=LocationType(exists=True))
@click.option("--out", "-o", "out", required=True, type=LocationType(file_okay=False), metavar="WORKDIR",
              help="Workdir: crops/, crops.parquet and crops.stats.json go here.")
@click.option("--dataset-root", type=LocationType(file_okay=False), metavar="DIR",
              help="With a filtered table: the folder its 'path' column is relative to.")
@click.option("--cascade", default="animeface", show_default=True, metavar="animeface|frontalface|PATH",
              help="Detector: the anime-face LBP cascade, OpenCV's frontal-face Haar cascade (photos), or a cascade XML.")
@click.option("--scale-factor", type=click.FloatRange(min=1.01, max=2.0), default=_D("scale_factor"), show_default=True, metavar="F",
              help="Detector pyramid step.")
@click.option("--min-neighbors", type=click.IntRange(min=0), default=_D("min_neighbors"), show_default=True, metavar="N",
              help="Detections that must agree on a face.")
@click.option("--min-size", type=click.IntRange(min=8), default=_D("min_size"), show_default=True, metavar="PX",
              help="Smallest detector window, in detector pixels.")
@click.option("--min-face", type=click.IntRange(min=8), default=_D("min_face"), metavar="PX",
              help="Smallest face to look for, in source pixels; the detector image is reduced so that "
                   "--min-size matches it  [default: the smallest face that can give a crop, from --k, "
                   "--size and --max-upscale]")
@click.option("--k", "k", type=click.FloatRange(min=1.0, max=10.0), default=_D("k"), show_default=True, metavar="K",
              help="Crop width / face width (crop height is twice the width).")
@click.option("--min-k", type=click.FloatRange(min=1.0, max=10.0), default=_D("min_k"), show_default=True, metavar="K",
              help="K may shrink to this so a box near an edge fits the image.")
@click.option("--pad/--no-pad", default=_D("pad"), show_default=True,
              help="Pad (white) a box that does not fit even at --min-k instead of rejecting the face.")
@click.option("--size", default=f"{_D('out_height')}x{_D('out_width')}", show_default=True, callback=_size, metavar="HxW",
              help="Output size, height x width (2:1).")
@click.option("--max-upscale", type=click.FloatRange(min=0.1), default=_D("max_upscale"), show_default=True, metavar="X",
              help="Reject a face whose crop would be enlarged more than this (too_small).")
@click.option("--max-faces", type=click.IntRange(min=1), default=_D("max_faces"), show_default=True, metavar="N",
              help="Crops per image at most, most confident faces first.")
@click.option("--format", "fmt", type=click.Choice(["png", "jpg"]), default=_D("fmt"), show_default=True,
              help="Crop files: lossless PNG, or JPEG quality 95.")
@click.option("--max-pixels", type=click.IntRange(min=1), default=_D("max_pixels"), show_default=True, metavar="N",
              help="Refuse larger images as decompression bombs.")
@click.option("--overlays", type=click.Path(file_okay=False, path_type=Path), default=None, metavar="DIR",
              help="Also write sources with face and crop boxes drawn, and contact sheets, to DIR.")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None, metavar="N",
              help="Processes  [default: one per core]")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def crop_command(input_path, out, dataset_root, cascade, scale_factor, min_neighbors, min_size, min_face, k, min_k,
                 pad, size, max_upscale, max_faces, fmt, max_pixels, overlays, workers, progress):
    """Find faces in INPUT and cut a 2:1 portrait (512x256 by default) around each.

    INPUT is a filtered table from `curate filter` (with --dataset-root), a folder of images (searched
    below; symlinked folders and names starting with '.' are not entered) or one image file.
    Each crop's box is k face widths wide and twice as tall, the face centred in its upper half;
    see docs/crop-geometry.md. Unreadable images, images without a face and faces whose crop
    would not fit or would be upscaled too much are counted by reason in WORKDIR/crops.stats.json.
    In a folder, an entry named like an image that is no file is counted too, never opened:
    broken_link (a dangling symlink or a symlink loop), not_a_file (a folder, FIFO, socket or
    device); other entries are counted by kind in the stats' inputs.ignored_files (other_extension,
    hidden, folder_link, broken_link, not_a_file, unreadable_folder).

    A killed run resumes where it stopped; the same input gives the same output. One run at a time
    writes a WORKDIR (a second one stops with an error while the first lives). A full or read-only
    disk, or an I/O error, stops the run (exit 1) without blaming an image: free space and run the
    same command again to resume. WORKDIR and --overlays must lie outside the input folder and the
    dataset root.

    \b
    Examples:
      curate crop work/filtered.parquet --dataset-root /data/danbooru2018 --out work
      curate crop ~/pictures/anime --out work --overlays work/overlays --max-faces 1
      curate crop photos/ --cascade frontalface --k 2.5 --format jpg --out work-photos
      curate crop poster.png --out work-one
    """
    from curate.core.paths import refuse_output_among_inputs
    from curate.crop.cascades import CascadeError, load_cascade, resolve_cascade, sha256_of
    from curate.crop.runner import open_sources, summary_line

    if min_k > k:
        raise click.BadParameter(f"--min-k {min_k} is larger than --k {k}", param_hint="--min-k")
    if input_path.is_file() and dataset_root is not None and not dataset_root.is_dir():
        raise click.BadParameter(f"{dataset_root} is not a folder", param_hint="--dataset-root")
    # Crops written into what is read would be read back as input next time (a folder), or pollute
    # a dataset root; a filtered table inside the workdir is fine.
    roots = [dataset_root] if dataset_root is not None and not input_path.is_dir() else []
    for option, target in (("--out", out), ("--overlays", overlays)):
        if target is not None:
            refuse_output_among_inputs(target, inputs=[input_path], roots=roots, option=option)
    try:
        path = resolve_cascade(cascade)
        load_cascade(path)  # once, here: a file that is no cascade is a one-line error, not every image's
    except CascadeError as e:
        raise click.BadParameter(str(e), param_hint="--cascade") from None
    config = CropConfig(
        cascade=str(path), cascade_sha256=sha256_of(path), scale_factor=scale_factor, min_neighbors=min_neighbors,
        min_size=min_size, min_face=min_face, k=k, min_k=min_k, pad=pad, out_height=size[0], out_width=size[1],
        max_upscale=max_upscale, max_faces=max_faces, fmt=fmt, max_pixels=max_pixels,
    )
    sources, ignored = open_sources(input_path, dataset_root)
    inputs = {"input": str(input_path), "dataset_root": str(dataset_root) if dataset_root else None,
              "ignored_files": ignored}
    stats = current_engine().crop(sources, out, config, workers=workers, overlays=overlays, progress=progress, inputs=inputs)
    click.echo(summary_line(stats))
