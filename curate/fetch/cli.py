"""`curate fetch`: the thin command over curate.fetch.client."""

from __future__ import annotations

from pathlib import Path

import click

from curate.core.settings import default_of
from curate.fetch.client import Client, FetchPlan, fetch, summary_line

_D = FetchPlan()


@click.command("fetch", context_settings={"max_content_width": 100})
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("--tags", default=_D.tags, show_default=True, metavar="TAGS",
              help="Danbooru search tags (anonymous searches allow two tags, the rating counting as one).")
@click.option("--rating", type=click.Choice(["g", "s", "q", "e", "any"]), default=_D.rating or "any", show_default=True,
              help="Rating to search for; 'any' adds no rating to the search.")
@click.option("--limit", type=click.IntRange(min=1), default=_D.limit, show_default=True, metavar="N",
              help="How many posts to fetch (newest first).")
@click.option("--per-page", type=click.IntRange(1, 200), default=_D.per_page, show_default=True, metavar="N")
@click.option("--rate", type=click.FloatRange(min=0.1), default=default_of(Client, "rate"), show_default=True, metavar="REQ/S",
              help="At most this many requests a second.")
@click.option("--base-url", default=_D.base_url, show_default=True, metavar="URL",
              help="The Danbooru site (or a mirror) to ask.")
@click.option("--progress/--no-progress", default=True, show_default=True)
def fetch_command(root, tags, rating, limit, per_page, rate, base_url, progress):
    """Fetch a sample of posts from the Danbooru API into ROOT, in the dump layout.

    Writes ROOT/metadata/posts-*.json (the API's JSON, one post a line) and
    ROOT/original/<id % 1000>/<id>.<ext>, each file checked against its md5, so that
    `curate filter ROOT --dataset-root ROOT` reads it like a local dump. Interrupted? Run the
    same command again: it continues where it stopped, and does nothing once complete.

    \b
    Examples:
      curate fetch data/api-sample
      curate fetch data/miku --tags hatsune_miku --rating g --limit 1000
    """
    plan = FetchPlan(tags=tags, rating=None if rating == "any" else rating, limit=limit, per_page=per_page,
                     base_url=base_url)
    stats = fetch(root, plan, Client(rate=rate), progress=progress)
    click.echo(summary_line(stats))
