"""`curate models`: install and list pretrained weights (thin commands over curate.score.models)."""

from __future__ import annotations

from pathlib import Path

import click

from curate.score import models as m
from curate.cli import StageGroup
from curate.score.models import ASSETS, MODEL, download_assets, install_illustration2vec, list_models

_DIR_OPTION = click.option("--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                           metavar="DIR", help="Models folder  [default: $CURATE_MODELS or ~/.cache/curate/models]")


@click.group("models", cls=StageGroup, context_settings={"max_content_width": 100})
def models_group():
    """Install and list the pretrained models curate uses (illustration2vec for `curate score`).

    \b
    Examples:
      curate models install illustration2vec
      curate models install illustration2vec --from ~/Downloads/illustration2vec
      curate models list
    """


@models_group.command("install")
@click.argument("name", type=click.Choice([MODEL]))
@click.option("--from", "source", type=click.Path(path_type=Path), default=None, metavar="FILE_OR_DIR",
              help="Install from files you have: illust2vec_tag_ver200.caffemodel (or the .onnx conversion) "
                   "with tag_list.json[.gz] beside it, or the folder holding them. No network is used.")
@click.option("--variant", type=click.Choice(sorted(ASSETS)), default="caffe", show_default=True,
              help="What to download without --from: the official Caffe release, or the ONNX conversion.")
@click.option("--mirror", metavar="URL", default=None,
              help="Download the same file names from this URL prefix instead of GitHub releases.")
@_DIR_OPTION
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
def install_command(name, source, variant, mirror, models_dir, progress):
    """Download (resumably, verified) or import NAME's weights, convert them once, record their sha256.

    \b
    Examples:
      curate models install illustration2vec                    # official release, ~180 MB
      curate models install illustration2vec --variant onnx     # the ONNX conversion
      curate models install illustration2vec --from illust2vec_tag_ver200.caffemodel
    """
    root = m.models_dir(models_dir)
    if source is None:
        source = download_assets(variant, root / "downloads" / variant, mirror=mirror, progress=progress)
    manifest = install_illustration2vec(source, root, progress=progress)
    src = manifest["source"]
    click.echo(f"models: installed {name} from {src['kind']} {src['weights']} "
               f"({manifest['parameters']:,} parameters, width 1/{manifest['width_divisor']}) "
               f"-> {root / name} sha256 {manifest['weights_sha256'][:16]}...")


@models_group.command("list")
@_DIR_OPTION
def list_command(models_dir):
    """Show which models are installed, where, and their checksums.

    \b
    Examples:
      curate models list
      CURATE_MODELS=/data/models curate models list
    """
    root = m.models_dir(models_dir)
    for entry in list_models(root):
        if entry["installed"]:
            man = entry["manifest"]
            click.echo(f"{entry['name']}: installed in {entry['folder']} ({man['source']['kind']}, "
                       f"width 1/{man['width_divisor']}, sha256 {man['weights_sha256']}, {man['installed_at']})")
        else:
            click.echo(f"{entry['name']}: not installed (curate models install {entry['name']}) [folder {root}]")
