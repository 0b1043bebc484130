"""`curate filter`: the thin command over curate.filter.runner (parse, validate once, run, summarise)."""

from __future__ import annotations


import click

from curate.core.engine import current_engine
from curate.core.location import LocationType

from curate.core.settings import default_of
from curate.filter.runner import FilterRules, stats_path, summary_line
from curate.filter.metadata import BLOCK_BYTES, parse_timestamp
from curate.filter.tagsets import DEFAULT_EXCLUDE


def _D(name: str):
    """A FilterRules default: written once, on the rules' field."""
    return default_of(FilterRules, name)


_RATING_WORDS = {"general": "g", "sensitive": "s", "safe": "s", "questionable": "q", "explicit": "e"}


def _csv(value: str | None) -> frozenset[str]:
    return frozenset(t.strip() for t in (value or "").split(",") if t.strip())


def _date(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date; use YYYY-MM-DD or an ISO timestamp") from None


def _ratings(ctx: click.Context, param: click.Parameter, value: str) -> frozenset[str]:
    out = set()
    for r in _csv(value):
        letter = _RATING_WORDS.get(r.lower(), r.lower())
        if letter not in "gsqe" or len(letter) != 1:
            raise click.BadParameter(f"{r!r} is not a rating; use g, s, q, e (or general, sensitive, questionable, explicit)")
        out.add(letter)
    if not out:
        raise click.BadParameter("give at least one rating, e.g. --ratings g,s")
    return frozenset(out)


@click.command("filter", context_settings={"max_content_width": 100})
@click.argument("metadata", nargs=-1, type=LocationType())
@click.option("--out", "-o", type=LocationType(dir_okay=False), metavar="FILTERED.parquet",
              help="Output table (required); FILTERED.stats.json is written beside it.")
@click.option("--dataset-root", type=LocationType(file_okay=False), metavar="DIR",
              help="Danbooru root holding original/; kept posts whose image is missing are counted and dropped.")
@click.option("--min-favs", type=click.IntRange(min=0), default=_D("min_favs"), show_default=True, metavar="N",
              help="Minimum favorites (len(favs) in 2017-2020 dumps, fav_count in newer ones).")
@click.option("--min-score", type=int, default=None, metavar="N", help="Minimum score (default: no floor).")
@click.option("--since", callback=_date, metavar="DATE", help="Keep posts created on or after DATE (UTC).")
@click.option("--until", callback=_date, metavar="DATE", help="Keep posts created before DATE (UTC).")
@click.option("--max-age-years", type=click.FloatRange(min=0, min_open=True), default=None, metavar="Y",
              help="Keep posts at most Y years older than --as-of (the seed recipe used 6).")
@click.option("--as-of", callback=_date, metavar="DATE",
              help="Anchor for --max-age-years  [default: the newest created_at in the input]")
@click.option("--require-tags", metavar="A,B", help="Keep posts carrying all of these tags.")
@click.option("--any-tags", metavar="A,B", help="Keep posts carrying at least one of these tags.")
@click.option("--exclude-tags", metavar="A,B",
              help="Drop posts carrying any of these, in addition to the default exclusions.")
@click.option("--no-default-excludes", is_flag=True,
              help="Do not apply the default exclusions (see --list-default-excludes).")
@click.option("--list-default-excludes", is_flag=True, help="Print the default exclusions and exit.")
@click.option("--ratings", default=",".join(sorted(_D("ratings"))), show_default=True, callback=_ratings, metavar="R,R",
              help="Ratings to keep: g general, s safe (old dumps) / sensitive (2022+), q, e.")
@click.option("--min-height", type=click.IntRange(min=1), default=_D("min_height"), show_default=True, metavar="PX",
              help="Minimum image height (the portrait crop is 512 high).")
@click.option("--min-width", type=click.IntRange(min=1), default=_D("min_width"), show_default=True, metavar="PX",
              help="Minimum image width (the portrait crop is 256 wide).")
@click.option("--exts", default=",".join(sorted(_D("exts"))), show_default=True, metavar="E,E", help="File types to keep (still images).")
@click.option("--keep-deleted", is_flag=True, help="Keep posts marked deleted (dropped by default).")
@click.option("--keep-banned", is_flag=True, help="Keep posts marked banned (dropped by default).")
@click.option("--one-per-family", is_flag=True,
              help="Keep one post of each Danbooru variant group (a parent and its children): the most "
                   "favourited, a tie to the lowest id; the others count as family_variant.")
@click.option("--workers", "-j", type=click.IntRange(min=1), default=None, metavar="N",
              help="Processes  [default: one per core]")
@click.option("--block-mb", type=click.FloatRange(min=0.01), default=BLOCK_BYTES / (1 << 20), show_default=True,
              metavar="MB", help="Metadata per unit of work: each worker holds one in memory, and a killed run's "
                                 "rerun redoes at most the blocks that were in flight.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show a progress bar.")
def filter_command(metadata, out, dataset_root, min_favs, min_score, since, until, max_age_years, as_of,
                   require_tags, any_tags, exclude_tags, no_default_excludes, list_default_excludes, ratings,
                   min_height, min_width, exts, keep_deleted, keep_banned, one_per_family, workers, block_mb, progress):
    """Select posts from Danbooru METADATA (files or folders) into a parquet table.

    Reads both metadata generations, mixed freely: the Danbooru2017-2020 export (numbers as
    strings, a favs list; plain, .json, .gz, .xz, .bz2 or metadata.json.tar.xz) and the 2021+/API
    form (typed values, fav_count, tag_string_*). A removed post is counted under the first rule it
    fails, in this order: deleted, banned, file_ext, rating, too_small, favs, score, since, until,
    require_tags, any_tags, exclude_tags, max_age, duplicate (an id seen before), missing_file,
    duplicate_file (the same picture as an earlier post: the same md5, else the same pixel_hash
    where the dump has one; the first in input order is kept), family_variant (--one-per-family).

    Bad lines are counted and located in the stats file, never fatal: malformed_json (not JSON,
    or not valid UTF-8), wrong_type, missing_field, bad_value (an id that is not a positive 64-bit
    integer, a size or count outside 32 bits, a created_at that is no date or lies outside
    2005-2099). Input problems are listed there too, and warned about: empty_file,
    truncated_or_corrupt (every line that still decompresses is read), and, for an entry of a
    metadata folder, broken_link, not_a_file or unreadable (the other files are read).

    A killed run resumes: run the same command again and the blocks it finished are read back
    from .FILTERED.parquet.staging/ instead of being decoded again; the output is the same, byte
    for byte. A rerun with the same inputs and rules writes nothing. One run at a time may write
    an output; the output may not be an input, nor lie inside an input folder or --dataset-root.

    \b
    Examples:
      curate filter /data/danbooru2018 --dataset-root /data/danbooru2018 -o work/filtered.parquet
      curate filter metadata.json.tar.xz --min-favs 10 --max-age-years 6 -o filtered.parquet
      curate filter posts.json --ratings g --require-tags solo --exclude-tags hat -o f.parquet
      curate filter /data/danbooru2018 --one-per-family -o work/filtered.parquet
    """
    if list_default_excludes:
        click.echo("\n".join(DEFAULT_EXCLUDE))
        return
    if not metadata:
        raise click.UsageError("give at least one metadata file or folder, e.g. curate filter /data/danbooru2018 -o f.parquet")
    if out is None:
        raise click.UsageError("give the output table with --out FILTERED.parquet")
    if dataset_root is not None and not dataset_root.is_dir():
        raise click.BadParameter(f"{dataset_root} is not a folder; give the Danbooru root that holds original/",
                                 param_hint="--dataset-root")
    excluded = _csv(exclude_tags) | (frozenset() if no_default_excludes else frozenset(DEFAULT_EXCLUDE))
    rules = FilterRules(
        min_favs=min_favs, min_score=min_score, since=since, until=until, max_age_years=max_age_years,
        as_of=as_of, require_tags=_csv(require_tags), any_tags=_csv(any_tags), exclude_tags=excluded,
        ratings=ratings, min_height=min_height, min_width=min_width,
        exts=frozenset(e.lower().lstrip(".") for e in _csv(exts)),
        drop_deleted=not keep_deleted, drop_banned=not keep_banned, one_per_family=one_per_family,
    )
    if since is not None and until is not None and since >= until:
        raise click.BadParameter("--since must be earlier than --until")
    stats = current_engine().filter(list(metadata), out, rules, dataset_root=dataset_root, workers=workers,
                       block_bytes=max(1, int(block_mb * (1 << 20))), progress=progress)
    problems = stats["input_problems"]
    for p in problems[:_WARNINGS]:
        click.echo(f"curate filter: warning: {p['file']}: {p['reason']} ({p['detail']})", err=True)
    if len(problems) > _WARNINGS:
        click.echo(f"curate filter: warning: {len(problems) - _WARNINGS} more input problems are listed in "
                   f"{stats_path(out)}", err=True)
    click.echo(summary_line(stats))


_WARNINGS = 10  # input problems shown on the terminal; the stats file lists them all
