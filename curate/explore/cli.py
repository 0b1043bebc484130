"""`curate explore RUN`: the explorer's page on a loopback port (thin over curate.explore.app)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("explore", context_settings={"max_content_width": 100})
@click.argument("run", type=click.Path(file_okay=False, path_type=Path))
@click.option("--port", "-p", type=click.IntRange(0, 65535), default=8766, show_default=True, metavar="N",
              help="Port to listen on (0 = any free port).")
@click.option("--host", default="127.0.0.1", show_default=True, metavar="ADDR",
              help="Loopback address to listen on (127.0.0.1, ::1 or localhost); nothing else is allowed.")
def explore_command(run: Path, port: int, host: str) -> None:
    """Serve a page for playing with RUN's generator and print its URL.

    Generate images from seeds (truncation psi slider); interpolate between two in W (lerp) or Z
    (slerp) to a strip and a GIF; mark images with and without an attribute to make a direction
    and move any image along it with a slider; see every channel's feature map at a resolution;
    add to chosen channels inside a region during synthesis (a local edit), apply it to any image,
    find the channels active in a region, animate it to a GIF. Directions and edits are saved in
    RUN/explore/ and can be exported and imported. Every image's PNG carries its latent: drop it
    on the page (or give it to `curate generate --from`) to bring it back. Press ? on the page
    for the keys. Only loopback: the page can write into RUN.

    \b
    Examples:
      curate explore runs/00003-stylegan-512x256
      curate explore runs/00003-stylegan-512x256 --port 0     # any free port
    """
    from curate.core.web import allowed_hosts, bind_socket, is_loopback, page_url, serve

    if not is_loopback(host):
        raise click.BadParameter(f"{host!r} is not a loopback address; the explorer listens on 127.0.0.1, ::1 "
                                 "or localhost only", param_hint="--host")
    if not run.is_dir():
        raise click.BadParameter(f"{run} is not a folder; give a run folder `curate train` wrote", param_hint="RUN")
    from curate.explore import Explorer
    from curate.explore.app import create_app

    explorer = Explorer(run)  # first: a run that cannot be opened fails before the port is taken
    sock = bind_socket(host, port)
    app = create_app(explorer, allowed_hosts=allowed_hosts(host))
    levels = explorer.levels()
    click.echo(f"explore: {run} at {explorer.height}x{explorer.width} (kimg {explorer.kimg:.1f}; feature maps "
               f"and edits at {levels[0]['height']}x{levels[0]['width']} to {levels[-1]['height']}x{levels[-1]['width']})")
    click.echo(f"explore: open {page_url(host, sock)}   (Ctrl+C to stop)")
    sys.stdout.flush()
    serve(app, sock)
